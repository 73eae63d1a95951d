//! Status codes, the thread-local error message, and the guard every entry point runs in.
//!
//! Every `extern "C"` function of this crate is one call to [`guard`] (calls that return a status)
//! or [`guard_value`] (accessors that return a value): the body runs inside `catch_unwind`, so a
//! Rust panic becomes `HYDRANT_ERR_PANIC` and a message instead of unwinding into C.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Outcome of a call: `HYDRANT_OK`, or the kind of error, whose message `hydrant_last_error()`
/// then returns. Codes 1 to 99 are the runtime's error kinds; 100 and up are the C interface's own.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum hydrant_status {
    /// Success.
    HYDRANT_OK = 0,
    /// A file could not be opened, read or written.
    HYDRANT_ERR_IO = 1,
    /// A model file is not a well-formed model.
    HYDRANT_ERR_INVALID_MODEL = 2,
    /// The model uses an operator hydrant cannot run (the message names the node).
    HYDRANT_ERR_UNSUPPORTED_OP = 3,
    /// A head name the model does not have (the message lists those it has).
    HYDRANT_ERR_UNKNOWN_HEAD = 4,
    /// A tensor name the model graph does not have, such as a cut point.
    HYDRANT_ERR_UNKNOWN_TENSOR = 5,
    /// An input is missing, unknown, or has the wrong shape or element type.
    HYDRANT_ERR_BAD_INPUT = 6,
    /// A tensor's shape, element type or data is not acceptable.
    HYDRANT_ERR_BAD_TENSOR = 7,
    /// A `.npy` file is malformed or unsupported.
    HYDRANT_ERR_NPY = 8,
    /// Features lack a tensor that a requested head reads.
    HYDRANT_ERR_MISSING_FEATURE = 9,
    /// A value outside what a parameter accepts.
    HYDRANT_ERR_INVALID_ARGUMENT = 10,
    /// The inference engine failed while preparing or running part of the model.
    HYDRANT_ERR_BACKEND = 11,
    /// A head cannot be trained (the message names the op or structure that prevents it).
    HYDRANT_ERR_NOT_TRAINABLE = 12,
    /// A required pointer argument was NULL.
    HYDRANT_ERR_NULL_ARGUMENT = 100,
    /// An output array is too small; the call wrote the capacity it needs and nothing else.
    HYDRANT_ERR_CAPACITY = 101,
    /// An internal error (a Rust panic) was caught at the boundary; the library stays usable.
    HYDRANT_ERR_PANIC = 102,
}

use hydrant_status::*;

/// The status for a runtime error. Exhaustive on purpose: a new `hydrant::Error` variant does not
/// compile until it has its code here (and the test below checks the numbers agree).
pub(crate) fn status_of(e: &hydrant::Error) -> hydrant_status {
    use hydrant::Error as E;
    match e {
        E::Io { .. } => HYDRANT_ERR_IO,
        E::InvalidModel(_) => HYDRANT_ERR_INVALID_MODEL,
        E::UnsupportedOp { .. } => HYDRANT_ERR_UNSUPPORTED_OP,
        E::UnknownHead { .. } => HYDRANT_ERR_UNKNOWN_HEAD,
        E::UnknownTensor(_) => HYDRANT_ERR_UNKNOWN_TENSOR,
        E::BadInput { .. } => HYDRANT_ERR_BAD_INPUT,
        E::BadTensor(_) => HYDRANT_ERR_BAD_TENSOR,
        E::Npy { .. } => HYDRANT_ERR_NPY,
        E::MissingFeature(_) => HYDRANT_ERR_MISSING_FEATURE,
        E::InvalidArgument(_) => HYDRANT_ERR_INVALID_ARGUMENT,
        E::Backend { .. } => HYDRANT_ERR_BACKEND,
        E::NotTrainable { .. } => HYDRANT_ERR_NOT_TRAINABLE,
    }
}

/// A failed call: its status and message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: hydrant_status,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(status: hydrant_status, message: impl Into<String>) -> Failure {
        Failure { status, message: message.into() }
    }

    /// A NULL pointer where `what` was required.
    pub(crate) fn null(what: &str) -> Failure {
        Failure::new(HYDRANT_ERR_NULL_ARGUMENT, format!("{what} is NULL"))
    }

    /// A value outside what a parameter accepts.
    pub(crate) fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(HYDRANT_ERR_INVALID_ARGUMENT, message)
    }
}

impl From<hydrant::Error> for Failure {
    fn from(e: hydrant::Error) -> Failure {
        Failure::new(status_of(&e), e.to_string())
    }
}

/// Result of an entry point's body.
pub(crate) type FfiResult<T = ()> = Result<T, Failure>;

thread_local! {
    /// The message of this thread's last failed call, `None` after a successful one.
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

fn set_last_error(message: Option<String>) {
    let message = message.map(|m| {
        // A NUL inside the message would cut it short in C; show it instead.
        CString::new(m.replace('\0', "\\0")).unwrap_or_default()
    });
    LAST_ERROR.with(|e| *e.borrow_mut() = message);
}

/// The message of this thread's last failure, or "" (pointer valid until the next call).
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ref().map_or(c"".as_ptr(), |m| m.as_ptr()))
}

