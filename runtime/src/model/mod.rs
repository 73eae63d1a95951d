//! [`Model`]: the public face of hydrant. Load a multi-head model, run the trunk once and only
//! the heads asked for, keep trunk [`Features`] to run heads later.

mod accel;
mod export;
mod fuse;
#[cfg(feature = "cuda")]
mod gpu;
mod io;
mod layout;
mod options;
mod route;

pub use io::{Features, Outputs};
pub use options::{Device, LoadOptions, Precision, MAX_THREADS};

use crate::backend::cpu::{self, CpuSegment, Fact};
use crate::backend::cpu_ops::{parallel, spin_pool::SpinPool};
use crate::backend::device;
use crate::backend::profile::NodeTime;
use crate::backend::rows::{self, Env};
use crate::error::{Error, Result};
use crate::graph::{split, Dim, OnnxGraph, Split, TensorSpec};
use crate::heads::HeadSet;
use crate::tensor::Tensor;
use crate::train::import::{import_head, NotTrainable};
use crate::train::Head;
use layout::{BaseNeeds, HeadSource, Layout};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::prelude::TValue;

/// Size and cost of one part of a model (FLOPs are at batch 1; `None` when not computable).
#[derive(Debug, Clone, PartialEq)]
pub struct PartStats {
    /// Non-constant nodes (layers, for heads set in at run time).
    pub nodes: usize,
    /// Parameters (elements of float initializers, or of a head's weights).
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

/// A loaded multi-head model. `Send + Sync`: share one between threads. Heads can be swapped
/// or added while other threads run the model: each call sees the heads as they were when it
/// started, never a mix.
pub struct Model {
    graph: OnnxGraph,
    /// The file's own split and each node's trunk membership in it.
    base_split: Split,
    base_needs: BaseNeeds,
    layout: RwLock<Arc<Layout>>,
    executor: Executor,
    /// The threads of hydrant's own CPU ops (more than one thread, own ops on).
    ops_pool: Option<Arc<SpinPool>>,
    threads: usize,
    device: device::Choice,
    /// Whether batches may run as batch-1 rows (option, or the model has convolutions).
    rows_wanted: bool,
    /// Segments computing arbitrary graph tensors, by tensor set (for [`Model::tensors`]).
    probes: Mutex<HashMap<Vec<String>, Arc<CpuSegment>>>,
    /// The element type of tensors on the GPU.
    precision: Precision,
    /// The CUDA device, when the model runs on one.
    #[cfg(feature = "cuda")]
    gpu: Option<Arc<crate::backend::cuda::context::GpuContext>>,
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

    /// Loads a trunk (an ONNX model) and a head file: each head in the file replaces the
    /// model's head of the same name, or is added when the model has none.
    pub fn load_parts(
        onnx: impl AsRef<Path>,
        heads: impl AsRef<Path>,
        options: LoadOptions,
    ) -> Result<Model> {
        let model = Model::load(onnx, options)?;
        model.set_heads(&HeadSet::load(heads)?)?;
        Ok(model)
    }

    /// Loads a whole model from one safetensors file holding a trunk (`hydrant.trunk`) and
    /// heads; it is built as an ONNX graph in memory and runs through the same engine, cut at the
    /// tensors the heads read.
    pub fn load_safetensors(path: impl AsRef<Path>, options: LoadOptions) -> Result<Model> {
        Model::from_head_set(&HeadSet::load(path)?, options)
    }

    /// [`Model::load_safetensors`] from a file already read.
    pub fn from_head_set(set: &HeadSet, mut options: LoadOptions) -> Result<Model> {
        let trunk = set.trunk.as_ref().ok_or_else(|| {
            Error::InvalidModel(
                "the head file holds no trunk (`hydrant.trunk`): load it beside an ONNX model"
                    .into(),
            )
        })?;
        if set.heads.is_empty() {
            return Err(Error::InvalidModel("the file holds a trunk but no heads".into()));
        }
        check_budget(trunk, options.byte_budget())?;
        let proto = crate::graph::build::model_from_parts(trunk, &set.heads)?;
        if let Some(g) = proto.graph.as_ref() {
            crate::graph::limits::check_model(g, None, options.byte_budget())?;
        }
        if options.cut_points.is_empty() {
            let mut cuts: Vec<String> = Vec::new();
            for h in &set.heads {
                if !cuts.iter().any(|c| c == h.spec().input()) {
                    cuts.push(h.spec().input().to_string());
                }
            }
            options.cut_points = cuts;
        }
        Model::from_graph(OnnxGraph::from_proto(proto, None)?, options)
    }

