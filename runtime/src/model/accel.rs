//! Runs on an accelerator: each trunk part and head runs on its route (see [`route`]),
//! accelerator parts as segments built on first use and kept with the part, CPU parts on tract.
//! A tensor moves between host and device only when a part on the other side reads it, at most
//! once each way per run. The device is the [`Accel`] trait: CUDA in `gpu.rs` (feature `cuda`),
//! and in this file's tests a host stand-in that counts every crossing, so the routing logic is
//! tested in every build.
//!
//! [`route`]: super::route

#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

use super::layout::{GpuSlot, HeadSource, Layout, Routes};
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
                    let seg = accel_segment(values.accel, &part.gpu, || {
                        values.accel.build(&self.graph, &part.nodes, &part.segment.outputs)
                    })
                    .map_err(named)?;
                    accel_part(values, &seg, &part.segment).map_err(named)?;
                }
            }
        }
        Ok(())
    }

    /// Runs `heads` (the trunk values they read are in `values`), each on its route; returns
    /// their outputs on the host in head order.
    pub(super) fn accel_heads<A: Accel>(
        &self,
        layout: &Layout,
        routes: &Routes,
        values: &mut Values<'_, A>,
        heads: &[usize],
    ) -> Result<Vec<(String, TValue)>> {
        let mut out = Vec::new();
        for &h in heads {
            let slot = &layout.heads[h];
            let named = |e| part_error(&format!("head {}", slot.part.name), e);
            if let Some(seg) = &slot.segment {
                match routes.heads[h].backend {
                    Backend::Cpu => self.cpu_part(layout, values, seg)?,
                    Backend::Cuda => {
                        let built = accel_segment(values.accel, &slot.gpu, || match &slot.source {
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
                        accel_part(values, &built, seg).map_err(named)?;
                    }
                }
            }
            for name in &slot.part.outputs {
                out.push((name.clone(), values.host(name).map_err(named)?));
            }
        }
        Ok(out)
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

/// The segment held by `slot`, built by `build` on first use. A failed build is not kept: the
/// next run tries again.
fn accel_segment<A: Accel>(
    _accel: &A,
    slot: &GpuSlot,
    build: impl FnOnce() -> Result<A::Segment>,
) -> Result<Arc<A::Segment>> {
    let mut held = slot.segment.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(seg) = held.as_ref().and_then(|s| s.clone().downcast::<A::Segment>().ok()) {
        return Ok(seg);
    }
    let seg = Arc::new(build()?);
    *held = Some(seg.clone() as Arc<dyn Any + Send + Sync>);
    Ok(seg)
}

/// Runs an accelerator part: its inputs on the device (uploaded where needed), its outputs
/// kept there.
fn accel_part<A: Accel>(
    values: &mut Values<'_, A>,
    seg: &A::Segment,
    cpu: &CpuSegment,
) -> Result<()> {
    let inputs: HashMap<String, Arc<A::Tensor>> =
        cpu.inputs.iter().map(|n| Ok((n.clone(), values.device(n)?))).collect::<Result<_>>()?;
    for (name, t) in values.accel.run(seg, &inputs)? {
        values.device.insert(name, Arc::new(t));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::route::Route;
    use crate::model::{Device, LoadOptions};
    use crate::train::{Head, Init};
    use std::path::Path;
    use std::sync::Mutex;

    /// A stand-in device: tensors stay host values, segments run on tract; every upload,
    /// download and build is recorded.
    #[derive(Default)]
    struct HostAccel {
        uploads: Mutex<Vec<String>>,
        downloads: Mutex<Vec<String>>,
        builds: Mutex<Vec<String>>,
        fail_runs: bool,
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
        let layout = m.layout();
        let env = m.check_inputs(&[("image", x)])?;
        let mut values = Values::new(accel, env);
        m.accel_trunk(&layout, routes, &mut values, heads)?;
        m.accel_heads(&layout, routes, &mut values, heads)
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
        let accel = HostAccel::default();
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
}
