//! Model runs on a CUDA device: each trunk part and head runs on its route (see [`route`]),
//! GPU parts as [`GpuSegment`]s built on first use, CPU parts on tract. A tensor moves between
//! host and device only when a part on the other side reads it, at most once each way per run.
//!
//! [`route`]: super::route

use super::layout::{GpuSlot, HeadSource, Layout};
use super::route::Backend;
use super::{Device, Model, Precision};
use crate::backend::cpu::CpuSegment;
use crate::backend::cuda::context::GpuContext;
use crate::backend::cuda::exec::{GpuSegment, GpuTensor, Storage};
use crate::backend::cuda::fallback::Placement;
use crate::backend::device::Choice;
use crate::backend::rows::Env;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::Arc;
use tract_onnx::prelude::{IntoTValue, TValue, Tensor as TractTensor};

/// The storage type of a precision.
pub(crate) fn storage(p: Precision) -> Storage {
    match p {
        Precision::F32 => Storage::F32,
        Precision::F16 => Storage::F16,
        Precision::Bf16 => Storage::Bf16,
    }
}

/// The context of the device `choice` names; when it cannot be made, an error for a device asked
/// for by name, the CPU (saying why) for `auto`.
pub(super) fn open(choice: Choice, requested: Device) -> Result<(Choice, Option<Arc<GpuContext>>)> {
    let Device::Cuda(n) = choice.device else { return Ok((choice, None)) };
    match GpuContext::shared(n) {
        Ok(c) => Ok((choice, Some(c))),
        Err(e) if requested == Device::Auto => {
            Ok((Choice { device: Device::Cpu, reason: format!("auto: {e}") }, None))
        }
        Err(e) => Err(e),
    }
}

/// The values of one run, on the host, on the device, or both.
pub(super) struct Values<'a> {
    gpu: &'a GpuContext,
    storage: Storage,
    host: Env,
    device: HashMap<String, Arc<GpuTensor>>,
}

impl<'a> Values<'a> {
    pub fn new(gpu: &'a GpuContext, storage: Storage, host: Env) -> Values<'a> {
        Values { gpu, storage, host, device: HashMap::new() }
    }

    /// Tensor `name` on the host, downloaded (once) when only the device has it.
    fn host(&mut self, name: &str) -> Result<TValue> {
        if let Some(v) = self.host.get(name) {
            return Ok(v.clone());
        }
        let t = self.device.get(name).ok_or_else(|| Error::MissingFeature(name.to_string()))?;
        let values = {
            let _turn = self.gpu.turn();
            self.gpu.download(t)?
        };
        let v = TractTensor::from_shape(&t.shape, &values)
            .map_err(|e| Error::BadTensor(format!("`{name}` from the GPU: {e}")))?
            .into_tvalue();
        self.host.insert(name.to_string(), v.clone());
        Ok(v)
    }

    /// Tensor `name` on the device, uploaded (once) when only the host has it.
    fn device(&mut self, name: &str) -> Result<Arc<GpuTensor>> {
        if let Some(t) = self.device.get(name) {
            return Ok(t.clone());
        }
        let v = self.host.get(name).ok_or_else(|| Error::MissingFeature(name.to_string()))?;
        let values = v.try_as_plain_ram().and_then(|r| r.as_slice::<f32>()).map_err(|_| {
            Error::BadTensor(format!("`{name}` is {:?}; the GPU takes f32 tensors", v.datum_type()))
        })?;
        let t = {
            let _turn = self.gpu.turn();
            Arc::new(self.gpu.upload(v.shape(), values, self.storage)?)
        };
        self.device.insert(name.to_string(), t.clone());
        Ok(t)
    }

    /// The host values of `names` (sorted by name), as [`Features`](super::Features) hold them.
    pub fn features(&mut self, names: &[&String]) -> Result<HashMap<String, TValue>> {
        names.iter().map(|n| Ok(((*n).clone(), self.host(n)?))).collect()
    }
}

/// A failure of part `part` on the GPU, named after the part.
fn part_error(part: &str, e: Error) -> Error {
    Error::Backend { segment: format!("{part} (GPU)"), message: e.to_string() }
}

impl Model {
    /// The device context when `layout` runs at least one part on the GPU.
    pub(super) fn routed(&self, layout: &Layout) -> Option<&GpuContext> {
        let gpu = self.gpu.as_deref()?;
        let routes = self.routes(layout);
        let any = routes.trunk.iter().chain(&routes.heads).any(|r| r.backend == Backend::Cuda);
        any.then_some(gpu)
    }

