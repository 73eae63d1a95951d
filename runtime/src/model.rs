//! [`Model`]: the public face of hydrant. Load a multi-head model, run the trunk once and only
//! the heads asked for, keep trunk [`Features`] to run heads later.

use crate::backend::cpu::{self, CpuSegment, Fact};
use crate::backend::profile::NodeTime;
use crate::backend::rows::{self, Env};
use crate::error::{Error, Result};
use crate::graph::{split, Dim, HeadPart, OnnxGraph, Split, TensorSpec};
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;
use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::prelude::TValue;

/// Most intra-op threads a model accepts.
pub const MAX_THREADS: usize = 256;

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// A GPU when one is usable, else the CPU.
    #[default]
    Auto,
    /// The CPU (tract).
    Cpu,
    /// The CUDA device with this ordinal.
    Cuda(usize),
}

impl std::str::FromStr for Device {
    type Err = Error;
    fn from_str(s: &str) -> Result<Device> {
        match s {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => s.strip_prefix("cuda:").and_then(|n| n.parse().ok()).map(Device::Cuda).ok_or_else(
                || {
                    Error::InvalidArgument(format!(
                        "device `{s}`: expected auto, cpu, cuda or cuda:N"
                    ))
                },
            ),
        }
    }
}

/// Options for [`Model::load`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    threads: Option<usize>,
    cut_points: Vec<String>,
    device: Device,
    batch_as_rows: Option<bool>,
    max_bytes: Option<u64>,
    own_cpu_ops: Option<bool>,
}

impl LoadOptions {
    /// Defaults: all cores, automatic split, automatic device.
    pub fn new() -> LoadOptions {
        LoadOptions::default()
    }

    /// Names the trunk tensors where heads attach; everything downstream of them becomes head(s).
    pub fn cut_at<S: Into<String>>(mut self, tensors: impl IntoIterator<Item = S>) -> LoadOptions {
        self.cut_points = tensors.into_iter().map(Into::into).collect();
        self
    }

    /// Intra-op threads (default: the machine's available parallelism).
    pub fn threads(mut self, n: usize) -> LoadOptions {
        self.threads = Some(n);
        self
    }

    /// The device to run on.
    pub fn device(mut self, device: Device) -> LoadOptions {
        self.device = device;
        self
    }

    /// Whether a batch of N runs as N batch-1 rows spread over the threads (`true`) or as one
    /// batch-N pass (`false`). Default: rows for models with convolutions, whose batch-N plans
    /// materialise im2col on one thread; one pass otherwise. Rows are used only when every
    /// tensor between segments carries the batch on axis 0 (checked once per model).
    pub fn batch_as_rows(mut self, rows: bool) -> LoadOptions {
        self.batch_as_rows = Some(rows);
        self
    }

    /// Whether hydrant's own CPU kernels (Winograd 3×3 convolutions with fused bias, residual
    /// and ReLU) replace tract's where they apply. Default: `HYDRANT_CPU_OPS` (`off`, `0` or
    /// `false` turn them off), else on.
    pub fn own_cpu_ops(mut self, on: bool) -> LoadOptions {
        self.own_cpu_ops = Some(on);
        self
    }

    /// Most bytes the model's stored tensors may declare, checked before anything is allocated
    /// (default [`DEFAULT_MAX_BYTES`](crate::graph::DEFAULT_MAX_BYTES), 4 GiB).
    pub fn max_bytes(mut self, bytes: u64) -> LoadOptions {
        self.max_bytes = Some(bytes);
        self
    }

    fn byte_budget(&self) -> u64 {
        self.max_bytes.unwrap_or(crate::graph::DEFAULT_MAX_BYTES)
    }
}

/// Named output tensors, in the order asked for (head order, then each head's output order).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outputs(Vec<(String, Tensor)>);

impl Outputs {
    /// The output called `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
    /// Output names and tensors, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.0.iter().map(|(n, t)| (n.as_str(), t))
    }
    /// Number of outputs.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// True when there are no outputs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The named tensors, in order.
    pub fn into_vec(self) -> Vec<(String, Tensor)> {
        self.0
    }

    fn from_values(values: Vec<(String, TValue)>) -> Result<Outputs> {
        values
            .into_iter()
            .map(|(n, v)| Ok((n, cpu::from_tvalue(&v)?)))
            .collect::<Result<_>>()
            .map(Outputs)
    }
}

