//! The `.npy` reader on arbitrary bytes: an error or a tensor whose data matches its shape.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = hydrant::npy::read_npy_bytes(data) {
        assert_eq!(t.len(), t.shape().iter().product::<usize>());
    }
});
