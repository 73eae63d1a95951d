//! Checked conversions of the raw pointers C passes in: NULL and bad UTF-8 become [`Failure`]s.

use crate::error::{Failure, FfiResult};
use std::ffi::{c_char, CStr, CString};

/// A borrowed `&T` from a pointer that must not be NULL.
///
/// # Safety
/// `p` is NULL or points to a live `T` for the lifetime `'a`.
pub(crate) unsafe fn borrow<'a, T>(p: *const T, what: &str) -> FfiResult<&'a T> {
    // SAFETY: the caller guarantees `p` is NULL or valid.
    unsafe { p.as_ref() }.ok_or_else(|| Failure::null(what))
}

/// A UTF-8 string from a NUL-terminated C string that must not be NULL.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that lives for `'a`.
pub(crate) unsafe fn string<'a>(p: *const c_char, what: &str) -> FfiResult<&'a str> {
    if p.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|_| Failure::invalid(format!("{what} is not valid UTF-8")))
}

/// `n` elements at `p`; `p` may be NULL only when `n` is 0.
///
/// # Safety
/// When non-NULL, `p` points to `n` initialised, aligned `T`s that live for `'a`.
pub(crate) unsafe fn slice<'a, T>(p: *const T, n: usize, what: &str) -> FfiResult<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: non-NULL, `n` elements by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// `n` C strings at `p` (NULL allowed when `n` is 0), each checked like [`string`].
///
/// # Safety
/// As [`slice`] for the array, and as [`string`] for each element.
pub(crate) unsafe fn strings<'a>(
    p: *const *const c_char,
    n: usize,
    what: &str,
) -> FfiResult<Vec<&'a str>> {
    // SAFETY: forwarded caller contract.
    let ptrs = unsafe { slice(p, n, what)? };
    ptrs.iter()
        .enumerate()
        // SAFETY: each element is NULL or a valid C string by the caller's contract.
        .map(|(i, &s)| unsafe { string(s, &format!("{what}[{i}]")) })
        .collect()
}

/// `n` handles at `p` (NULL allowed when `n` is 0), none of them NULL.
///
/// # Safety
/// As [`slice`] for the array, and each element NULL or a live `T` for `'a`.
pub(crate) unsafe fn handles<'a, T>(
    p: *const *const T,
    n: usize,
    what: &str,
) -> FfiResult<Vec<&'a T>> {
    // SAFETY: forwarded caller contract.
    let ptrs = unsafe { slice(p, n, what)? };
    ptrs.iter()
        .enumerate()
        // SAFETY: each element is NULL or valid by the caller's contract.
        .map(|(i, &h)| unsafe { borrow(h, &format!("{what}[{i}]")) })
        .collect()
}

/// Writes `value` through an out-pointer that must not be NULL.
///
/// # Safety
/// `p` is NULL or valid for a write of `T`.
pub(crate) unsafe fn write<T>(p: *mut T, value: T, what: &str) -> FfiResult {
    if p.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: non-NULL and writable by the caller's contract.
    unsafe { p.write(value) };
    Ok(())
}

/// A C string for a name held by a handle (names never contain NUL; one that did is cut there).
pub(crate) fn c_name(name: &str) -> CString {
    CString::new(name.split('\0').next().unwrap_or_default()).unwrap_or_default()
}
