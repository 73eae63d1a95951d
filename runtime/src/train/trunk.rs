//! [`TrunkSpec`] and [`Trunk`]: a trunk described as a stack of vocabulary layers and residual
//! blocks, with its weights — so that a whole model (trunk and heads) can live in one
//! safetensors file (metadata `hydrant.trunk`, tensors `trunk.<i>.<param>`, inside a residual
//! block `trunk.<i>.body.<j>.<param>` and `trunk.<i>.shortcut.<j>.<param>`, as PyTorch names
//! the `state_dict` of an `nn.Sequential` with such blocks).

use super::head::take_layer_tensors;
use super::layers;
use super::spec::{LayerSpec, MAX_LAYERS, MAX_NAME_LEN};
use crate::error::{Error, Result};
use crate::tensor::{Tensor, MAX_RANK};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most elements one sample's tensor may have anywhere in a trunk (2³⁰: 4 GiB of f32).
pub const MAX_SAMPLE_ELEMENTS: usize = 1 << 30;

/// Prefix of the trunk's tensor names.
pub const TRUNK_PREFIX: &str = "trunk.";

/// Marks a residual block in a layer list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResidualKind {
    /// `{"kind": "residual", …}`.
    Residual,
}

/// `activation(body(x) + shortcut(x))`; an empty shortcut is the identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Residual {
    /// Always `residual`.
    pub kind: ResidualKind,
    /// The main branch.
    pub body: Vec<LayerSpec>,
    /// The skip branch (empty: identity).
    #[serde(default)]
    pub shortcut: Vec<LayerSpec>,
    /// Applied to the sum (a parameter-free layer such as `relu`), if any.
    #[serde(default)]
    pub activation: Option<LayerSpec>,
}

/// One element of a trunk: a plain layer or a residual block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TrunkLayer {
    /// A residual block.
    Residual(Residual),
    /// A plain layer.
    Layer(LayerSpec),
}

/// A trunk: its input and its layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrunkSpec {
    /// Name of the model input.
    pub input: String,
    /// Shape of one sample (the batch axis, symbolic, comes first).
    pub input_shape: Vec<usize>,
    /// The layers, applied in order.
    pub layers: Vec<TrunkLayer>,
    /// Names given to layer outputs (tensor name → layer index); others are `trunk.<i>`.
    #[serde(default)]
    pub names: BTreeMap<String, usize>,
}

impl TrunkSpec {
    /// The name of the tensor layer `i` writes.
    pub fn tensor_name(&self, i: usize) -> String {
        self.names
            .iter()
            .find(|(_, &j)| j == i)
            .map_or_else(|| format!("trunk.{i}"), |(n, _)| n.clone())
    }

    /// Every tensor a head may read: the input and each layer's output.
    pub fn tensor_names(&self) -> Vec<String> {
        std::iter::once(self.input.clone())
            .chain((0..self.layers.len()).map(|i| self.tensor_name(i)))
            .collect()
    }