#[cfg(test)]
thread_local! {
    /// Test builds only: makes the next guarded call panic inside its body.
    pub(crate) static PANIC_IN_NEXT_CALL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs an entry point's body (in test builds, first panicking when a test asked for it).
fn run<T>(body: impl FnOnce() -> FfiResult<T>) -> FfiResult<T> {
    #[cfg(test)]
    if PANIC_IN_NEXT_CALL.with(|p| p.replace(false)) {
        panic!("panic forced by a test");
    }
    body()
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_string());
    format!("internal error (caught at the C boundary; please report it): {what}")
}

/// Runs the body of a status-returning entry point: success clears this thread's error message,
/// a failure or a panic sets it and returns its status.
pub(crate) fn guard(body: impl FnOnce() -> FfiResult) -> hydrant_status {
    match catch_unwind(AssertUnwindSafe(|| run(body))) {
        Ok(Ok(())) => {
            set_last_error(None);
            HYDRANT_OK
        }
        Ok(Err(failure)) => {
            set_last_error(Some(failure.message));
            failure.status
        }
        Err(payload) => {
            set_last_error(Some(panic_message(payload.as_ref())));
            HYDRANT_ERR_PANIC
        }
    }
}

/// Runs the body of an accessor: its value on success (leaving the error message alone), or
/// `fallback` after setting the message on a failure or a panic.
pub(crate) fn guard_value<T>(fallback: T, body: impl FnOnce() -> FfiResult<T>) -> T {
    match catch_unwind(AssertUnwindSafe(|| run(body))) {
        Ok(Ok(value)) => value,
        Ok(Err(failure)) => {
            set_last_error(Some(failure.message));
            fallback
        }
        Err(payload) => {
            set_last_error(Some(panic_message(payload.as_ref())));
            fallback
        }
    }
}

/// The message of the last failed call on this thread, or "" when the last call that returns a
/// hydrant_status succeeded. Never NULL. Calls returning a hydrant_status set it (to "" on
/// success); accessors returning a value set it only when they return their failure value (NULL,
/// 0 or HYDRANT_DTYPE_UNDEFINED). The string belongs to the library and stays valid until the
/// next call into the library on this thread; copy it to keep it.
#[no_mangle]
pub extern "C" fn hydrant_last_error() -> *const c_char {
    guard_value(c"".as_ptr(), || Ok(last_error_ptr()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last_error() -> String {
        // SAFETY: last_error_ptr returns a NUL-terminated string valid until the next call.
        unsafe { CStr::from_ptr(last_error_ptr()) }.to_string_lossy().into_owned()
    }

    #[test]
    fn status_codes_are_the_runtime_codes() {
        use hydrant::Error as E;
        let errors = [
            E::Io { path: "p".into(), source: std::io::Error::other("x") },
            E::InvalidModel("m".into()),
            E::UnsupportedOp { node: "n".into(), op_type: "Op".into() },
            E::UnknownHead { name: "h".into(), available: "a".into() },
            E::UnknownTensor("t".into()),
            E::BadInput { name: "i".into(), reason: "r".into() },
            E::BadTensor("b".into()),
            E::Npy { path: "p".into(), reason: "r".into() },
            E::MissingFeature("f".into()),
            E::InvalidArgument("a".into()),
            E::Backend { segment: "s".into(), message: "m".into() },
        ];
        for e in &errors {
            let status = status_of(e);
            assert_eq!(status as i32, e.code(), "{e}");
            assert!((1..100).contains(&(status as i32)), "{status:?}");
        }
    }

    #[test]
    fn failure_sets_and_success_clears_the_message() {
        let status = guard(|| Err(Failure::null("model")));
        assert_eq!(status, HYDRANT_ERR_NULL_ARGUMENT);
        assert_eq!(last_error(), "model is NULL");
        assert_eq!(guard_value(7, || Ok(3)), 3);
        assert_eq!(last_error(), "model is NULL", "accessors leave the message alone");
        assert_eq!(guard(|| Ok(())), HYDRANT_OK);
        assert_eq!(last_error(), "");
    }

    #[test]
    fn panics_become_a_status() {
        assert_eq!(guard(|| panic!("boom {}", 1)), HYDRANT_ERR_PANIC);
        assert!(last_error().contains("boom 1"), "{}", last_error());
        assert_eq!(guard_value(5, || panic!("static boom")), 5);
        assert!(last_error().contains("static boom"), "{}", last_error());
    }

    #[test]
    fn messages_with_nul_survive() {
        guard(|| Err(Failure::invalid("a\0b")));
        assert_eq!(last_error(), "a\\0b");
    }

    #[test]
    fn messages_are_per_thread() {
        guard(|| Err(Failure::invalid("main thread")));
        std::thread::spawn(|| assert_eq!(last_error(), "")).join().unwrap();
        assert_eq!(last_error(), "main thread");
    }
}
