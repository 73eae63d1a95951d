//! Runs on an accelerator: each trunk part and head runs on its route (see [`route`]),
//! accelerator parts as segments built on first use and kept with the part, CPU parts on tract.
//! A tensor moves between host and device only when a part on the other side reads it, at most
//! once each way per run. The device is the [`Accel`] trait: CUDA in `gpu.rs` (feature `cuda`),
//! and in this file's tests a host stand-in that counts every crossing, so the routing logic is
//! tested in every build. Device heads sharing a first-layer GEMM (`fuse.rs`) run it once.
//!
//! [`route`]: super::route

#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

use super::fuse::{first_gemm, fused_groups, stack, FusedGroup, StackedGemm};
use super::layout::{GpuSlot, HeadSlot, HeadSource, Layout, Routes};
use super::route::{standalone_graph, Backend};
use super::Model;
use crate::backend::cpu::CpuSegment;
use crate::backend::rows::Env;
use crate::error::{Error, Result};
use crate::graph::OnnxGraph;
use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;
use tract_onnx::prelude::TValue;

/// A device that holds tensors and runs segments of a graph.
pub(super) trait Accel {
    /// A tensor on the device.
    type Tensor: Send + Sync + 'static;
    /// A segment ready to run on the device.
    type Segment: Send + Sync + 'static;
    /// Copies host value `v` (called `name`) to the device.
    fn upload(&self, name: &str, v: &TValue) -> Result<Self::Tensor>;
    /// Copies a device tensor (called `name`) to the host.
    fn download(&self, name: &str, t: &Self::Tensor) -> Result<TValue>;
    /// Prepares nodes `nodes` of `graph`, handing out `outputs`.
    fn build(
        &self,
        graph: &OnnxGraph,
        nodes: &[usize],
        outputs: &[String],
    ) -> Result<Self::Segment>;
    /// Runs a segment on device inputs; returns its outputs, on the device.
    fn run(
        &self,
        seg: &Self::Segment,
        inputs: &HashMap<String, Arc<Self::Tensor>>,
    ) -> Result<HashMap<String, Self::Tensor>>;
    /// Stacked first-layer weights of several heads, ready on the device; `None` when the
    /// device runs no shared GEMM (its heads then run separately).
    type Stacked: Send + Sync + 'static;
    /// Prepares `gemm` (its weights uploaded once).
    fn stack(&self, gemm: &StackedGemm) -> Result<Option<Self::Stacked>>;
    /// Runs a stacked GEMM on `x`: one product, then per head its columns with its activation,
    /// in the order of the heads of the [`StackedGemm`] it was prepared from.
    fn run_stacked(&self, s: &Self::Stacked, x: &Self::Tensor) -> Result<Vec<Self::Tensor>>;
}

/// The values of one run, on the host, on the device, or both.
pub(super) struct Values<'a, A: Accel> {
    accel: &'a A,
    host: Env,
    device: HashMap<String, Arc<A::Tensor>>,
}