    /// Runs the trunk parts that `heads` need, each on its backend.
    pub(super) fn gpu_trunk(
        &self,
        layout: &Layout,
        values: &mut Values<'_>,
        heads: &[usize],
    ) -> Result<()> {
        let routes = self.routes(layout);
        for (part, route) in layout.trunk.iter().zip(&routes.trunk) {
            if !part.heads.iter().any(|h| heads.contains(h)) {
                continue;
            }
            match route.backend {
                Backend::Cpu => self.cpu_part(layout, values, &part.segment)?,
                Backend::Cuda => {
                    let seg = self
                        .gpu_segment(values.gpu, &part.gpu, || {
                            GpuSegment::for_nodes(
                                values.gpu,
                                &self.graph,
                                &part.nodes,
                                &part.segment.outputs,
                                values.storage,
                            )
                        })
                        .map_err(|e| part_error(&part.segment.name, e))?;
                    gpu_part(values, &seg, &part.segment)
                        .map_err(|e| part_error(&part.segment.name, e))?;
                }
            }
        }
        Ok(())
    }

    /// Runs `heads` (the trunk values they read are in `values`), each on its backend; returns
    /// their outputs on the host in head order.
    pub(super) fn gpu_heads(
        &self,
        layout: &Layout,
        values: &mut Values<'_>,
        heads: &[usize],
    ) -> Result<Vec<(String, TValue)>> {
        let routes = self.routes(layout);
        let mut out = Vec::new();
        for &h in heads {
            let slot = &layout.heads[h];
            if let Some(seg) = &slot.segment {
                match routes.heads[h].backend {
                    Backend::Cpu => self.cpu_part(layout, values, seg)?,
                    Backend::Cuda => {
                        let built = self
                            .gpu_segment(values.gpu, &slot.gpu, || match &slot.source {
                                HeadSource::Graph(_) => GpuSegment::for_nodes(
                                    values.gpu,
                                    &self.graph,
                                    &slot.part.nodes,
                                    &seg.outputs,
                                    values.storage,
                                ),
                                HeadSource::Layers(_) => {
                                    let g = super::route::standalone_graph(seg)?;
                                    let nodes: Vec<usize> = (0..g.nodes().len()).collect();
                                    GpuSegment::for_nodes(
                                        values.gpu,
                                        &g,
                                        &nodes,
                                        &seg.outputs,
                                        values.storage,
                                    )
                                }
                            })
                            .map_err(|e| part_error(&seg.name, e))?;
                        gpu_part(values, &built, seg).map_err(|e| part_error(&seg.name, e))?;
                    }
                }
            }
            for name in &slot.part.outputs {
                let v = values
                    .host(name)
                    .map_err(|e| part_error(&format!("head {}", slot.part.name), e))?;
                out.push((name.clone(), v));
            }
        }
        Ok(out)
    }

    /// Runs a CPU part on host values (as batch-1 rows where the model runs batches so).
    fn cpu_part(&self, layout: &Layout, values: &mut Values<'_>, seg: &CpuSegment) -> Result<()> {
        let env: Env =
            seg.inputs.iter().map(|n| Ok((n.clone(), values.host(n)?))).collect::<Result<_>>()?;
        for (name, v) in self.by_rows(layout, env, |env| seg.run(&env))? {
            values.host.insert(name, v);
        }
        Ok(())
    }

    /// The GPU segment held by `slot`, built by `build` on first use. A failed build is not
    /// kept: the next run tries again.
    fn gpu_segment(
        &self,
        gpu: &GpuContext,
        slot: &GpuSlot,
        build: impl FnOnce() -> Result<std::result::Result<GpuSegment, Placement>>,
    ) -> Result<Arc<GpuSegment>> {
        let mut held = slot.segment.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(seg) = held.as_ref() {
            return Ok(seg.clone());
        }
        let seg = {
            let _turn = gpu.turn();
            build()?
        };
        let seg = Arc::new(seg.map_err(|p| {
            Error::InvalidModel(format!("planned for the GPU but placed {}", p.describe()))
        })?);
        *held = Some(seg.clone());
        Ok(seg)
    }
}

/// Runs a GPU part: its inputs on the device (uploaded where needed), its outputs kept there.
fn gpu_part(values: &mut Values<'_>, seg: &GpuSegment, cpu: &CpuSegment) -> Result<()> {
    let inputs: HashMap<String, Arc<GpuTensor>> =
        cpu.inputs.iter().map(|n| Ok((n.clone(), values.device(n)?))).collect::<Result<_>>()?;
    let outs = {
        let _turn = values.gpu.turn();
        let outs = seg.run_shared(values.gpu, &inputs)?;
        // Launch failures surface here, named after the part, not at a later download.
        values.gpu.synchronize()?;
        outs
    };
    for (name, t) in outs {
        values.device.insert(name, Arc::new(t));
    }
    Ok(())
}
