//! [`Head`]: a trainable head as plain data — its [`HeadSpec`] and its tensors under PyTorch
//! `state_dict` names relative to the head (`0.weight`, `2.running_mean`, …).

use super::spec::{HeadSpec, LayerSpec};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// How the weights of a new head are drawn (biases follow PyTorch's rule in every case:
/// U(−1/√fan_in, 1/√fan_in); norm layers start at scale 1, shift 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Init {
    /// PyTorch's default for `nn.Linear` / `nn.Conv2d`: U(−1/√fan_in, 1/√fan_in).
    #[default]
    PyTorch,
    /// Kaiming (He) normal for ReLU networks: N(0, 2/fan_in).
    KaimingNormal,
    /// Kaiming (He) uniform for ReLU networks: U(−√(6/fan_in), √(6/fan_in)).
    KaimingUniform,
    /// Xavier (Glorot) uniform: U(−√(6/(fan_in+fan_out)), √(6/(fan_in+fan_out))).
    XavierUniform,
}

/// A trainable head: architecture plus weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    spec: HeadSpec,
    tensors: Vec<(String, Tensor)>,
}

/// Takes from `pool` the tensors layer `index` needs (keys `{key}{param}`, shown in messages as
/// `{full}{param}`), checked for presence, type (f16/bf16/f64 widened to f32), shape and
/// finiteness. `num_batches_tracked` may be absent (0).
pub(crate) fn take_layer_tensors(
    owner: &str,
    key: &str,
    full: &str,
    index: usize,
    layer: &LayerSpec,
    pool: &mut Vec<(String, Tensor)>,
) -> Result<Vec<(String, Tensor)>> {
    let mut out = Vec::new();
    for (name, shape, dtype) in layer_tensors(layer) {
        let k = format!("{key}{name}");
        let t = match pool.iter().position(|(n, _)| *n == k) {
            Some(p) => pool.swap_remove(p).1,
            None if name == "num_batches_tracked" => Tensor::new::<i64>(&[], vec![0])?,
            None => {
                return Err(Error::InvalidModel(format!(
                    "{owner}: tensor `{full}{name}` is missing ({} layer {index} needs it)",
                    layer.kind()
                )))
            }
        };
        let t = if t.dtype() == dtype {
            t
        } else if dtype == DType::F32 && matches!(t.dtype(), DType::F16 | DType::BF16 | DType::F64)
        {
            t.to_f32()
        } else {
            return Err(Error::InvalidModel(format!(
                "{owner}: tensor `{full}{name}` is {}, expected {dtype}",
                t.dtype()
            )));
        };
        if t.shape() != shape.as_slice() && !(name == "num_batches_tracked" && t.len() == 1) {
            return Err(Error::InvalidModel(format!(
                "{owner}: tensor `{full}{name}` has shape {:?}, the {} layer needs {shape:?}",
                t.shape(),
                layer.kind()
            )));
        }
        if let Some(v) = t.as_slice::<f32>() {
            if let Some(bad) = v.iter().position(|x| !x.is_finite()) {
                return Err(Error::InvalidModel(format!(
                    "{owner}: tensor `{full}{name}` has a non-finite value at element {bad}"
                )));
            }
        }
        out.push((k, t));
    }
    Ok(out)
}

/// Expected tensors of a layer: `(name, shape, dtype)`.
pub(crate) fn layer_tensors(layer: &LayerSpec) -> Vec<(&'static str, Vec<usize>, DType)> {
    let f = DType::F32;
    match *layer {
        LayerSpec::Linear { in_features, out_features, bias } => {
            let mut t = vec![("weight", vec![out_features, in_features], f)];
            if bias {
                t.push(("bias", vec![out_features], f));
            }
            t
        }
        LayerSpec::Conv2d { in_channels, out_channels, kernel_size: k, groups, bias, .. } => {
            let mut t = vec![("weight", vec![out_channels, in_channels / groups.max(1), k, k], f)];
            if bias {
                t.push(("bias", vec![out_channels], f));
            }
            t
        }
        LayerSpec::BatchNorm2d { num_features: c, .. } => vec![
            ("weight", vec![c], f),
            ("bias", vec![c], f),
            ("running_mean", vec![c], f),
            ("running_var", vec![c], f),
            ("num_batches_tracked", vec![], DType::I64),
        ],
        LayerSpec::LayerNorm { normalized_shape: d, .. } => {
            vec![("weight", vec![d], f), ("bias", vec![d], f)]
        }
        _ => vec![],
    }
}