    /// Checks names, sizes and every layer.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidModel(format!("trunk: {m}")));
        if self.input.is_empty() || self.input.len() > MAX_NAME_LEN {
            return bad("the input needs a name of 1 to 256 characters".into());
        }
        if self.input_shape.is_empty()
            || self.input_shape.len() >= MAX_RANK
            || self.input_shape.contains(&0)
        {
            return bad(format!(
                "input shape {:?} (one sample, without the batch axis)",
                self.input_shape
            ));
        }
        if self.layers.is_empty() || self.layers.len() > MAX_LAYERS {
            return bad(format!("{} layers (expected 1..={MAX_LAYERS})", self.layers.len()));
        }
        for (name, &i) in &self.names {
            if i >= self.layers.len()
                || name.is_empty()
                || name.len() > MAX_NAME_LEN
                || *name == self.input
            {
                return bad(format!("name `{name}` for layer {i}"));
            }
        }
        for (i, l) in self.layers.iter().enumerate() {
            let check = |l: &LayerSpec| {
                l.validate().map_err(|e| Error::InvalidModel(format!("trunk layer {i}: {e}")))
            };
            match l {
                TrunkLayer::Layer(l) => check(l)?,
                TrunkLayer::Residual(r) => {
                    if r.body.is_empty() {
                        return bad(format!("residual block {i} has an empty body"));
                    }
                    r.body.iter().chain(&r.shortcut).chain(&r.activation).try_for_each(check)?;
                    if r.activation.as_ref().is_some_and(|a| !a.param_names().is_empty()) {
                        return bad(format!(
                            "residual block {i}: the activation must have no weights"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A trunk with its weights (names relative to `trunk.`: `0.weight`, `3.body.1.bias`…).
#[derive(Debug, Clone, PartialEq)]
pub struct Trunk {
    spec: TrunkSpec,
    tensors: Vec<(String, Tensor)>,
}

impl Trunk {
    /// A trunk from its description and tensors, checked like a head's (every tensor present
    /// with its shape, nothing else), and the shapes checked through the layers.
    pub fn new(spec: TrunkSpec, tensors: Vec<(String, Tensor)>) -> Result<Trunk> {
        spec.validate()?;
        let mut pool = tensors;
        let mut ordered = Vec::new();
        let owner = "trunk";
        for (i, l) in spec.layers.iter().enumerate() {
            match l {
                TrunkLayer::Layer(l) => ordered.extend(take_layer_tensors(
                    owner,
                    &format!("{i}."),
                    &format!("trunk.{i}."),
                    i,
                    l,
                    &mut pool,
                )?),
                TrunkLayer::Residual(r) => {
                    for (branch, list) in [("body", &r.body), ("shortcut", &r.shortcut)] {
                        for (j, l) in list.iter().enumerate() {
                            let key = format!("{i}.{branch}.{j}.");
                            ordered.extend(take_layer_tensors(
                                owner,
                                &key,
                                &format!("trunk.{key}"),
                                i,
                                l,
                                &mut pool,
                            )?);
                        }
                    }
                }
            }
        }
        if let Some((extra, _)) = pool.first() {
            return Err(Error::InvalidModel(format!(
                "trunk: tensor `trunk.{extra}` belongs to no layer"
            )));
        }
        let trunk = Trunk { spec, tensors: ordered };
        trunk.shapes()?;
        Ok(trunk)
    }

    /// The description.
    pub fn spec(&self) -> &TrunkSpec {
        &self.spec
    }

    /// Tensors under names relative to `trunk.`.
    pub fn tensors(&self) -> &[(String, Tensor)] {
        &self.tensors
    }

    /// The tensor called `name` (relative: `3.body.0.weight`).
    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The per-sample shape of every tensor heads may read (input and layer outputs), checking
    /// that each layer accepts what it gets.
    pub fn shapes(&self) -> Result<Vec<(String, Vec<usize>)>> {
        let mut shape: Vec<usize> =
            std::iter::once(1).chain(self.spec.input_shape.iter().copied()).collect();
        bounded(&shape, "the input")?;
        let mut out = vec![(self.spec.input.clone(), shape[1..].to_vec())];
        let through = |list: &[LayerSpec], shape: &[usize], i: usize| -> Result<Vec<usize>> {
            let mut s = shape.to_vec();
            for l in list {
                s = layers::build::<f32>(l)?
                    .output_shape(&s)
                    .map_err(|e| Error::InvalidModel(format!("trunk layer {i}: {e}")))?;
                bounded(&s, &format!("layer {i}"))?;
            }
            Ok(s)
        };
        for (i, l) in self.spec.layers.iter().enumerate() {
            shape = match l {
                TrunkLayer::Layer(l) => through(std::slice::from_ref(l), &shape, i)?,
                TrunkLayer::Residual(r) => {
                    let a = through(&r.body, &shape, i)?;
                    let b = through(&r.shortcut, &shape, i)?;
                    if a != b {
                        return Err(Error::InvalidModel(format!(
                            "trunk residual block {i}: body gives {a:?}, shortcut gives {b:?}"
                        )));
                    }
                    through(r.activation.as_slice(), &a, i)?
                }
            };
            out.push((self.spec.tensor_name(i), shape[1..].to_vec()));
        }
        Ok(out)
    }
}

/// Checks that one sample of `shape` (batch first) has at most [`MAX_SAMPLE_ELEMENTS`], so that
/// the next layer's shape arithmetic cannot overflow.
fn bounded(shape: &[usize], what: &str) -> Result<()> {
    let count = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    match count {
        Some(n) if n <= MAX_SAMPLE_ELEMENTS => Ok(()),
        _ => Err(Error::InvalidModel(format!(
            "trunk: {what} gives shape {shape:?}, more than {MAX_SAMPLE_ELEMENTS} elements per sample"
        ))),
    }
}
