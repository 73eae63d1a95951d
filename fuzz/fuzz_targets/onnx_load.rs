//! ONNX loading and the trunk/head split on arbitrary bytes, under a 16 MiB tensor budget.
#![no_main]

use hydrant::{LoadOptions, Model};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let options = LoadOptions::new().threads(1).max_bytes(16 << 20);
    if let Ok(model) = Model::from_bytes(data, options) {
        assert!(!model.head_names().is_empty());
        let _ = model.split().trunk_nodes();
    }
});
