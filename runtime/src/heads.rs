//! [`HeadSet`]: one or more trainable heads in a safetensors file (docs/FORMAT.md).
//!
//! Tensors carry PyTorch `state_dict` names, `<head>.<layer>.<param>`, so a file written by
//! `safetensors.torch.save_file(heads.state_dict(), path, metadata=...)` loads as is. The
//! architecture is JSON in the header's `__metadata__` under `hydrant.heads`; optional optimizer
//! state sits beside it (`hydrant.optimizer`, tensors `hydrant.optimizer.<head>.<layer>.<param>.<slot>`).
//!
//! Everything read is untrusted: the file size is bounded before reading, the raw header is
//! checked (bounded length, offsets in range, tiling the data exactly, shapes agreeing with byte
//! counts; [`crate::safetensors_check`]) before the safetensors crate parses it again, and every
//! tensor is checked against the layer that owns it.

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::safetensors_check::{self, SafetensorsLimits};
use crate::tensor::{DType, Tensor, TensorData};
use crate::train::optim::{Optimizer, OptimizerSpec, SlotState};
use crate::train::trunk::{Trunk, TrunkSpec, TRUNK_PREFIX};
use crate::train::{Head, HeadSpec};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Metadata key holding the head descriptions.
pub const HEADS_KEY: &str = "hydrant.heads";
/// Metadata key holding the format version.
pub const FORMAT_KEY: &str = "hydrant.format";
/// Metadata key holding the trunk description (files that hold a whole model).
pub const TRUNK_KEY: &str = "hydrant.trunk";
/// Metadata key holding optimizer hyper-parameters and step count.
pub const OPTIMIZER_KEY: &str = "hydrant.optimizer";
/// Prefix of optimizer-state tensor names.
pub const OPTIMIZER_PREFIX: &str = "hydrant.optimizer.";
/// The format version written.
pub const FORMAT_VERSION: &str = "1";
/// Default bound on a head file's size (1 GiB).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 1 << 30;

/// Optimizer state saved with heads: hyper-parameters, steps, and per head its slot tensors in
/// the head's parameter order.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedOptimizer {
    /// The optimizer's hyper-parameters and steps taken.
    pub optimizer: Optimizer,
    /// For each head (by name), the names of its parameters in the optimizer's order.
    pub params: Vec<(String, Vec<String>)>,
}

#[derive(Serialize, Deserialize)]
struct OptimizerMeta {
    spec: OptimizerSpec,
    steps: u64,
    params: Vec<(String, Vec<String>)>,
    /// Updates per parameter tensor, in the order of `params`.
    slot_steps: Vec<u64>,
}

/// Prefix of the names (tensors and metadata keys) reserved for hydrant's own state.
pub const RESERVED_PREFIX: &str = "hydrant.";

/// Heads read from or written to one file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeadSet {
    /// The heads, in file order.
    pub heads: Vec<Head>,
    /// Optimizer state, when saved with the heads.
    pub optimizer: Option<SavedOptimizer>,
    /// The trunk, when the file holds a whole model.
    pub trunk: Option<Trunk>,
    /// Other state saved beside the heads (training checkpoints): tensors whose names start with
    /// [`RESERVED_PREFIX`].
    pub extra_tensors: Vec<(String, Tensor)>,
    /// Other metadata entries whose keys start with [`RESERVED_PREFIX`].
    pub extra_metadata: Vec<(String, String)>,
}

impl HeadSet {
    /// A set of heads without optimizer state.
    pub fn new(heads: Vec<Head>) -> HeadSet {
        HeadSet { heads, ..HeadSet::default() }
    }

    /// The head called `name`.
    pub fn get(&self, name: &str) -> Option<&Head> {
        self.heads.iter().find(|h| h.name() == name)
    }

    /// Reads a head file (at most [`DEFAULT_MAX_FILE_BYTES`]).
    pub fn load(path: impl AsRef<Path>) -> Result<HeadSet> {
        HeadSet::load_limited(path.as_ref(), DEFAULT_MAX_FILE_BYTES)
    }