impl<'a, A: Accel> Values<'a, A> {
    pub fn new(accel: &'a A, host: Env) -> Values<'a, A> {
        Values { accel, host, device: HashMap::new() }
    }

    /// Tensor `name` on the host, downloaded (once) when only the device has it.
    fn host(&mut self, name: &str) -> Result<TValue> {
        if let Some(v) = self.host.get(name) {
            return Ok(v.clone());
        }
        let t = self.device.get(name).ok_or_else(|| Error::MissingFeature(name.to_string()))?;
        let v = self.accel.download(name, t)?;
        self.host.insert(name.to_string(), v.clone());
        Ok(v)
    }

    /// Tensor `name` on the device, uploaded (once) when only the host has it.
    fn device(&mut self, name: &str) -> Result<Arc<A::Tensor>> {
        if let Some(t) = self.device.get(name) {
            return Ok(t.clone());
        }
        let v = self.host.get(name).ok_or_else(|| Error::MissingFeature(name.to_string()))?;
        let t = Arc::new(self.accel.upload(name, v)?);
        self.device.insert(name.to_string(), t.clone());
        Ok(t)
    }

    /// The host values of `names`, as [`Features`](super::Features) hold them.
    pub fn features(&mut self, names: &[&String]) -> Result<HashMap<String, TValue>> {
        names.iter().map(|n| Ok(((*n).clone(), self.host(n)?))).collect()
    }
}

/// A failure of part `part` on the accelerator, named after the part.
fn part_error(part: &str, e: Error) -> Error {
    Error::Backend { segment: format!("{part} (GPU)"), message: e.to_string() }
}

impl Model {
    /// Runs the trunk parts that `heads` need, each on its route.
    pub(super) fn accel_trunk<A: Accel>(
        &self,
        layout: &Layout,
        routes: &Routes,
        values: &mut Values<'_, A>,
        heads: &[usize],
    ) -> Result<()> {
        for (part, route) in layout.trunk.iter().zip(&routes.trunk) {
            if !part.heads.iter().any(|h| heads.contains(h)) {
                continue;
            }
            match route.backend {
                Backend::Cpu => self.cpu_part(layout, values, &part.segment)?,
                Backend::Cuda => {
                    let named = |e| part_error(&part.segment.name, e);
                    let seg = cached(&part.gpu, || {
                        values.accel.build(&self.graph, &part.nodes, &part.segment.outputs)
                    })
                    .map_err(named)?;
                    accel_part(values, &seg, &part.segment.inputs).map_err(named)?;
                }
            }
        }
        Ok(())
    }

    /// Runs `heads` (the trunk values they read are in `values`), each on its route; returns
    /// their outputs on the host in head order. Device heads whose first layers share a GEMM
    /// (all of the group asked for) run it once, then each the rest of its nodes.
    pub(super) fn accel_heads<A: Accel>(
        &self,
        layout: &Layout,
        routes: &Routes,
        values: &mut Values<'_, A>,
        heads: &[usize],
    ) -> Result<Vec<(String, TValue)>> {
        let fused = self.run_shared_gemms(layout, routes, values, heads)?;
        let mut out = Vec::new();
        for &h in heads {
            let slot = &layout.heads[h];
            let named = |e| part_error(&format!("head {}", slot.part.name), e);
            if let Some(&(group, i)) = fused.get(&h) {
                let (graph, gpu) = (group.graph(i, &self.graph), &group.rest[i].1);
                let head = &group.gemm.heads[i];
                if !head.rest.is_empty() {
                    let outputs = &slot.part.outputs;
                    let built = cached(gpu, || values.accel.build(graph, &head.rest, outputs))
                        .map_err(named)?;
                    accel_part(values, &built, &group.rest_inputs(i, &self.graph))
                        .map_err(named)?;
                }
            } else if let Some(seg) = &slot.segment {
                match routes.heads[h].backend {
                    Backend::Cpu => self.cpu_part(layout, values, seg)?,
                    Backend::Cuda => {
                        let built = cached(&slot.gpu, || match &slot.source {
                            HeadSource::Graph(_) => {
                                values.accel.build(&self.graph, &slot.part.nodes, &seg.outputs)
                            }
                            HeadSource::Layers(_) => {
                                let g = standalone_graph(seg)?;
                                let nodes: Vec<usize> = (0..g.nodes().len()).collect();
                                values.accel.build(&g, &nodes, &seg.outputs)
                            }
                        })
                        .map_err(named)?;
                        accel_part(values, &built, &seg.inputs).map_err(named)?;
                    }
                }
            }
            for name in &slot.part.outputs {
                out.push((name.clone(), values.host(name).map_err(named)?));
            }
        }
        Ok(out)
    }