    pub(crate) fn from_graph(graph: OnnxGraph, options: LoadOptions) -> Result<Model> {
        let threads = match options.threads {
            Some(n) if n == 0 || n > MAX_THREADS => {
                return Err(Error::InvalidArgument(format!(
                    "threads = {n}: expected 1..={MAX_THREADS}"
                )))
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let requested =
            device::requested(options.device, std::env::var("HYDRANT_DEVICE").ok().as_deref())?;
        let choice = device::choose(requested, &device::Probe::detect())?;
        #[cfg(feature = "cuda")]
        let (choice, gpu) = gpu::open(choice, requested)?;
        if choice.device == Device::Cpu && options.precision != Precision::F32 {
            return Err(Error::InvalidArgument(format!(
                "precision {} needs the CUDA backend; the model runs on the CPU ({})",
                options.precision, choice.reason
            )));
        }
        let split = split::split(&graph, &options.cut_points)?;
        let base_needs = layout::base_needs(&graph, &split);
        let own_ops = crate::backend::cpu_ops::enabled(options.own_cpu_ops);
        let layout = Layout::from_split(&graph, &split, own_ops);
        let executor =
            if threads > 1 { Executor::multithread(threads) } else { Executor::SingleThread };
        let rows_wanted = options
            .batch_as_rows
            .unwrap_or_else(|| graph.nodes().iter().any(|n| n.op_type == "Conv"));
        let mut model = Model {
            graph,
            base_split: split,
            base_needs,
            layout: RwLock::new(Arc::new(layout)),
            executor,
            ops_pool: (threads > 1 && own_ops)
                .then(|| SpinPool::new(threads).map(Arc::new))
                .flatten(),
            threads,
            device: choice,
            rows_wanted,
            probes: Mutex::new(HashMap::new()),
            precision: options.precision,
            #[cfg(feature = "cuda")]
            gpu,
        };
        if matches!(model.device.device, Device::Cuda(_)) {
            let parts = {
                let layout = model.layout();
                let routes = model.routes(&layout);
                let all: Vec<route::Route> =
                    routes.trunk.iter().chain(&routes.heads).cloned().collect();
                route::describe(&all)
            };
            model.device.reason =
                format!("{}; {} storage; {parts}", model.device.reason, model.precision);
        }
        Ok(model)
    }

    /// The element type of tensors on the GPU ([`LoadOptions::precision`]).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The current layout (one consistent snapshot).
    fn layout(&self) -> Arc<Layout> {
        self.layout.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The model's declared inputs.
    pub fn inputs(&self) -> &[TensorSpec] {
        self.graph.inputs()
    }

    /// Head names, in order (the file's heads in the order of their first output, then heads
    /// added at run time).
    pub fn head_names(&self) -> Vec<String> {
        self.layout().heads.iter().map(|h| h.part.name.clone()).collect()
    }

    /// How the graph is split now (trunk parts, heads and their cut points).
    pub fn split(&self) -> Split {
        self.layout().split(&self.graph)
    }

    /// Intra-op thread count.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The device the model runs on (never `Auto`).
    pub fn device(&self) -> Device {
        self.device.device
    }

    /// Why the model runs on [`Model::device`] (`requested`, or what automatic selection
    /// found, such as `auto: no CUDA driver (libcuda) found`). On a CUDA device it goes on with
    /// the storage type and where each part runs as loaded (`requested; f32 storage;
    /// trunk[cls]: cuda; head lbl: cpu (Cast node `to_float`: no GPU kernel)`); after heads are
    /// swapped or added, [`Model::part_devices`] says where the parts run now.
    pub fn device_reason(&self) -> &str {
        &self.device.reason
    }

    /// Name and ONNX op type of node `index` (as in [`Split`]'s node lists).
    pub fn node(&self, index: usize) -> Option<(&str, &str)> {
        self.graph.nodes().get(index).map(|n| (n.name.as_str(), n.op_type.as_str()))
    }

    /// True when `name` is a tensor of the model graph (input, initializer or node output).
    pub fn has_tensor(&self, name: &str) -> bool {
        self.graph.has_tensor(name)
    }

    /// Runs the trunk once and the named heads (all heads when `heads` is empty).
    pub fn run(&self, inputs: &[(&str, &Tensor)], heads: &[&str]) -> Result<Outputs> {
        let layout = self.layout();
        let heads = head_indices(&layout, heads)?;
        let env = self.check_inputs(inputs)?;
        #[cfg(feature = "cuda")]
        if let Some(gpu) = self.routed(&layout) {
            let routes = self.routes(&layout);
            let mut values = accel::Values::new(&gpu, env);
            self.accel_trunk(&layout, routes, &mut values, &heads)?;
            return Outputs::from_values(self.accel_heads(&layout, routes, &mut values, &heads)?);
        }
        let outputs = self.by_rows(&layout, env, |env| {
            let features = trunk_values(&layout, env, &heads)?;
            head_values(&layout, &features.values, &heads)
        })?;
        Outputs::from_values(outputs)
    }

    /// Runs the whole trunk and returns every cut-point tensor.
    pub fn trunk(&self, inputs: &[(&str, &Tensor)]) -> Result<Features> {
        let layout = self.layout();
        let all: Vec<usize> = (0..layout.heads.len()).collect();
        self.features(&layout, inputs, &all)
    }

    /// Runs only the trunk segments the named heads need (all when empty).
    pub fn trunk_for(&self, inputs: &[(&str, &Tensor)], heads: &[&str]) -> Result<Features> {
        let layout = self.layout();
        let heads = head_indices(&layout, heads)?;
        self.features(&layout, inputs, &heads)
    }

    /// Runs the named heads (all when empty) on features from [`Model::trunk`].
    pub fn heads(&self, features: &Features, heads: &[&str]) -> Result<Outputs> {
        let layout = self.layout();
        let heads = head_indices(&layout, heads)?;
        #[cfg(feature = "cuda")]
        if let Some(gpu) = self.routed(&layout) {
            let routes = self.routes(&layout);
            let mut values = accel::Values::new(&gpu, features.values.clone());
            return Outputs::from_values(self.accel_heads(&layout, routes, &mut values, &heads)?);
        }
        let outputs = self
            .by_rows(&layout, features.values.clone(), |env| head_values(&layout, &env, &heads))?;
        Outputs::from_values(outputs)
    }

    /// Computes any graph tensors (trunk tensors a new head could read, or inputs) for these
    /// inputs — what training a head on a tensor that is not yet a cut point needs.
    pub fn tensors(&self, inputs: &[(&str, &Tensor)], names: &[&str]) -> Result<Features> {
        let layout = self.layout();
        let mut key: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        key.sort();
        key.dedup();
        for n in &key {
            if !self.graph.has_tensor(n) {
                return Err(Error::UnknownTensor(n.clone()));
            }
            if self.graph.const_tensors.contains(n) {
                return Err(Error::InvalidArgument(format!(
                    "`{n}` is a constant, not a computed tensor"
                )));
            }
        }
        let computed: Vec<String> =
            key.iter().filter(|n| self.graph.producer.contains_key(*n)).cloned().collect();
        let segment = if computed.is_empty() {
            None
        } else {
            let mut probes = self.probes.lock().unwrap_or_else(|e| e.into_inner());
            let seg = probes.entry(computed.clone()).or_insert_with(|| {
                let mut nodes: Vec<usize> =
                    computed.iter().flat_map(|t| layout::ancestors(&self.graph, t)).collect();
                nodes.sort_unstable();
                nodes.dedup();
                Arc::new(CpuSegment::with_outputs(
                    &self.graph,
                    &nodes,
                    format!("tensors {}", computed.join(",")),
                    &computed,
                    layout.own_ops,
                ))
            });
            Some(seg.clone())
        };
        let env = self.check_inputs(inputs)?;
        let values = self.by_rows(&layout, env, |env| {
            let mut out: Vec<(String, TValue)> = match &segment {
                Some(seg) => seg.run(&env)?.into_iter().filter(|(n, _)| key.contains(n)).collect(),
                None => Vec::new(),
            };
            for n in &key {
                if let Some(v) = env.get(n) {
                    out.push((n.clone(), v.clone()));
                }
            }
            out.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(out)
        })?;
        Ok(Features { values: values.into_iter().collect() })
    }

    /// The head `name` as a trainable head: imported from the model file's nodes (their
    /// initializers as starting weights), or the head set in at run time.
    pub fn trainable_head(&self, name: &str) -> Result<Head> {
        let layout = self.layout();
        let slot = &layout.heads[layout.head_index(name)?];
        match &slot.source {
            HeadSource::Layers(h) => Ok((**h).clone()),
            HeadSource::Graph(_) => import_head(&self.graph, &slot.part)
                .map_err(|e| Error::NotTrainable { head: name.to_string(), reason: e.to_string() }),
        }
    }

    /// For every head, whether it is trainable (and if not, which node prevents it).
    pub fn trainability(&self) -> Vec<(String, std::result::Result<Head, NotTrainable>)> {
        let layout = self.layout();
        layout
            .heads
            .iter()
            .map(|slot| {
                let r = match &slot.source {
                    HeadSource::Layers(h) => Ok((**h).clone()),
                    HeadSource::Graph(_) => import_head(&self.graph, &slot.part),
                };
                (slot.part.name.clone(), r)
            })
            .collect()
    }

    /// Replaces head `name` by `head` (it keeps the name and output names of the head it
    /// replaces; it may read another trunk tensor). Calls already running finish with the old
    /// head; calls starting after this returns use the new one.
    pub fn swap_head(&self, name: &str, head: &Head) -> Result<()> {
        let mut guard = self.layout.write().unwrap_or_else(|e| e.into_inner());
        let index = guard.head_index(name)?;
        let next = guard.with_head(&self.graph, &self.base_needs, Some(index), head)?;
        self.check_layout(&next, index)?;
        *guard = Arc::new(next);
        Ok(())
    }

    /// Adds `head` as a new head of the model, reading the trunk tensor (or input) its spec
    /// names, with outputs named after the head.
    pub fn add_head(&self, head: &Head) -> Result<()> {
        let mut guard = self.layout.write().unwrap_or_else(|e| e.into_inner());
        let next = guard.with_head(&self.graph, &self.base_needs, None, head)?;
        self.check_layout(&next, next.heads.len() - 1)?;
        *guard = Arc::new(next);
        Ok(())
    }

    /// Sets every head of `set`: swapping where the model has a head of that name, adding
    /// otherwise. All or nothing: on error the model keeps its heads.
    pub fn set_heads(&self, set: &HeadSet) -> Result<()> {
        let mut guard = self.layout.write().unwrap_or_else(|e| e.into_inner());
        let mut next: Option<Layout> = None;
        for head in &set.heads {
            let cur = next.as_ref().unwrap_or(&guard);
            let index = cur.head_index(head.name()).ok();
            let l = cur.with_head(&self.graph, &self.base_needs, index, head)?;
            let i = index.unwrap_or(l.heads.len() - 1);
            self.check_layout(&l, i)?;
            next = Some(l);
        }
        if let Some(l) = next {
            *guard = Arc::new(l);
        }
        Ok(())
    }

    /// Checks that head `index` of `layout` can be planned for the model's inputs at batch 1
    /// (shapes fit), so a bad head is refused when set, not when run.
    fn check_layout(&self, layout: &Layout, index: usize) -> Result<()> {
        let Some(mut env) = self.input_facts(1) else { return Ok(()) };
        for part in &layout.trunk {
            if !part.heads.contains(&index) {
                continue;
            }
            let facts: Option<Vec<Fact>> =
                part.segment.inputs.iter().map(|n| env.get(n).cloned()).collect();
            let Some(facts) = facts else { return Ok(()) };
            let (_, outs) = part.segment.cost(&facts)?;
            env.extend(part.segment.outputs.iter().cloned().zip(outs));
        }
        if let Some(seg) = &layout.heads[index].segment {
            let facts: Option<Vec<Fact>> = seg.inputs.iter().map(|n| env.get(n).cloned()).collect();
            if let Some(facts) = facts {
                seg.cost(&facts).map_err(|e| {
                    Error::InvalidArgument(format!(
                        "head `{}` does not fit the tensor it reads: {e}",
                        layout.heads[index].part.name
                    ))
                })?;
            }
        }
        Ok(())
    }

    /// Input facts with symbolic dimensions set to `batch` (leading) or 1.
    fn input_facts(&self, batch: usize) -> Option<HashMap<String, Fact>> {
        let mut env = HashMap::new();
        for i in self.graph.inputs() {
            let shape = i.shape.iter().enumerate().map(|(k, d)| match d {
                Dim::Fixed(n) => *n,
                Dim::Symbolic(_) if k == 0 => batch,
                Dim::Symbolic(_) => 1,
            });
            env.insert(i.name.clone(), (i.dtype, shape.collect()));
        }
        Some(env)
    }

    fn features(
        &self,
        layout: &Layout,
        inputs: &[(&str, &Tensor)],
        heads: &[usize],
    ) -> Result<Features> {
        let env = self.check_inputs(inputs)?;
        #[cfg(feature = "cuda")]
        if let Some(gpu) = self.routed(layout) {
            let mut values = accel::Values::new(&gpu, env);
            self.accel_trunk(layout, self.routes(layout), &mut values, heads)?;
            let keep = cut_points(layout, heads);
            return Ok(Features { values: values.features(&keep)? });
        }
        let values = self.by_rows(layout, env, |env| {
            let mut named: Vec<(String, TValue)> =
                trunk_values(layout, env, heads)?.values.into_iter().collect();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(named)
        })?;
        Ok(Features { values: values.into_iter().collect() })
    }

    /// Runs `f` on `env`, either once or, for a batch run as rows, once per batch-1 row on the
    /// model's threads; row results (the same names in the same order each time) are stacked.
    fn by_rows(
        &self,
        layout: &Layout,
        env: Env,
        f: impl Fn(Env) -> Result<Vec<(String, TValue)>> + Sync,
    ) -> Result<Vec<(String, TValue)>> {
        let n = match rows::common_rows(&env) {
            Some(n) if n > 1 && self.rows_apply(layout) => n,
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
    /// the batch on axis 0 (typed at batch 1 and 2 and compared, once per layout).
    fn rows_apply(&self, layout: &Layout) -> bool {
        self.rows_wanted
            && *layout.rows_valid.get_or_init(|| {
                let (Some(one), Some(two)) = (self.facts_at(layout, 1), self.facts_at(layout, 2))
                else {
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
    fn facts_at(&self, layout: &Layout, batch: usize) -> Option<HashMap<String, Fact>> {
        if !self.graph.inputs().iter().all(|i| matches!(i.shape.first(), Some(Dim::Symbolic(_)))) {
            return None;
        }
        let mut env = self.input_facts(batch)?;
        let segments = layout.trunk.iter().map(|t| t.segment.as_ref());
        for seg in segments.chain(layout.heads.iter().filter_map(|h| h.segment.as_deref())) {
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
        let layout = self.layout();
        let mut env = self.check_inputs(inputs)?;
        let segments = layout.trunk.iter().map(|t| t.segment.as_ref());
        let segments = segments.chain(layout.heads.iter().filter_map(|h| h.segment.as_deref()));
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
        let layout = self.layout();
        let mut facts = self.input_facts(1);
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
        let mut trunk_nodes: Vec<usize> = Vec::new();
        for t in &layout.trunk {
            trunk_flops = trunk_flops.zip(cost(&t.segment)).map(|(a, b)| a + b);
            trunk_nodes.extend(&t.nodes);
        }
        trunk_nodes.sort_unstable();
        let trunk = PartStats {
            nodes: trunk_nodes.len(),
            params: self.graph.param_count(&trunk_nodes),
            flops: trunk_flops,
        };
        let heads = layout
            .heads
            .iter()
            .map(|h| {
                let flops = h.segment.as_deref().map_or(Some(0), &mut cost);
                match &h.source {
                    HeadSource::Graph(_) => PartStats {
                        nodes: h.part.nodes.len(),
                        params: self.graph.param_count(&h.part.nodes),
                        flops,
                    },
                    HeadSource::Layers(head) => PartStats {
                        nodes: head.spec().layers.len(),
                        params: head.param_count(),
                        flops,
                    },
                }
            })
            .collect();
        Summary { trunk, heads }
    }

    /// Whether head `name` comes from the model file (`false`: set in at run time).
    pub fn head_from_file(&self, name: &str) -> Result<bool> {
        let layout = self.layout();
        Ok(matches!(layout.heads[layout.head_index(name)?].source, HeadSource::Graph(_)))
    }

    /// The file's own split, before any head was swapped or added.
    pub fn file_split(&self) -> &Split {
        &self.base_split
    }

    /// Runs `f` with the model's threads: tract's executor, and the spinning pool of
    /// hydrant's own ops.
    fn scoped<R>(&self, f: impl FnOnce() -> R) -> R {
        let ops_pool = self.ops_pool.as_ref();
        parallel::with_pool(ops_pool, || multithread_tract_scope(self.executor.clone(), f))
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
}

fn head_indices(layout: &Layout, names: &[&str]) -> Result<Vec<usize>> {
    if names.is_empty() {
        return Ok((0..layout.heads.len()).collect());
    }
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        let ix = layout.head_index(n)?;
        if !out.contains(&ix) {
            out.push(ix);
        }
    }
    Ok(out)
}

fn trunk_values(layout: &Layout, mut env: Env, heads: &[usize]) -> Result<Features> {
    for part in &layout.trunk {
        if part.heads.iter().any(|h| heads.contains(h)) {
            for (name, v) in part.segment.run(&env)? {
                env.insert(name, v);
            }
        }
    }
    let keep = cut_points(layout, heads);
    env.retain(|k, _| keep.contains(&k));
    Ok(Features { values: env })
}

/// The trunk tensors `heads` read.
fn cut_points<'a>(layout: &'a Layout, heads: &[usize]) -> Vec<&'a String> {
    let mut keep: Vec<&String> =
        heads.iter().flat_map(|&h| layout.heads[h].part.cut_points.iter()).collect();
    keep.sort();
    keep.dedup();
    keep
}

fn head_values(layout: &Layout, features: &Env, heads: &[usize]) -> Result<Vec<(String, TValue)>> {
    let mut out = Vec::new();
    for &h in heads {
        let head = &layout.heads[h];
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

/// Checks that one sample's trunk tensors (f32) each fit the memory budget, so that a file
/// declaring absurd activation sizes is refused when loaded, not when run.
fn check_budget(trunk: &crate::train::trunk::Trunk, budget: u64) -> Result<()> {
    for (name, shape) in trunk.shapes()? {
        let bytes = shape.iter().product::<usize>() as u64 * 4;
        if bytes > budget {
            return Err(Error::InvalidModel(format!(
                "trunk tensor `{name}` of shape {shape:?} needs {bytes} bytes per sample, over the memory limit of {budget}"
            )));
        }
    }
    Ok(())
}
#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
    }

    fn cpu_model(name: &str) -> Model {
        Model::load(fixture(name), LoadOptions::new().device(Device::Cpu)).unwrap()
    }

    #[test]
    fn a_cpu_model_says_every_part_runs_on_the_cpu() {
        let m = cpu_model("hydranet.onnx");
        let parts = m.part_devices();
        assert_eq!(parts.len(), m.split().trunk.len() + m.head_names().len());
        assert!(parts.iter().all(|(_, d)| d == "cpu"), "{parts:?}");
        assert!(parts.iter().any(|(p, _)| p.starts_with("trunk[")), "{parts:?}");
        assert!(parts.iter().any(|(p, _)| p.starts_with("head ")), "{parts:?}");
        assert_eq!(m.precision(), Precision::F32);
        assert!(!m.device_reason().contains("storage"), "{}", m.device_reason());
    }

    #[test]
    fn half_precision_on_the_cpu_is_refused() {
        for p in [Precision::F16, Precision::Bf16] {
            let e = Model::load(
                fixture("single.onnx"),
                LoadOptions::new().device(Device::Cpu).precision(p),
            )
            .unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
            let text = e.to_string();
            assert!(text.contains(&format!("precision {p} needs the CUDA backend")), "{text}");
        }
        let m = Model::load(
            fixture("single.onnx"),
            LoadOptions::new().device(Device::Cpu).precision(Precision::F32),
        )
        .unwrap();
        assert_eq!(m.device(), Device::Cpu);
    }

    #[test]
    fn model_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Model>();
        check::<Features>();
    }
}