    /// Reads a head file of at most `max_bytes` (other limits at their defaults).
    pub fn load_limited(path: &Path, max_bytes: u64) -> Result<HeadSet> {
        let limits =
            SafetensorsLimits { max_file_bytes: max_bytes, ..SafetensorsLimits::default() };
        HeadSet::load_with(path, &limits)
    }

    /// Reads a head file under `limits` (the file size is checked before it is read).
    pub fn load_with(path: &Path, limits: &SafetensorsLimits) -> Result<HeadSet> {
        let size = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
        if size > limits.max_file_bytes {
            return Err(Error::InvalidModel(format!(
                "{}: {size} bytes exceeds the limit of {}",
                path.display(),
                limits.max_file_bytes
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        HeadSet::from_bytes_with(&bytes, limits).map_err(|e| match e {
            Error::InvalidModel(m) => Error::InvalidModel(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    /// Parses head-file bytes (default [`SafetensorsLimits`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<HeadSet> {
        HeadSet::from_bytes_with(bytes, &SafetensorsLimits::default())
    }

    /// Parses head-file bytes under `limits`.
    pub fn from_bytes_with(bytes: &[u8], limits: &SafetensorsLimits) -> Result<HeadSet> {
        let bad = |m: String| Error::InvalidModel(m);
        safetensors_check::check(bytes, limits)?;
        let (_, meta) = SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(format!("not a valid safetensors file ({e})")))?;
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a valid safetensors file ({e})")))?;
        let md = meta.metadata().clone().unwrap_or_default();
        if let Some(v) = md.get(FORMAT_KEY) {
            if v != FORMAT_VERSION {
                return Err(bad(format!(
                    "head format version {v} (this build reads {FORMAT_VERSION})"
                )));
            }
        }
        let json = md.get(HEADS_KEY).ok_or_else(|| {
            bad(format!("no `{HEADS_KEY}` entry in the metadata: not a hydrant head file"))
        })?;
        let specs: Vec<HeadSpec> =
            serde_json::from_str(json).map_err(|e| bad(format!("`{HEADS_KEY}` metadata: {e}")))?;
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for (name, view) in st.tensors() {
            tensors.insert(name.clone(), to_tensor(&name, &view)?);
        }
        let trunk = match md.get(TRUNK_KEY) {
            Some(json) => {
                let spec: TrunkSpec = serde_json::from_str(json)
                    .map_err(|e| bad(format!("`{TRUNK_KEY}` metadata: {e}")))?;
                let names: Vec<String> =
                    tensors.keys().filter(|n| n.starts_with(TRUNK_PREFIX)).cloned().collect();
                let mine = names
                    .into_iter()
                    .filter_map(|n| {
                        tensors.remove(&n).map(|t| (n[TRUNK_PREFIX.len()..].to_string(), t))
                    })
                    .collect();
                if specs.iter().any(|h| h.name == "trunk") {
                    return Err(bad(
                        "a head cannot be called `trunk` in a file that holds a trunk".into(),
                    ));
                }
                Some(Trunk::new(spec, mine)?)
            }
            None => None,
        };
        let mut heads = Vec::with_capacity(specs.len());
        for spec in specs {
            if spec.name.starts_with(RESERVED_PREFIX) {
                return Err(bad(format!(
                    "head name `{}`: names starting with `{RESERVED_PREFIX}` are reserved",
                    spec.name
                )));
            }
            if heads.iter().any(|h: &Head| h.name() == spec.name) {
                return Err(bad(format!("head `{}` is described twice", spec.name)));
            }
            let prefix = format!("{}.", spec.name);
            let own: Vec<String> = tensors
                .keys()
                .filter(|n| n.starts_with(&prefix) && !n.starts_with(OPTIMIZER_PREFIX))
                .filter(|n| {
                    n[prefix.len()..].split('.').next().is_some_and(|i| i.parse::<usize>().is_ok())
                })
                .cloned()
                .collect();
            let mine = own
                .into_iter()
                .filter_map(|n| tensors.remove(&n).map(|t| (n[prefix.len()..].to_string(), t)))
                .collect();
            heads.push(Head::new(spec, mine)?);
        }
        let optimizer = match md.get(OPTIMIZER_KEY) {
            Some(json) => Some(read_optimizer(json, &mut tensors, &heads)?),
            None => None,
        };
        let mut extra_tensors: Vec<(String, Tensor)> = Vec::new();
        let reserved: Vec<String> = tensors
            .keys()
            .filter(|n| n.starts_with(RESERVED_PREFIX) && !n.starts_with(OPTIMIZER_PREFIX))
            .cloned()
            .collect();
        for n in reserved {
            if let Some(t) = tensors.remove(&n) {
                extra_tensors.push((n, t));
            }
        }
        extra_tensors.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(extra) = tensors.keys().min() {
            return Err(bad(format!(
                "tensor `{extra}` belongs to no head described in the metadata"
            )));
        }
        let known = [FORMAT_KEY, HEADS_KEY, OPTIMIZER_KEY, TRUNK_KEY];
        let mut extra_metadata: Vec<(String, String)> = md
            .iter()
            .filter(|(k, _)| k.starts_with(RESERVED_PREFIX) && !known.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        extra_metadata.sort();
        Ok(HeadSet { heads, optimizer, trunk, extra_tensors, extra_metadata })
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut named: Vec<(String, Tensor)> = Vec::new();
        let mut specs = Vec::new();
        for h in &self.heads {
            specs.push(h.spec().clone());
            for (n, t) in h.tensors() {
                named.push((format!("{}.{n}", h.name()), t.clone()));
            }
        }
        let mut md = HashMap::new();
        md.insert(FORMAT_KEY.to_string(), FORMAT_VERSION.to_string());
        md.insert(HEADS_KEY.to_string(), json(&specs)?);
        if let Some(t) = &self.trunk {
            md.insert(TRUNK_KEY.to_string(), json(t.spec())?);
            for (n, v) in t.tensors() {
                named.push((format!("{TRUNK_PREFIX}{n}"), v.clone()));
            }
        }
        if let Some(o) = &self.optimizer {
            let slot_steps = o.optimizer.slots.iter().map(|s| s.steps).collect();
            let meta = OptimizerMeta {
                spec: *o.optimizer.spec(),
                steps: o.optimizer.steps,
                params: o.params.clone(),
                slot_steps,
            };
            md.insert(OPTIMIZER_KEY.to_string(), json(&meta)?);
            let mut slot = 0;
            for (head, params) in &o.params {
                for p in params {
                    let s = o.optimizer.slots.get(slot).ok_or_else(|| {
                        Error::InvalidArgument(
                            "optimizer state has fewer slots than parameters".into(),
                        )
                    })?;
                    slot += 1;
                    for (kind, v) in [("first", &s.first), ("second", &s.second)] {
                        if !v.is_empty() {
                            named.push((
                                format!("{OPTIMIZER_PREFIX}{head}.{p}.{kind}"),
                                Tensor::new(&[v.len()], v.clone())?,
                            ));
                        }
                    }
                }
            }
        }
        for (k, v) in &self.extra_metadata {
            if !k.starts_with(RESERVED_PREFIX) {
                return Err(Error::InvalidArgument(format!(
                    "metadata key `{k}` must start with `{RESERVED_PREFIX}`"
                )));
            }
            md.insert(k.clone(), v.clone());
        }
        for (n, t) in &self.extra_tensors {
            if !n.starts_with(RESERVED_PREFIX) || n.starts_with(OPTIMIZER_PREFIX) {
                return Err(Error::InvalidArgument(format!(
                    "extra tensor `{n}` must start with `{RESERVED_PREFIX}`"
                )));
            }
            named.push((n.clone(), t.clone()));
        }
        let views: Vec<(String, Raw)> =
            named.iter().map(|(n, t)| Ok((n.clone(), Raw::of(t)?))).collect::<Result<_>>()?;
        safetensors::serialize(views, Some(md))
            .map_err(|e| Error::InvalidArgument(format!("cannot serialise heads: {e}")))
    }

    /// Writes the file atomically: a crash mid-save leaves the previous file intact.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path.as_ref(), &self.to_bytes()?)
    }
}

fn json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v)
        .map_err(|e| Error::InvalidArgument(format!("cannot encode metadata: {e}")))
}

fn read_optimizer(
    json: &str,
    tensors: &mut HashMap<String, Tensor>,
    heads: &[Head],
) -> Result<SavedOptimizer> {
    let bad = |m: String| Error::InvalidModel(format!("`{OPTIMIZER_KEY}` metadata: {m}"));
    let meta: OptimizerMeta = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    let mut optimizer = Optimizer::new(meta.spec, 0).map_err(|e| bad(e.to_string()))?;
    optimizer.steps = meta.steps;
    for (head, params) in &meta.params {
        let h = heads
            .iter()
            .find(|h| h.name() == head)
            .ok_or_else(|| bad(format!("unknown head `{head}`")))?;
        for p in params {
            let len = h
                .tensor(p)
                .ok_or_else(|| bad(format!("head `{head}` has no parameter `{p}`")))?
                .len();
            let steps = meta.slot_steps.get(optimizer.slots.len()).copied().unwrap_or(meta.steps);
            let mut slot = SlotState { steps, ..SlotState::default() };
            for (kind, dst) in [("first", &mut slot.first), ("second", &mut slot.second)] {
                if let Some(t) = tensors.remove(&format!("{OPTIMIZER_PREFIX}{head}.{p}.{kind}")) {
                    if t.len() != len {
                        return Err(bad(format!(
                            "state `{head}.{p}.{kind}` has {} values for {len} weights",
                            t.len()
                        )));
                    }
                    let v = t.into_vec::<f32>().map_err(|e| bad(e.to_string()))?;
                    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                        return Err(bad(format!(
                            "state `{head}.{p}.{kind}` has a non-finite value at element {i}"
                        )));
                    }
                    *dst = v;
                }
            }
            optimizer.slots.push(slot);
        }
    }
    Ok(SavedOptimizer { optimizer, params: meta.params })
}

fn to_tensor(name: &str, v: &TensorView) -> Result<Tensor> {
    let bytes = v.data();
    let shape = v.shape();
    let bad = |why: &str| Error::InvalidModel(format!("tensor `{name}`: {why}"));
    let data = match v.dtype() {
        Dtype::F32 => TensorData::F32(le(bytes, f32::from_le_bytes)),
        Dtype::F64 => TensorData::F64(le(bytes, f64::from_le_bytes)),
        Dtype::F16 => TensorData::F16(le(bytes, half::f16::from_le_bytes)),
        Dtype::BF16 => TensorData::BF16(le(bytes, half::bf16::from_le_bytes)),
        Dtype::I64 => TensorData::I64(le(bytes, i64::from_le_bytes)),
        Dtype::I32 => TensorData::I32(le(bytes, i32::from_le_bytes)),
        Dtype::U8 => TensorData::U8(bytes.to_vec()),
        Dtype::I8 => TensorData::I8(le(bytes, i8::from_le_bytes)),
        d => return Err(bad(&format!("unsupported dtype {d:?}"))),
    };
    Tensor::from_data(shape, data).map_err(|e| bad(&e.to_string()))
}

/// Decodes little-endian elements of `N` bytes (whatever the host's byte order).
fn le<T, const N: usize>(bytes: &[u8], from: fn([u8; N]) -> T) -> Vec<T> {
    bytes.chunks_exact(N).map(|c| from(c.try_into().expect("chunks of N bytes"))).collect()
}

/// A tensor viewed as safetensors bytes.
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl Raw {
    fn of(t: &Tensor) -> Result<Raw> {
        let (dtype, bytes): (Dtype, Vec<u8>) = match t.data() {
            TensorData::F32(v) => (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            TensorData::F64(v) => (Dtype::F64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            TensorData::F16(v) => (Dtype::F16, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            TensorData::BF16(v) => (Dtype::BF16, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            TensorData::I64(v) => (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            TensorData::I32(v) => (Dtype::I32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            TensorData::U8(v) => (Dtype::U8, v.clone()),
            TensorData::I8(v) => (Dtype::I8, v.iter().map(|&x| x as u8).collect()),
            TensorData::Bool(_) => {
                return Err(Error::InvalidArgument(format!("cannot save {} tensors", DType::Bool)))
            }
        };
        Ok(Raw { dtype, shape: t.shape().to_vec(), bytes })
    }
}

impl safetensors::View for Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}
