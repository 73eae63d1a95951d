//! Head files (safetensors) on arbitrary bytes: an error, or heads that survive a round trip
//! through their own bytes and, for a whole model, build under a 16 MiB tensor budget.
#![no_main]

use hydrant::{HeadSet, LoadOptions, Model};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(set) = HeadSet::from_bytes(data) else { return };
    let again = HeadSet::from_bytes(&set.to_bytes().expect("loaded heads serialise"))
        .expect("serialised heads load");
    // Heads and trunk hold only finite values, so they compare exactly.
    assert_eq!(again.heads, set.heads);
    assert_eq!(again.trunk, set.trunk);
    assert_eq!(again.extra_metadata, set.extra_metadata);
    let shapes = |s: &HeadSet| -> Vec<(String, Vec<usize>)> {
        s.extra_tensors.iter().map(|(n, t)| (n.clone(), t.shape().to_vec())).collect()
    };
    assert_eq!(shapes(&again), shapes(&set));
    if set.trunk.is_some() {
        let options = LoadOptions::new().threads(1).max_bytes(16 << 20);
        if let Ok(model) = Model::from_head_set(&set, options) {
            assert!(!model.head_names().is_empty());
        }
    }
});
