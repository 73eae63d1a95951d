//! Version of the library and of its C ABI.

pub use crate::abi::HYDRANT_ABI_VERSION;
use crate::error::guard_value;
use std::ffi::c_char;

/// Major version of the library this header comes from.
pub const HYDRANT_VERSION_MAJOR: u32 = 0;
/// Minor version of the library this header comes from.
pub const HYDRANT_VERSION_MINOR: u32 = 1;
/// Patch version of the library this header comes from.
pub const HYDRANT_VERSION_PATCH: u32 = 0;

/// The library's version, such as "0.1.0": a static string, never NULL.
#[no_mangle]
pub extern "C" fn hydrant_version() -> *const c_char {
    guard_value(c"".as_ptr(), || Ok(concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()))
}

/// The C ABI version the library implements; equal to HYDRANT_ABI_VERSION when the header and
/// the library match.
#[no_mangle]
pub extern "C" fn hydrant_abi_version() -> u32 {
    guard_value(HYDRANT_ABI_VERSION, || Ok(HYDRANT_ABI_VERSION))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn version_macros_match_the_package() {
        let v = format!("{HYDRANT_VERSION_MAJOR}.{HYDRANT_VERSION_MINOR}.{HYDRANT_VERSION_PATCH}");
        assert_eq!(v, env!("CARGO_PKG_VERSION"));
        // SAFETY: a static NUL-terminated string.
        let s = unsafe { CStr::from_ptr(hydrant_version()) };
        assert_eq!(s.to_str().unwrap(), v);
        assert_eq!(hydrant_abi_version(), HYDRANT_ABI_VERSION);
    }
}
