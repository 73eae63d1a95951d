//! The CUDA device as the routed runs of `accel.rs` use it ([`CudaAccel`]): uploads, downloads,
//! [`GpuSegment`]s, each taking the device's turn (one stream and cuBLAS handle per device).

use super::accel::Accel;
use super::fuse::StackedGemm;
use super::layout::Layout;
use super::route::Backend;
use super::{Device, Model, Precision};
use crate::backend::cuda::context::GpuContext;
use crate::backend::cuda::exec::{GpuSegment, GpuTensor, Storage};
use crate::backend::cuda::fusion::Act;
use crate::backend::device::Choice;
use crate::error::{Error, Result};
use crate::graph::OnnxGraph;
use cudarc::driver::CudaSlice;
use std::collections::HashMap;
use std::ops::Range;
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

/// A CUDA device and the storage type of a model's tensors on it.
pub(super) struct CudaAccel<'a> {
    gpu: &'a GpuContext,
    storage: Storage,
}

/// A stacked first-layer GEMM on the device: weights `[sum of out_features, in_features]` in the
/// model's storage type, f32 bias, and each head's columns and activation.
pub(super) struct GpuStacked {
    weight: GpuTensor,
    bias: CudaSlice<f32>,
    heads: Vec<(Range<usize>, Act)>,
}

impl Accel for CudaAccel<'_> {
    type Tensor = GpuTensor;
    type Segment = GpuSegment;

    fn upload(&self, name: &str, v: &TValue) -> Result<GpuTensor> {
        let values = v.try_as_plain_ram().and_then(|r| r.as_slice::<f32>()).map_err(|_| {
            Error::BadTensor(format!("`{name}` is {:?}; the GPU takes f32 tensors", v.datum_type()))
        })?;
        let _turn = self.gpu.turn();
        self.gpu.upload(v.shape(), values, self.storage)
    }

    fn download(&self, name: &str, t: &GpuTensor) -> Result<TValue> {
        let values = {
            let _turn = self.gpu.turn();
            self.gpu.download(t)?
        };
        TractTensor::from_shape(&t.shape, &values)
            .map(|t| t.into_tvalue())
            .map_err(|e| Error::BadTensor(format!("`{name}` from the GPU: {e}")))
    }

    fn build(&self, graph: &OnnxGraph, nodes: &[usize], outputs: &[String]) -> Result<GpuSegment> {
        let _turn = self.gpu.turn();
        GpuSegment::for_nodes(self.gpu, graph, nodes, outputs, self.storage)?.map_err(|p| {
            Error::InvalidModel(format!("planned for the GPU but placed {}", p.describe()))
        })
    }

    fn run(
        &self,
        seg: &GpuSegment,
        inputs: &HashMap<String, Arc<GpuTensor>>,
    ) -> Result<HashMap<String, GpuTensor>> {
        let _turn = self.gpu.turn();
        let outs = seg.run_shared(self.gpu, inputs)?;
        // Launch failures surface here, named after the part, not at a later download.
        self.gpu.synchronize()?;
        Ok(outs)
    }

    type Stacked = GpuStacked;

    fn stack(&self, gemm: &StackedGemm) -> Result<Option<GpuStacked>> {
        let _turn = self.gpu.turn();
        let weight = self.gpu.upload(&[gemm.n(), gemm.k], &gemm.weight, self.storage)?;
        let bias = self.gpu.upload_f32(&gemm.bias)?;
        let heads = gemm.heads.iter().map(|h| (h.cols.clone(), h.act)).collect();
        Ok(Some(GpuStacked { weight, bias, heads }))
    }

    fn run_stacked(&self, s: &GpuStacked, x: &GpuTensor) -> Result<Vec<GpuTensor>> {
        let _turn = self.gpu.turn();
        // One product for every head, bias added; then each head's columns, its activation.
        let y = self.gpu.gemm(x, &s.weight, true, Some(&s.bias), Act::None)?;
        let outs = s
            .heads
            .iter()
            .map(|(cols, act)| self.gpu.columns_act(&y, cols.clone(), *act))
            .collect::<Result<Vec<_>>>()?;
        self.gpu.synchronize()?;
        Ok(outs)
    }
}

impl Model {
    /// The device when `layout` runs at least one part on the GPU.
    pub(super) fn routed(&self, layout: &Layout) -> Option<CudaAccel<'_>> {
        let gpu = self.gpu.as_deref()?;
        let routes = self.routes(layout);
        let any = routes.trunk.iter().chain(&routes.heads).any(|r| r.backend == Backend::Cuda);
        any.then_some(CudaAccel { gpu, storage: storage(self.precision) })
    }
}
