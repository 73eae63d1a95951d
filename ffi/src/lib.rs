//! # libhydrant: the C ABI of hydrant
//!
//! `extern "C"` functions over the `hydrant` crate, declared for C and C++ in `include/hydrant.h`
//! (generated from this crate by cbindgen; `tests/header.rs` fails when the committed header is
//! stale). Opaque handles, status codes with a thread-local message, a free for every create.
//!
//! Every entry point runs its body in [`error::guard`] or [`error::guard_value`], so no Rust
//! panic unwinds into C; `tests/guarded.rs` checks that no entry point skips them. The only state
//! besides handles is each thread's last error message.
//!
//! Pointer contract, stated once here and in the header's preamble: every pointer argument is
//! NULL or valid for what the function's documentation says it reads or writes. NULL is always
//! detected and reported; a dangling pointer cannot be.

#![allow(non_camel_case_types)]
// The safety contract of every entry point is its C documentation (see the pointer contract above).
#![allow(clippy::missing_safety_doc)]

// The modules with entry points come in the order of the header's sections: cbindgen emits
// functions in the order it reads them (tests/header.rs). Comments keep rustfmt from sorting them.
mod abi;
mod ptr;
pub mod version;
// Then:
pub mod error;
// Then:
pub mod tensor;
// Then:
pub mod model;
// Then:
pub mod inference;
// Then:
pub mod features;
// Then:
pub mod heads;
// Then:
pub mod train_params;
// Then:
pub mod trainer;

#[cfg(test)]
mod null_args;
#[cfg(test)]
mod train_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use error::hydrant_last_error;
    use std::ffi::CStr;

    fn last_error() -> String {
        // SAFETY: never NULL, valid until the next call.
        unsafe { CStr::from_ptr(hydrant_last_error()) }.to_string_lossy().into_owned()
    }

    #[test]
    fn a_panic_inside_an_entry_point_becomes_a_status() {
        let (data, shape) = ([1f32, 2.0], [2i64]);
        let mut t = std::ptr::null_mut();
        error::PANIC_IN_NEXT_CALL.with(|p| p.set(true));
        // SAFETY: valid pointers for a 2-element f32 tensor.
        let status =
            unsafe { tensor::hydrant_tensor_new_f32(data.as_ptr(), shape.as_ptr(), 1, &mut t) };
        assert_eq!(status, error::hydrant_status::HYDRANT_ERR_PANIC);
        assert!(last_error().contains("panic forced by a test"), "{}", last_error());
        assert!(t.is_null());

        error::PANIC_IN_NEXT_CALL.with(|p| p.set(true));
        // SAFETY: NULL is accepted.
        assert_eq!(unsafe { model::hydrant_model_head_count(std::ptr::null()) }, 0);
        assert!(last_error().contains("panic forced by a test"), "{}", last_error());

        // The library stays usable on this thread.
        // SAFETY: as above.
        let status =
            unsafe { tensor::hydrant_tensor_new_f32(data.as_ptr(), shape.as_ptr(), 1, &mut t) };
        assert_eq!(status, error::hydrant_status::HYDRANT_OK);
        assert_eq!(last_error(), "");
        // SAFETY: a live tensor, freed once.
        unsafe {
            assert_eq!(tensor::hydrant_tensor_element_count(t), 2);
            tensor::hydrant_tensor_free(t);
        }
    }
}