/// Trunk tensors computed for one input batch: what heads read. Cheap to clone; `Send + Sync`.
#[derive(Debug, Clone, Default)]
pub struct Features {
    values: HashMap<String, TValue>,
}

impl Features {
    /// Names of the tensors held.
    pub fn names(&self) -> Vec<&str> {
        let mut n: Vec<&str> = self.values.keys().map(String::as_str).collect();
        n.sort_unstable();
        n
    }
    /// A copy of the tensor called `name`.
    pub fn get(&self, name: &str) -> Result<Tensor> {
        let v = self.values.get(name).ok_or_else(|| Error::MissingFeature(name.to_string()))?;
        cpu::from_tvalue(v)
    }
    /// Builds features from tensors (for example ones cached earlier).
    pub fn from_tensors<'a>(
        tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    ) -> Result<Features> {
        let values = tensors
            .into_iter()
            .map(|(n, t)| Ok((n.to_string(), cpu::to_tvalue(t)?)))
            .collect::<Result<_>>()?;
        Ok(Features { values })
    }
}

/// Size and cost of one part of a model (FLOPs are at batch 1; `None` when not computable).
#[derive(Debug, Clone, PartialEq)]
pub struct PartStats {
    /// Non-constant nodes.
    pub nodes: usize,
    /// Parameters (elements of float initializers).
    pub params: u64,
    /// Floating-point operations at batch 1 (2 per multiply-accumulate).
    pub flops: Option<u64>,
}

/// Sizes and costs of the trunk and of each head, in head order.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The whole trunk.
    pub trunk: PartStats,
    /// Each head, in [`Model::head_names`] order.
    pub heads: Vec<PartStats>,
}

struct Head {
    part: HeadPart,
    segment: Option<CpuSegment>,
}

struct TrunkPart {
    heads: Vec<usize>,
    segment: CpuSegment,
}

/// A loaded multi-head model. `Send + Sync`: share one between threads.
pub struct Model {
    graph: OnnxGraph,
    split: Split,
    trunk: Vec<TrunkPart>,
    heads: Vec<Head>,
    executor: Executor,
    threads: usize,
    device: Device,
    /// Whether batches may run as batch-1 rows (option, or the model has convolutions).
    rows_wanted: bool,
    /// Whether every tensor between segments is batch-major (computed on first batched call).
    rows_valid: OnceLock<bool>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("heads", &self.head_names()).finish_non_exhaustive()
    }
}

impl Model {
    /// Loads an ONNX model and splits it into trunk and heads.
    pub fn load(path: impl AsRef<Path>, options: LoadOptions) -> Result<Model> {
        Model::from_graph(OnnxGraph::load_limited(path.as_ref(), options.byte_budget())?, options)
    }

    /// Loads an ONNX model held in memory (external data, if any, is not available).
    pub fn from_bytes(bytes: &[u8], options: LoadOptions) -> Result<Model> {
        Model::from_graph(
            OnnxGraph::from_bytes_limited(bytes, None, options.byte_budget())?,
            options,
        )
    }