impl Head {
    /// A head from its description and tensors, checked: every tensor the layers need is there
    /// with its exact shape and type, and nothing else. `num_batches_tracked` may be absent.
    pub fn new(spec: HeadSpec, tensors: Vec<(String, Tensor)>) -> Result<Head> {
        spec.validate()?;
        let mut ordered = Vec::with_capacity(tensors.len());
        let mut pool = tensors;
        let owner = format!("head `{}`", spec.name);
        for (i, layer) in spec.layers.iter().enumerate() {
            let full = format!("{}.{i}.", spec.name);
            ordered.extend(take_layer_tensors(
                &owner,
                &format!("{i}."),
                &full,
                i,
                layer,
                &mut pool,
            )?);
        }
        if let Some((extra, _)) = pool.first() {
            return Err(Error::InvalidModel(format!(
                "head `{}`: tensor `{}.{extra}` belongs to no layer of the head",
                spec.name, spec.name
            )));
        }
        Ok(Head { spec, tensors: ordered })
    }

    /// A new head with freshly initialised weights (deterministic for a given `seed`).
    pub fn init(spec: HeadSpec, init: Init, seed: u64) -> Result<Head> {
        spec.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut tensors = Vec::new();
        for (i, layer) in spec.layers.iter().enumerate() {
            let fans = match *layer {
                LayerSpec::Linear { in_features, out_features, .. } => {
                    Some((in_features, out_features))
                }
                LayerSpec::Conv2d { in_channels, out_channels, kernel_size: k, groups, .. } => {
                    Some((in_channels / groups * k * k, out_channels / groups * k * k))
                }
                _ => None,
            };
            for (name, shape, dtype) in layer_tensors(layer) {
                let n: usize = shape.iter().product();
                let t = match (name, fans) {
                    ("num_batches_tracked", _) => Tensor::new::<i64>(&[], vec![0])?,
                    ("weight", Some((fan_in, fan_out))) => {
                        Tensor::new(&shape, draw(init, fan_in, fan_out, n, &mut rng)?)?
                    }
                    ("bias", Some((fan_in, _))) => {
                        let b = 1.0 / (fan_in as f32).sqrt();
                        Tensor::new(&shape, (0..n).map(|_| rng.random_range(-b..=b)).collect())?
                    }
                    ("weight" | "running_var", None) => Tensor::new(&shape, vec![1.0f32; n])?,
                    _ => Tensor::new(&shape, vec![0.0f32; n])?,
                };
                debug_assert_eq!(t.dtype(), dtype);
                tensors.push((format!("{i}.{name}"), t));
            }
        }
        Head::new(spec, tensors)
    }

    /// The architecture.
    pub fn spec(&self) -> &HeadSpec {
        &self.spec
    }

    /// The head's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Tensors under names relative to the head (`0.weight`), in `state_dict` order.
    pub fn tensors(&self) -> &[(String, Tensor)] {
        &self.tensors
    }

    /// The tensor called `name` (relative, `0.weight`).
    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The same head under another name.
    pub fn renamed(mut self, name: &str) -> Head {
        self.spec.name = name.to_string();
        if self.spec.outputs.len() <= 1 {
            self.spec.outputs = vec![name.to_string()];
        }
        self
    }

    /// Number of learnable parameters (elements of weights and biases).
    pub fn param_count(&self) -> u64 {
        self.spec
            .layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| l.param_names().iter().map(move |p| format!("{i}.{p}")))
            .filter_map(|n| self.tensor(&n).map(|t| t.len() as u64))
            .sum()
    }

    pub(crate) fn into_parts(self) -> (HeadSpec, Vec<(String, Tensor)>) {
        (self.spec, self.tensors)
    }
}

fn draw(
    init: Init,
    fan_in: usize,
    fan_out: usize,
    n: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<f32>> {
    let (fi, fo) = (fan_in as f32, fan_out as f32);
    let uniform = |b: f32, rng: &mut ChaCha8Rng| -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-b..=b)).collect()
    };
    Ok(match init {
        Init::PyTorch => uniform(1.0 / fi.sqrt(), rng),
        Init::KaimingUniform => uniform((6.0 / fi).sqrt(), rng),
        Init::XavierUniform => uniform((6.0 / (fi + fo)).sqrt(), rng),
        Init::KaimingNormal => {
            let normal = Normal::new(0.0, (2.0 / fi).sqrt())
                .map_err(|e| Error::InvalidArgument(format!("kaiming init: {e}")))?;
            (0..n).map(|_| normal.sample(rng)).collect()
        }
    })
}