    /// Runs the shared first-layer GEMMs of `layout` that a run of `heads` fuses; returns, per
    /// head whose first layer ran so, its group and its place in the group.
    fn run_shared_gemms<'l, A: Accel>(
        &self,
        layout: &'l Layout,
        routes: &Routes,
        values: &mut Values<'_, A>,
        heads: &[usize],
    ) -> Result<HashMap<usize, (&'l FusedGroup, usize)>> {
        let groups = layout.fused.get_or_init(|| self.plan_shared_gemms(layout));
        let mut fused = HashMap::new();
        let on_device = |h: usize| routes.heads[h].backend == Backend::Cuda;
        let chosen = fused_groups(groups.iter().map(|g| &g.gemm), heads, on_device);
        for g in chosen.into_iter().map(|g| &groups[g]) {
            let names: Vec<&str> =
                g.gemm.heads.iter().map(|h| layout.heads[h.head].part.name.as_str()).collect();
            let named = |e| part_error(&format!("first layer of heads {}", names.join(",")), e);
            let stacked = cached(&g.gpu, || values.accel.stack(&g.gemm)).map_err(named)?;
            let Some(stacked) = stacked.as_ref() else { continue };
            let x = values.device(&g.gemm.input).map_err(named)?;
            let outs = values.accel.run_stacked(stacked, &x).map_err(named)?;
            if outs.len() != g.gemm.heads.len() {
                return Err(named(Error::backend("stacked GEMM", "one output per head expected")));
            }
            for (i, (head, t)) in g.gemm.heads.iter().zip(outs).enumerate() {
                values.device.insert(head.output.clone(), Arc::new(t));
                fused.insert(head.head, (g, i));
            }
        }
        Ok(fused)
    }

    /// The shared first-layer GEMMs of the heads of `layout` (whichever device they run on:
    /// a run fuses only the groups whose heads are all on the device).
    fn plan_shared_gemms(&self, layout: &Layout) -> Vec<FusedGroup> {
        let mut graphs: HashMap<usize, Option<Arc<OnnxGraph>>> = HashMap::new();
        let mut firsts = Vec::new();
        for (h, slot) in layout.heads.iter().enumerate() {
            let Some((graph, nodes)) = self.head_graph(slot) else { continue };
            let Some(seg) = &slot.segment else { continue };
            let g = graph.as_deref().unwrap_or(&self.graph);
            let first = seg
                .inputs
                .iter()
                .find_map(|input| first_gemm(g, &nodes, &slot.part.outputs, input));
            if let Some(first) = first {
                firsts.push((h, first));
                graphs.insert(h, graph);
            }
        }
        stack(&firsts)
            .into_iter()
            .map(|gemm| FusedGroup {
                rest: gemm
                    .heads
                    .iter()
                    .map(|h| (graphs[&h.head].clone(), GpuSlot::default()))
                    .collect(),
                gemm,
                gpu: GpuSlot::default(),
            })
            .collect()
    }

    /// The graph a head's nodes belong to (`None`: the model's) and those nodes; `None` for a
    /// head computing nothing or one whose graph cannot be made.
    #[allow(clippy::type_complexity)]
    fn head_graph(&self, slot: &HeadSlot) -> Option<(Option<Arc<OnnxGraph>>, Vec<usize>)> {
        let seg = slot.segment.as_ref()?;
        match &slot.source {
            HeadSource::Graph(_) => Some((None, slot.part.nodes.clone())),
            HeadSource::Layers(_) => {
                let g = standalone_graph(seg).ok()?;
                let nodes = (0..g.nodes().len()).collect();
                Some((Some(Arc::new(g)), nodes))
            }
        }
    }

    /// Runs a CPU part on host values (as batch-1 rows where the model runs batches so).
    fn cpu_part<A: Accel>(
        &self,
        layout: &Layout,
        values: &mut Values<'_, A>,
        seg: &CpuSegment,
    ) -> Result<()> {
        let env: Env =
            seg.inputs.iter().map(|n| Ok((n.clone(), values.host(n)?))).collect::<Result<_>>()?;
        for (name, v) in self.by_rows(layout, env, |env| seg.run(&env))? {
            values.host.insert(name, v);
        }
        Ok(())
    }
}