    fn from_graph(graph: OnnxGraph, options: LoadOptions) -> Result<Model> {
        let threads = match options.threads {
            Some(n) if n == 0 || n > MAX_THREADS => {
                return Err(Error::InvalidArgument(format!(
                    "threads = {n}: expected 1..={MAX_THREADS}"
                )))
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let device = match options.device {
            Device::Auto | Device::Cpu => Device::Cpu,
            Device::Cuda(i) => {
                return Err(Error::InvalidArgument(format!(
                    "device cuda:{i}: this build of hydrant has no CUDA backend"
                )))
            }
        };
        let split = split::split(&graph, &options.cut_points)?;
        let own_ops = crate::backend::cpu_ops::enabled(options.own_cpu_ops);
        let name_of = |hs: &[usize]| {
            let names: Vec<&str> = hs.iter().map(|&h| split.heads[h].name.as_str()).collect();
            format!("trunk[{}]", names.join(","))
        };
        let trunk = split
            .trunk
            .iter()
            .map(|s| TrunkPart {
                heads: s.heads.clone(),
                segment: CpuSegment::new(&graph, &s.nodes, name_of(&s.heads), own_ops),
            })
            .collect();
        let heads = split
            .heads
            .iter()
            .map(|h| Head {
                part: h.clone(),
                segment: (!h.nodes.is_empty()).then(|| {
                    CpuSegment::new(&graph, &h.nodes, format!("head {}", h.name), own_ops)
                }),
            })
            .collect();
        let executor =
            if threads > 1 { Executor::multithread(threads) } else { Executor::SingleThread };
        let rows_wanted = options
            .batch_as_rows
            .unwrap_or_else(|| graph.nodes().iter().any(|n| n.op_type == "Conv"));
        let rows_valid = OnceLock::new();
        Ok(Model { graph, split, trunk, heads, executor, threads, device, rows_wanted, rows_valid })
    }

    /// The model's declared inputs.
    pub fn inputs(&self) -> &[TensorSpec] {
        self.graph.inputs()
    }

    /// Head names, in the order of their first output.
    pub fn head_names(&self) -> Vec<&str> {
        self.heads.iter().map(|h| h.part.name.as_str()).collect()
    }

    /// How the graph was split.
    pub fn split(&self) -> &Split {
        &self.split
    }

    /// Intra-op thread count.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The device the model runs on (never `Auto`).
    pub fn device(&self) -> Device {
        self.device
    }

    /// Name and ONNX op type of node `index` (as in [`Split`]'s node lists).
    pub fn node(&self, index: usize) -> Option<(&str, &str)> {
        self.graph.nodes().get(index).map(|n| (n.name.as_str(), n.op_type.as_str()))
    }

    /// Runs the trunk once and the named heads (all heads when `heads` is empty).
    pub fn run(&self, inputs: &[(&str, &Tensor)], heads: &[&str]) -> Result<Outputs> {
        let heads = self.head_indices(heads)?;
        let env = self.check_inputs(inputs)?;
        let outputs = self.by_rows(env, |env| {
            let features = self.trunk_values(env, &heads)?;
            self.head_values(&features.values, &heads)
        })?;
        Outputs::from_values(outputs)
    }

    /// Runs the whole trunk and returns every cut-point tensor.
    pub fn trunk(&self, inputs: &[(&str, &Tensor)]) -> Result<Features> {
        let all: Vec<usize> = (0..self.heads.len()).collect();
        self.features(inputs, &all)
    }

    /// Runs only the trunk segments the named heads need (all when empty).
    pub fn trunk_for(&self, inputs: &[(&str, &Tensor)], heads: &[&str]) -> Result<Features> {
        let heads = self.head_indices(heads)?;
        self.features(inputs, &heads)
    }

    /// Runs the named heads (all when empty) on features from [`Model::trunk`].
    pub fn heads(&self, features: &Features, heads: &[&str]) -> Result<Outputs> {
        let heads = self.head_indices(heads)?;
        let outputs =
            self.by_rows(features.values.clone(), |env| self.head_values(&env, &heads))?;
        Outputs::from_values(outputs)
    }

    fn features(&self, inputs: &[(&str, &Tensor)], heads: &[usize]) -> Result<Features> {
        let env = self.check_inputs(inputs)?;
        let values = self.by_rows(env, |env| {
            let mut named: Vec<(String, TValue)> =
                self.trunk_values(env, heads)?.values.into_iter().collect();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(named)
        })?;
        Ok(Features { values: values.into_iter().collect() })
    }

    /// Runs `f` on `env`, either once or, for a batch run as rows, once per batch-1 row on the
    /// model's threads; row results (the same names in the same order each time) are stacked.
    fn by_rows(
        &self,
        env: Env,
        f: impl Fn(Env) -> Result<Vec<(String, TValue)>> + Sync,
    ) -> Result<Vec<(String, TValue)>> {
        let n = match rows::common_rows(&env) {
            Some(n) if n > 1 && self.rows_apply() => n,
            _ => return self.scoped(|| f(env)),
        };
        let per_row = rows::map_rows(n, self.threads, |i| f(rows::row(&env, i)?))?;
        let names: Vec<String> =
            per_row.first().map(|r| r.iter().map(|(n, _)| n.clone()).collect()).unwrap_or_default();
        let values: Vec<Vec<TValue>> =
            per_row.into_iter().map(|r| r.into_iter().map(|(_, v)| v).collect()).collect();
        Ok(names.iter().cloned().zip(rows::stack(&names, &values)?).collect())
    }

    /// Whether batches run as rows: wanted, and every tensor that crosses a segment boundary has
    /// the batch on axis 0 (typed at batch 1 and 2 and compared, once per model).
    fn rows_apply(&self) -> bool {
        self.rows_wanted
            && *self.rows_valid.get_or_init(|| {
                let (Some(one), Some(two)) = (self.facts_at(1), self.facts_at(2)) else {
                    return false;
                };
                one.iter().all(|(name, (dt, s1))| {
                    two.get(name).is_some_and(|(dt2, s2)| {
                        dt == dt2
                            && s1.len() == s2.len()
                            && s1.first() == Some(&1)
                            && s2.first() == Some(&2)
                            && s1[1..] == s2[1..]
                    })
                })
            })
    }

    /// Element types and shapes of every input and segment output at batch size `batch`, or
    /// `None` when an input has no symbolic leading dimension or a segment cannot be typed.
    fn facts_at(&self, batch: usize) -> Option<HashMap<String, Fact>> {
        let mut env = HashMap::new();
        for i in self.graph.inputs() {
            if !matches!(i.shape.first(), Some(Dim::Symbolic(_))) {
                return None;
            }
            let shape = i.shape.iter().enumerate().map(|(k, d)| match d {
                Dim::Fixed(n) => *n,
                Dim::Symbolic(_) if k == 0 => batch,
                Dim::Symbolic(_) => 1,
            });
            env.insert(i.name.clone(), (i.dtype, shape.collect()));
        }
        let segments = self.trunk.iter().map(|t| &t.segment);
        for seg in segments.chain(self.heads.iter().filter_map(|h| h.segment.as_ref())) {
            let facts: Vec<Fact> =
                seg.inputs.iter().map(|n| env.get(n).cloned()).collect::<Option<_>>()?;
            let (_, outs) = seg.cost(&facts).ok()?;
            env.extend(seg.outputs.iter().cloned().zip(outs));
        }
        Some(env)
    }

    /// Times every node of every segment a full run uses (trunk once, all heads), `iters` runs
    /// on the model's threads as one pass (no batch-as-rows), medians per node in run order.
    pub fn profile(&self, inputs: &[(&str, &Tensor)], iters: usize) -> Result<Vec<NodeTime>> {
        let mut env = self.check_inputs(inputs)?;
        let segments = self.trunk.iter().map(|t| &t.segment);
        let segments = segments.chain(self.heads.iter().filter_map(|h| h.segment.as_ref()));
        let mut times = Vec::new();
        for seg in segments {
            let (outs, t) = self.scoped(|| seg.profile(&env, iters))?;
            env.extend(outs);
            times.extend(t);
        }
        Ok(times)
    }

    /// Parameters and batch-1 FLOPs of the trunk and of each head.
    pub fn summary(&self) -> Summary {
        let mut facts: Option<HashMap<String, Fact>> = self
            .graph
            .inputs()
            .iter()
            .map(|i| {
                let shape = i.shape.iter().map(|d| match d {
                    Dim::Fixed(n) => *n,
                    Dim::Symbolic(_) => 1,
                });
                (i.name.clone(), (i.dtype, shape.collect()))
            })
            .map(Some)
            .collect();
        let mut cost = |seg: &CpuSegment| -> Option<u64> {
            let env = facts.as_mut()?;
            let input_facts: Option<Vec<Fact>> =
                seg.inputs.iter().map(|n| env.get(n).cloned()).collect();
            match seg.cost(&input_facts?) {
                Ok((fma, outs)) => {
                    env.extend(seg.outputs.iter().cloned().zip(outs));
                    Some(2 * fma)
                }
                Err(_) => None,
            }
        };
        let mut trunk_flops = Some(0u64);
        for t in &self.trunk {
            trunk_flops = trunk_flops.zip(cost(&t.segment)).map(|(a, b)| a + b);
        }
        let trunk_nodes = self.split.trunk_nodes();
        let trunk = PartStats {
            nodes: trunk_nodes.len(),
            params: self.graph.param_count(&trunk_nodes),
            flops: trunk_flops,
        };
        let heads = self
            .heads
            .iter()
            .map(|h| PartStats {
                nodes: h.part.nodes.len(),
                params: self.graph.param_count(&h.part.nodes),
                flops: h.segment.as_ref().map_or(Some(0), &mut cost),
            })
            .collect();
        Summary { trunk, heads }
    }

    fn scoped<R>(&self, f: impl FnOnce() -> R) -> R {
        multithread_tract_scope(self.executor.clone(), f)
    }

    fn head_indices(&self, names: &[&str]) -> Result<Vec<usize>> {
        if names.is_empty() {
            return Ok((0..self.heads.len()).collect());
        }
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            let ix = self.split.head_index(n)?;
            if !out.contains(&ix) {
                out.push(ix);
            }
        }
        Ok(out)
    }

    fn check_inputs(&self, inputs: &[(&str, &Tensor)]) -> Result<HashMap<String, TValue>> {
        let mut env = HashMap::new();
        let mut symbols: HashMap<&str, (usize, &str)> = HashMap::new();
        for (name, _) in inputs {
            if !self.graph.inputs().iter().any(|i| i.name == *name) {
                let expected: Vec<&str> =
                    self.graph.inputs().iter().map(|i| i.name.as_str()).collect();
                return Err(Error::BadInput {
                    name: name.to_string(),
                    reason: format!(
                        "the model has no such input (inputs: {})",
                        expected.join(", ")
                    ),
                });
            }
        }
        for spec in self.graph.inputs() {
            let bad = |reason: String| Error::BadInput { name: spec.name.clone(), reason };
            let mut given = inputs.iter().filter(|(n, _)| *n == spec.name);
            let (_, t) = given.next().ok_or_else(|| bad("missing".into()))?;
            if given.next().is_some() {
                return Err(bad("given more than once".into()));
            }
            if t.dtype() != spec.dtype {
                return Err(bad(format!("expected {} elements, got {}", spec.dtype, t.dtype())));
            }
            let shape_err =
                || bad(format!("expected shape {}, got {:?}", spec.shape_string(), t.shape()));
            if t.rank() != spec.shape.len() {
                return Err(shape_err());
            }
            for (d, &actual) in spec.shape.iter().zip(t.shape()) {
                match d {
                    Dim::Fixed(n) if *n != actual => return Err(shape_err()),
                    Dim::Symbolic(s) => {
                        if actual == 0 {
                            return Err(bad(format!("dimension {s} is 0")));
                        }
                        if let Some((prev, who)) = symbols.insert(s, (actual, &spec.name)) {
                            if prev != actual {
                                return Err(bad(format!(
                                    "dimension {s} is {actual} here but {prev} in input `{who}`"
                                )));
                            }
                        }
                    }
                    _ => {}
                }
            }
            env.insert(spec.name.clone(), cpu::to_tvalue(t)?);
        }
        Ok(env)
    }

    fn trunk_values(&self, mut env: Env, heads: &[usize]) -> Result<Features> {
        for part in &self.trunk {
            if part.heads.iter().any(|h| heads.contains(h)) {
                for (name, v) in part.segment.run(&env)? {
                    env.insert(name, v);
                }
            }
        }
        let keep: Vec<&String> =
            heads.iter().flat_map(|&h| self.heads[h].part.cut_points.iter()).collect();
        env.retain(|k, _| keep.contains(&k));
        Ok(Features { values: env })
    }

    fn head_values(&self, features: &Env, heads: &[usize]) -> Result<Vec<(String, TValue)>> {
        let mut out = Vec::new();
        for &h in heads {
            let head = &self.heads[h];
            let produced = match &head.segment {
                Some(seg) => seg.run(features)?,
                None => vec![],
            };
            for name in &head.part.outputs {
                let v = produced
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v)
                    .or_else(|| features.get(name))
                    .ok_or_else(|| Error::MissingFeature(name.clone()))?;
                out.push((name.clone(), v.clone()));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Model>();
        check::<Features>();
    }

    #[test]
    fn device_parses() {
        assert_eq!("cuda:2".parse::<Device>().unwrap(), Device::Cuda(2));
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert!("gpu".parse::<Device>().is_err());
    }
}
