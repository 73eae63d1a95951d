//! Helpers shared by hydrant's integration tests: fixture paths, fixture loading, comparisons.

use hydrant::Tensor;
use std::path::PathBuf;

/// Absolute path of a file in `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

/// Zero f32 tensors for the declared inputs of `model`, each symbolic dimension set to `batch`;
/// inputs of another type or of more than `max_elements` elements are left out (a run then
/// reports them missing).
pub fn zero_inputs(
    model: &hydrant::Model,
    batch: usize,
    max_elements: usize,
) -> Vec<(String, Tensor)> {
    model
        .inputs()
        .iter()
        .filter(|spec| spec.dtype == hydrant::DType::F32)
        .filter_map(|spec| {
            let shape: Vec<usize> = spec
                .shape
                .iter()
                .map(|d| match d {
                    hydrant::Dim::Fixed(n) => *n,
                    hydrant::Dim::Symbolic(_) => batch,
                })
                .collect();
            let n = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))?;
            (n <= max_elements)
                .then(|| Tensor::zeros::<f32>(&shape).ok())
                .flatten()
                .map(|t| (spec.name.clone(), t))
        })
        .collect()
}

/// Runs `model` with every head on `inputs` (as [`zero_inputs`] makes them).
pub fn run_all(model: &hydrant::Model, inputs: &[(String, Tensor)]) -> hydrant::Result<()> {
    let named: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    model.run(&named, &[]).map(drop)
}

/// Reads a `.npy` fixture.
pub fn npy(name: &str) -> Tensor {
    hydrant::read_npy(fixture(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// Reads a JSON fixture.
pub fn json(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `max |a - b| / max |b|` over f32 tensors of equal shape (panics on a shape mismatch).
pub fn rel_err(actual: &Tensor, reference: &Tensor) -> f32 {
    assert_eq!(actual.shape(), reference.shape(), "shapes differ");
    let a = actual.to_f32();
    let b = reference.to_f32();
    let (a, b) = (a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(f32::MIN_POSITIVE);
    let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    if diff.is_nan() || a.iter().any(|x| x.is_nan()) {
        return f32::INFINITY;
    }
    diff / scale
}

/// Asserts `rel_err(actual, reference) <= tol`, naming `what` on failure.
pub fn assert_close(what: &str, actual: &Tensor, reference: &Tensor, tol: f32) {
    let e = rel_err(actual, reference);
    assert!(e <= tol, "{what}: relative error {e:e} > {tol:e}");
}

/// The tensors and metadata of a safetensors fixture (f32, i64 and u8 tensors).
pub fn safetensors(
    name: &str,
) -> (std::collections::HashMap<String, Tensor>, std::collections::HashMap<String, String>) {
    use safetensors::tensor::{Dtype, SafeTensors};
    let bytes = std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out = std::collections::HashMap::new();
    for (n, v) in st.tensors() {
        let b = v.data();
        let t = match v.dtype() {
            Dtype::F32 => Tensor::new(
                v.shape(),
                b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
            ),
            Dtype::I64 => Tensor::new(
                v.shape(),
                b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect(),
            ),
            Dtype::U8 | Dtype::BOOL => Tensor::new(v.shape(), b.to_vec()),
            d => panic!("{name}: tensor {n} has unsupported dtype {d:?}"),
        }
        .unwrap();
        out.insert(n, t);
    }
    (out, meta.metadata().clone().unwrap_or_default())
}