/// The device object held by `slot` (a segment, stacked weights), built by `build` on first
/// use. A failed build is not kept: the next run tries again.
fn cached<T: Send + Sync + 'static>(
    slot: &GpuSlot,
    build: impl FnOnce() -> Result<T>,
) -> Result<Arc<T>> {
    let mut held = slot.segment.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(seg) = held.as_ref().and_then(|s| s.clone().downcast::<T>().ok()) {
        return Ok(seg);
    }
    let seg = Arc::new(build()?);
    *held = Some(seg.clone() as Arc<dyn Any + Send + Sync>);
    Ok(seg)
}

/// Runs an accelerator segment: its `inputs` on the device (uploaded where needed), its
/// outputs kept there.
fn accel_part<A: Accel>(
    values: &mut Values<'_, A>,
    seg: &A::Segment,
    inputs: &[String],
) -> Result<()> {
    let inputs: HashMap<String, Arc<A::Tensor>> =
        inputs.iter().map(|n| Ok((n.clone(), values.device(n)?))).collect::<Result<_>>()?;
    for (name, t) in values.accel.run(seg, &inputs)? {
        values.device.insert(name, Arc::new(t));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::fusion::Act;
    use crate::model::route::Route;
    use crate::model::{Device, LoadOptions};
    use crate::train::{Head, Init};
    use std::path::Path;
    use std::sync::Mutex;
    use tract_onnx::prelude::IntoTValue;

    /// A stand-in device: tensors stay host values, segments run on tract; every upload,
    /// download and build is recorded.
    #[derive(Default)]
    struct HostAccel {
        uploads: Mutex<Vec<String>>,
        downloads: Mutex<Vec<String>>,
        builds: Mutex<Vec<String>>,
        /// Heads of each stacked GEMM prepared, and of each run.
        stacks: Mutex<Vec<String>>,
        stacked_runs: Mutex<Vec<String>>,
        fail_runs: bool,
        /// The device runs no shared GEMM.
        no_shared_gemm: bool,
    }

    fn head_list(g: &StackedGemm) -> String {
        g.heads.iter().map(|h| h.head.to_string()).collect::<Vec<_>>().join(",")
    }

    /// `act(x)` on the host for the activations the fixtures use.
    fn apply(act: Act, x: f32) -> f32 {
        match act {
            Act::None => x,
            Act::Relu => x.max(0.0),
            other => panic!("no host reference for {other:?}"),
        }
    }

    impl Accel for HostAccel {
        type Tensor = TValue;
        type Segment = CpuSegment;
        fn upload(&self, name: &str, v: &TValue) -> Result<TValue> {
            self.uploads.lock().unwrap().push(name.to_string());
            Ok(v.clone())
        }
        fn download(&self, name: &str, t: &TValue) -> Result<TValue> {
            self.downloads.lock().unwrap().push(name.to_string());
            Ok(t.clone())
        }
        fn build(
            &self,
            graph: &OnnxGraph,
            nodes: &[usize],
            outputs: &[String],
        ) -> Result<CpuSegment> {
            self.builds.lock().unwrap().push(outputs.join(","));
            Ok(CpuSegment::with_outputs(graph, nodes, "stand-in".into(), outputs, false))
        }
        fn run(
            &self,
            seg: &CpuSegment,
            inputs: &HashMap<String, Arc<TValue>>,
        ) -> Result<HashMap<String, TValue>> {
            if self.fail_runs {
                return Err(Error::backend("cuda:0", "CUDA_ERROR_LAUNCH_FAILED"));
            }
            let env: Env = inputs.iter().map(|(k, v)| (k.clone(), (**v).clone())).collect();
            Ok(seg.run(&env)?.into_iter().collect())
        }
        type Stacked = StackedGemm;
        fn stack(&self, g: &StackedGemm) -> Result<Option<StackedGemm>> {
            self.stacks.lock().unwrap().push(head_list(g));
            Ok((!self.no_shared_gemm).then(|| g.clone()))
        }
        fn run_stacked(&self, g: &StackedGemm, x: &TValue) -> Result<Vec<TValue>> {
            self.stacked_runs.lock().unwrap().push(head_list(g));
            let xs = x.try_as_plain_ram().and_then(|r| r.as_slice::<f32>()).unwrap();
            let k = *x.shape().last().unwrap();
            assert_eq!(k, g.k);
            let m = xs.len() / k;
            let y: Vec<f32> = (0..m * g.n())
                .map(|i| {
                    let (r, j) = (i / g.n(), i % g.n());
                    let dot: f32 = (0..k).map(|t| xs[r * k + t] * g.weight[j * k + t]).sum();
                    dot + g.bias[j]
                })
                .collect();
            let outs = g.heads.iter().map(|h| {
                let cols: Vec<f32> = (0..m)
                    .flat_map(|r| h.cols.clone().map(move |j| (r, j)))
                    .map(|(r, j)| apply(h.act, y[r * g.n() + j]))
                    .collect();
                let mut shape = x.shape().to_vec();
                *shape.last_mut().unwrap() = h.cols.len();
                tract_onnx::prelude::Tensor::from_shape(&shape, &cols).unwrap().into_tvalue()
            });
            Ok(outs.collect())
        }
    }

    fn hydranet() -> Model {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hydranet.onnx");
        Model::load(path, LoadOptions::new().device(Device::Cpu).threads(2)).unwrap()
    }

    fn input(batch: usize) -> crate::Tensor {
        let n = batch * 3 * 32 * 32;
        let v: Vec<f32> = (0..n).map(|i| ((i * 7919) % 255) as f32 / 127.0 - 1.0).collect();
        crate::Tensor::new(&[batch, 3, 32, 32], v).unwrap()
    }

    /// Routes sending the parts marked `true` to the stand-in device.
    fn routes(layout: &Layout, trunk: &[bool], heads: &[bool]) -> Routes {
        let r = |name: &str, on: bool| Route {
            name: name.into(),
            backend: if on { Backend::Cuda } else { Backend::Cpu },
            why: None,
        };
        assert_eq!((trunk.len(), heads.len()), (layout.trunk.len(), layout.heads.len()));
        Routes {
            trunk: layout.trunk.iter().zip(trunk).map(|(p, &on)| r(&p.segment.name, on)).collect(),
            heads: layout.heads.iter().zip(heads).map(|(h, &on)| r(&h.part.name, on)).collect(),
        }
    }

    fn run(
        m: &Model,
        accel: &HostAccel,
        routes: &Routes,
        x: &crate::Tensor,
        heads: &[usize],
    ) -> Result<Vec<(String, TValue)>> {
        run_on(m, &m.layout(), accel, routes, x, heads)
    }

    /// [`run`] on layout `layout` (a snapshot the model may since have replaced).
    fn run_on(
        m: &Model,
        layout: &Layout,
        accel: &HostAccel,
        routes: &Routes,
        x: &crate::Tensor,
        heads: &[usize],
    ) -> Result<Vec<(String, TValue)>> {
        run_named(m, layout, accel, routes, &[("image", x)], heads)
    }

    /// [`run_on`] with the model's inputs named.
    fn run_named(
        m: &Model,
        layout: &Layout,
        accel: &HostAccel,
        routes: &Routes,
        inputs: &[(&str, &crate::Tensor)],
        heads: &[usize],
    ) -> Result<Vec<(String, TValue)>> {
        let env = m.check_inputs(inputs)?;
        let mut values = Values::new(accel, env);
        m.accel_trunk(layout, routes, &mut values, heads)?;
        m.accel_heads(layout, routes, &mut values, heads)
    }

    fn assert_same(got: &[(String, TValue)], want: &crate::model::Outputs) {
        assert_eq!(got.len(), want.len());
        for ((name, v), (wname, w)) in got.iter().zip(want.iter()) {
            assert_eq!(name, wname);
            let g = crate::backend::cpu::from_tvalue(v).unwrap();
            assert_eq!(g.shape(), w.shape(), "{name}");
            let (g, w) = (g.to_f32(), w.to_f32());
            let (g, w) = (g.as_slice::<f32>().unwrap(), w.as_slice::<f32>().unwrap());
            let err = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(err <= 1e-5, "{name}: {err}");
        }
    }

    #[test]
    fn every_mix_of_routes_computes_what_the_cpu_computes() {
        let m = hydranet();
        let layout = m.layout();
        assert_eq!((layout.trunk.len(), layout.heads.len()), (2, 3));
        let x = input(3);
        let want = m.run(&[("image", &x)], &[]).unwrap();
        for mask in 0..32u32 {
            let on = |bit: u32| mask & (1 << bit) != 0;
            let r = routes(&layout, &[on(0), on(1)], &[on(2), on(3), on(4)]);
            let accel = HostAccel::default();
            let got = run(&m, &accel, &r, &x, &[0, 1, 2]).unwrap();
            assert_same(&got, &want);
            // Each tensor crosses at most once each way.
            for (what, list) in [("uploads", &accel.uploads), ("downloads", &accel.downloads)] {
                let mut list = list.lock().unwrap().clone();
                let n = list.len();
                list.sort();
                list.dedup();
                assert_eq!(list.len(), n, "mask {mask:05b}: repeated {what}: {list:?}");
            }
            // The image goes up only when the first trunk part runs on the device.
            let ups = accel.uploads.lock().unwrap().clone();
            assert_eq!(ups.contains(&"image".to_string()), on(0), "mask {mask:05b}: {ups:?}");
            // Head outputs made on the device come down; nothing else computed on the host does.
            let downs = accel.downloads.lock().unwrap().clone();
            for (bit, head) in [(2, "cls"), (3, "box"), (4, "seg")] {
                assert_eq!(downs.contains(&head.to_string()), on(bit), "{mask:05b} {downs:?}");
            }
            // cls and box share their first GEMM exactly when both run on the device.
            let shared = !accel.stacked_runs.lock().unwrap().is_empty();
            assert_eq!(shared, on(2) && on(3), "mask {mask:05b}");
            if mask == 0 {
                assert!(
                    ups.is_empty() && downs.is_empty() && accel.builds.lock().unwrap().is_empty()
                );
            }
        }
    }

    #[test]
    fn segments_are_built_once_per_part_and_anew_for_a_swapped_head() {
        let m = hydranet();
        let x = input(2);
        let accel = HostAccel { no_shared_gemm: true, ..HostAccel::default() };
        let all = |m: &Model| {
            let layout = m.layout();
            let n = (layout.trunk.len(), layout.heads.len());
            routes(&layout, &vec![true; n.0], &vec![true; n.1])
        };
        let r = all(&m);
        run(&m, &accel, &r, &x, &[0, 1, 2]).unwrap();
        run(&m, &accel, &r, &x, &[0, 1, 2]).unwrap();
        assert_eq!(accel.builds.lock().unwrap().len(), 5, "2 trunk parts + 3 heads, once each");
        let old = m.trainable_head("box").unwrap();
        let new = Head::init(old.spec().clone(), Init::XavierUniform, 3).unwrap();
        m.swap_head("box", &new).unwrap();
        let r = all(&m);
        let got = run(&m, &accel, &r, &x, &[0, 1, 2]).unwrap();
        assert_same(&got, &m.run(&[("image", &x)], &[]).unwrap());
        let builds = accel.builds.lock().unwrap().clone();
        assert_eq!(builds.len(), 6, "only the swapped head is built again: {builds:?}");
        assert_eq!(builds[5], "box");
    }

    #[test]
    fn only_the_trunk_parts_the_asked_heads_need_run() {
        let m = hydranet();
        let layout = m.layout();
        let r = routes(&layout, &[true, true], &[true, true, true]);
        let x = input(1);
        let accel = HostAccel::default();
        let seg = layout.heads.iter().position(|h| h.part.name == "seg").unwrap();
        let got = run(&m, &accel, &r, &x, &[seg]).unwrap();
        assert_same(&got, &m.run(&[("image", &x)], &["seg"]).unwrap());
        assert_eq!(accel.builds.lock().unwrap().len(), 2, "the shared trunk part and seg");
    }

    #[test]
    fn a_failure_on_the_device_is_an_error_naming_the_part() {
        let m = hydranet();
        let layout = m.layout();
        let r = routes(&layout, &[false, false], &[false, true, false]);
        let accel = HostAccel { fail_runs: true, ..HostAccel::default() };
        let e = run(&m, &accel, &r, &input(1), &[0, 1, 2]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("head box (GPU)") && text.contains("CUDA_ERROR_LAUNCH_FAILED"),
            "{text}"
        );
    }

    fn all_on(m: &Model, layout: &Layout) -> Routes {
        let _ = m;
        routes(layout, &vec![true; layout.trunk.len()], &vec![true; layout.heads.len()])
    }

    fn index(layout: &Layout, head: &str) -> usize {
        layout.heads.iter().position(|h| h.part.name == head).unwrap()
    }

    #[test]
    fn device_heads_on_one_tensor_share_one_gemm_computing_what_separate_runs_compute() {
        let x = input(3);
        // Each device keeps its stacked weights with the layout: one model each.
        let m = hydranet();
        let apart = HostAccel { no_shared_gemm: true, ..HostAccel::default() };
        let separate = run(&m, &apart, &all_on(&m, &m.layout()), &x, &[0, 1, 2]).unwrap();
        let m = hydranet();
        let layout = m.layout();
        let r = all_on(&m, &layout);
        let (cls, bx) = (index(&layout, "cls"), index(&layout, "box"));
        let want = m.run(&[("image", &x)], &[]).unwrap();
        assert_same(&separate, &want);
        assert!(apart.stacked_runs.lock().unwrap().is_empty());
        let fused = HostAccel::default();
        for _ in 0..2 {
            let got = run(&m, &fused, &r, &x, &[0, 1, 2]).unwrap();
            assert_same(&got, &want);
            for ((name, a), (_, b)) in got.iter().zip(&separate) {
                let f =
                    |v: &TValue| v.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec();
                let (a, b) = (f(a), f(b));
                let err = a.iter().zip(&b).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(err <= 1e-5, "{name}: fused and separate differ by {err}");
            }
        }
        let pair = format!("{cls},{bx}");
        assert_eq!(*fused.stacks.lock().unwrap(), vec![pair.clone()], "stacked once");
        assert_eq!(*fused.stacked_runs.lock().unwrap(), vec![pair.clone(), pair]);
        // cls is its first layer only; box runs its remaining layers; seg runs whole.
        let builds = fused.builds.lock().unwrap().clone();
        assert_eq!(builds.len(), 4, "{builds:?}");
        assert!(!builds.contains(&"cls".to_string()), "{builds:?}");
        let group = &layout.fused.get().unwrap()[0];
        assert_eq!(group.gemm.input, "/trunk/Flatten_output_0");
        let cols: Vec<_> = group.gemm.heads.iter().map(|h| (h.head, h.cols.clone())).collect();
        assert_eq!(cols, vec![(cls, 0..10), (bx, 10..42)]);
        assert_eq!(group.gemm.heads[1].act, Act::Relu);
    }

    #[test]
    fn a_run_asking_for_part_of_a_group_or_routing_it_apart_runs_its_heads_separately() {
        let m = hydranet();
        let layout = m.layout();
        let (cls, bx) = (index(&layout, "cls"), index(&layout, "box"));
        let x = input(2);
        let accel = HostAccel::default();
        let got = run(&m, &accel, &all_on(&m, &layout), &x, &[cls]).unwrap();
        assert_same(&got, &m.run(&[("image", &x)], &["cls"]).unwrap());
        assert!(accel.stacked_runs.lock().unwrap().is_empty());
        // box on the CPU: cls has no device partner.
        let m = hydranet();
        let layout = m.layout();
        let mut on = vec![true; layout.heads.len()];
        on[bx] = false;
        let r = routes(&layout, &[true, true], &on);
        let accel = HostAccel::default();
        let got = run(&m, &accel, &r, &x, &[0, 1, 2]).unwrap();
        assert_same(&got, &m.run(&[("image", &x)], &[]).unwrap());
        assert!(accel.stacks.lock().unwrap().is_empty());
        assert!(accel.stacked_runs.lock().unwrap().is_empty());
    }

    #[test]
    fn a_swapped_head_restacks_while_a_run_on_the_old_layout_keeps_the_old_weights() {
        let m = hydranet();
        let x = input(2);
        let accel = HostAccel::default();
        let old_layout = m.layout();
        let old_routes = all_on(&m, &old_layout);
        let before = m.run(&[("image", &x)], &[]).unwrap();
        assert_same(&run(&m, &accel, &old_routes, &x, &[0, 1, 2]).unwrap(), &before);
        let old = m.trainable_head("box").unwrap();
        let new = Head::init(old.spec().clone(), Init::XavierUniform, 3).unwrap();
        m.swap_head("box", &new).unwrap();
        let layout = m.layout();
        let after = m.run(&[("image", &x)], &[]).unwrap();
        let got = run(&m, &accel, &all_on(&m, &layout), &x, &[0, 1, 2]).unwrap();
        assert_same(&got, &after);
        assert_eq!(accel.stacks.lock().unwrap().len(), 2, "stacked anew for the new layout");
        assert_eq!(accel.stacked_runs.lock().unwrap().len(), 2, "the swapped head fuses too");
        // A run holding the old layout still computes the old heads.
        let got = run_on(&m, &old_layout, &accel, &old_routes, &x, &[0, 1, 2]).unwrap();
        assert_same(&got, &before);
        assert_eq!(accel.stacks.lock().unwrap().len(), 2, "the old stack is kept with its layout");
    }

    #[test]
    fn three_heads_on_one_tensor_share_one_gemm() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/digits.onnx");
        let m = Model::load(path, LoadOptions::new().device(Device::Cpu).threads(2)).unwrap();
        let layout = m.layout();
        let spec = &m.inputs()[0];
        let shape: Vec<usize> = spec
            .shape
            .iter()
            .map(|d| match d {
                crate::Dim::Fixed(n) => *n,
                crate::Dim::Symbolic(_) => 4,
            })
            .collect();
        let n: usize = shape.iter().product();
        // Inputs of the size of the digits fixture's (0..1): logits within a few units.
        let v: Vec<f32> = (0..n).map(|i| ((i * 37) % 17) as f32 / 16.0).collect();
        let x = crate::Tensor::new(&shape, v).unwrap();
        let inputs = [(spec.name.as_str(), &x)];
        let accel = HostAccel::default();
        let heads: Vec<usize> = (0..layout.heads.len()).collect();
        let got = run_named(&m, &layout, &accel, &all_on(&m, &layout), &inputs, &heads).unwrap();
        assert_same(&got, &m.run(&inputs, &[]).unwrap());
        assert_eq!(*accel.stacked_runs.lock().unwrap(), vec!["0,1,2".to_string()]);
        let cols: Vec<_> =
            layout.fused.get().unwrap()[0].gemm.heads.iter().map(|h| h.cols.clone()).collect();
        assert_eq!(cols, vec![0..10, 10..12, 12..14], "digit, parity, ge5");
    }
}
