//! ONNX loading and the trunk/head split on arbitrary bytes, under a 16 MiB tensor budget; a
//! model that loads is then run once on small zero inputs (planning included), where a crafted
//! size would make the engine allocate.
#![no_main]

use hydrant::{DType, Dim, LoadOptions, Model, Tensor};
use libfuzzer_sys::fuzz_target;

/// Largest input (elements) the target builds for a run.
const MAX_INPUT: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    // A panic hydrant catches (and turns into an error) is not a finding: keep the default hook
    // instead of libFuzzer's aborting one. A panic that escapes hydrant still aborts the run.
    static DEFAULT_HOOK: std::sync::Once = std::sync::Once::new();
    DEFAULT_HOOK.call_once(|| drop(std::panic::take_hook()));
    let options = LoadOptions::new().threads(1).max_bytes(16 << 20);
    let Ok(model) = Model::from_bytes(data, options) else { return };
    assert!(!model.head_names().is_empty());
    let _ = model.split().trunk_nodes();
    let mut inputs = Vec::new();
    for spec in model.inputs() {
        let shape: Vec<usize> = spec
            .shape
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => *n,
                Dim::Symbolic(_) => 1,
            })
            .collect();
        if spec.dtype != DType::F32
            || shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).is_none_or(|n| n > MAX_INPUT)
        {
            return;
        }
        let Ok(t) = Tensor::zeros::<f32>(&shape) else { return };
        inputs.push((spec.name.clone(), t));
    }
    let named: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let _ = model.run(&named, &[]);
});
