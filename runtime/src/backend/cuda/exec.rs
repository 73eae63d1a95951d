//! The executor: device tensors, one method per kernel, and [`run_segment`], which runs a
//! segment's fused steps ([`fusion::plan`](super::fusion::plan)) on the GPU. Storage is f32, f16
//! or bf16 ([`Storage`]); accumulation is always f32; biases and normalisation parameters stay
//! f32.

pub use super::consts::{constants, HostConst};
use super::context::{err, GpuContext};
use super::fallback::{place, Placement};
use super::fold::{fold, BatchNorm};
use super::fusion::{activation, plan, Act, Step};
use super::geometry::{self, ConvKernel, ConvParams, ConvShape, Launch, PoolShape};
use super::ir::{OpNode, SegmentIr};
use crate::error::{Error, Result};
use crate::graph::OnnxGraph;
use cudarc::cublas::sys as blas;
use cudarc::driver::{
    CudaFunction, CudaSlice, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg,
};
use half::{bf16, f16};
pub use hydrant_kernels::Storage;
use std::collections::HashMap;
use std::sync::Arc;

/// A tensor in device memory.
pub struct GpuTensor {
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its element type.
    pub storage: Storage,
    buf: CudaSlice<u8>,
}

impl GpuTensor {
    /// Element count.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when it has no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A tensor brought back to the host: shape and f32 values.
pub type HostTensor = (Vec<usize>, Vec<f32>);

/// A device pointer argument that may be null.
enum Ptr<'a> {
    Buf(&'a CudaSlice<u8>),
    F32(&'a CudaSlice<f32>),
    Null,
}

static NULL: u64 = 0;

// SAFETY: plain `#[repr(C)]` structs of `i32`, laid out as `HyConvShape` / `HyPoolShape` in
// kernels/src/common.cuh.
unsafe impl cudarc::driver::DeviceRepr for ConvShape {}
unsafe impl cudarc::driver::DeviceRepr for PoolShape {}

fn push<'a>(b: &mut cudarc::driver::LaunchArgs<'a>, p: &'a Ptr<'a>) {
    match p {
        Ptr::Buf(s) => b.arg(*s),
        Ptr::F32(s) => b.arg(*s),
        Ptr::Null => b.arg(&NULL),
    };
}

fn cfg(l: Launch) -> LaunchConfig {
    LaunchConfig { grid_dim: l.grid, block_dim: l.block, shared_mem_bytes: l.shared_bytes }
}

fn to_bytes(values: &[f32], storage: Storage) -> Vec<u8> {
    match storage {
        Storage::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Storage::F16 => {
            values.iter().flat_map(|&v| f16::from_f32(v).to_bits().to_le_bytes()).collect()
        }
        Storage::Bf16 => {
            values.iter().flat_map(|&v| bf16::from_f32(v).to_bits().to_le_bytes()).collect()
        }
    }
}

fn from_bytes(bytes: &[u8], storage: Storage) -> Vec<f32> {
    match storage {
        Storage::F32 => {
            bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        }
        Storage::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        Storage::Bf16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
    }
}

fn int(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        Error::InvalidArgument(format!("{what} = {v} is too large for the GPU kernels"))
    })
}

impl GpuContext {
    fn e(&self, m: impl std::fmt::Display) -> Error {
        err(self.ordinal, m)
    }

    /// Copies `values` (of `shape`) to the device as `storage`.
    pub fn upload(&self, shape: &[usize], values: &[f32], storage: Storage) -> Result<GpuTensor> {
        if shape.iter().product::<usize>() != values.len() {
            return Err(Error::BadTensor(format!("shape {shape:?} but {} values", values.len())));
        }
        let buf = self.stream.clone_htod(&to_bytes(values, storage)).map_err(|e| self.e(e))?;
        Ok(GpuTensor { shape: shape.to_vec(), storage, buf })
    }

    /// Copies f32 parameters (biases, scales) to the device.
    pub fn upload_f32(&self, values: &[f32]) -> Result<CudaSlice<f32>> {
        self.stream.clone_htod(values).map_err(|e| self.e(e))
    }

    /// Copies f32 parameters back.
    pub fn download_f32(&self, s: &CudaSlice<f32>) -> Result<Vec<f32>> {
        self.stream.clone_dtoh(s).map_err(|e| self.e(e))
    }

    /// Copies a device tensor back, widened to f32.
    pub fn download(&self, t: &GpuTensor) -> Result<Vec<f32>> {
        let bytes = self.stream.clone_dtoh(&t.buf).map_err(|e| self.e(e))?;
        Ok(from_bytes(&bytes, t.storage))
    }

    /// A zeroed device tensor.
    pub fn zeros(&self, shape: &[usize], storage: Storage) -> Result<GpuTensor> {
        let len: usize = shape.iter().product();
        let buf =
            self.stream.alloc_zeros::<u8>(len.max(1) * storage.size()).map_err(|e| self.e(e))?;
        Ok(GpuTensor { shape: shape.to_vec(), storage, buf })
    }

    fn typed(&self, base: &str, s: Storage) -> Result<CudaFunction> {
        self.function(&hydrant_kernels::typed_name(base, s))
    }

    /// Launches what `b` holds (pointers then scalars, as the kernel declares them).
    fn go(&self, mut b: cudarc::driver::LaunchArgs<'_>, l: Launch) -> Result<()> {
        // SAFETY: every caller pushes exactly the kernel's parameters, in order, as declared in
        // kernels/src/*.cu, after checking the buffers' sizes against the shapes.
        unsafe { b.launch(cfg(l)) }.map_err(|e| self.e(e))?;
        Ok(())
    }

    /// y = act(conv(x, w) + bias + residual).
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        bias: Option<&CudaSlice<f32>>,
        residual: Option<&GpuTensor>,
        p: &ConvParams,
        act: Act,
    ) -> Result<GpuTensor> {
        let [n, c, h, wd] = four(&x.shape)?;
        let (kh, kw) = p.kernel;
        if p.groups == 0 || w.shape != [w.shape[0], c / p.groups, kh, kw] {
            return Err(Error::BadTensor(format!(
                "convolution weight {:?} for input {:?}, kernel {kh}×{kw}, {} groups",
                w.shape, x.shape, p.groups
            )));
        }
        let shape = ConvShape::new([n, c, h, wd], w.shape[0], p)?;
        let out_shape = [n, w.shape[0], shape.oh as usize, shape.ow as usize];
        if let Some(r) = residual {
            if r.shape != out_shape {
                return Err(Error::BadTensor(format!(
                    "residual {:?} for output {out_shape:?}",
                    r.shape
                )));
            }
        }
        let y = self.zeros(&out_shape, x.storage)?;
        let (kernel, launch) = geometry::conv(&shape, &self.limits)?;
        let f = self.typed(
            if kernel == ConvKernel::ImplicitGemm { "conv2d_igemm" } else { "conv2d_direct" },
            x.storage,
        )?;
        let (code, alpha) = act.code();
        let bias = bias.map_or(Ptr::Null, Ptr::F32);
        let res = residual.map_or(Ptr::Null, |r| Ptr::Buf(&r.buf));
        {
            let ptrs = [Ptr::Buf(&x.buf), Ptr::Buf(&w.buf), bias, res, Ptr::Buf(&y.buf)];
            let mut b = self.stream.launch_builder(&f);
            for p in &ptrs {
                push(&mut b, p);
            }
            b.arg(&shape).arg(&code).arg(&alpha);
            self.go(b, launch)?;
        }
        Ok(y)
    }

    /// y[m, n] = act(x[m, k] · w + bias) with w stored `[n, k]` (`trans_b`) or `[k, n]`: cuBLAS,
    /// then the bias and activation epilogue.
    pub fn gemm(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        trans_b: bool,
        bias: Option<&CudaSlice<f32>>,
        act: Act,
    ) -> Result<GpuTensor> {
        let k = *x.shape.last().unwrap_or(&0);
        let m = x.len() / k.max(1);
        let (wn, wk) = if trans_b { (w.shape[0], w.shape[1]) } else { (w.shape[1], w.shape[0]) };
        if w.shape.len() != 2 || wk != k || x.storage != w.storage {
            return Err(Error::BadTensor(format!("GEMM of {:?} and {:?}", x.shape, w.shape)));
        }
        let (mi, ni, ki) = (int("rows", m)?, int("columns", wn)?, int("depth", k)?);
        let mut y = self.zeros(&[m, wn], x.storage)?;
        let dt = match x.storage {
            Storage::F32 => blas::cudaDataType_t::CUDA_R_32F,
            Storage::F16 => blas::cudaDataType_t::CUDA_R_16F,
            Storage::Bf16 => blas::cudaDataType_t::CUDA_R_16BF,
        };
        let (one, zero) = (1.0f32, 0.0f32);
        {
            let (wp, _rw) = w.buf.device_ptr(&self.stream);
            let (xp, _rx) = x.buf.device_ptr(&self.stream);
            let (yp, _ry) = y.buf.device_ptr_mut(&self.stream);
            // Row-major y = x·op(w) is column-major yᵀ = op(w)ᵀ·xᵀ.
            let (op, ldw) = if trans_b {
                (blas::cublasOperation_t::CUBLAS_OP_T, ki)
            } else {
                (blas::cublasOperation_t::CUBLAS_OP_N, ni)
            };
            // SAFETY: the pointers are live device buffers of the sizes checked above, on the
            // handle's stream; alpha and beta are host f32 as CUBLAS_COMPUTE_32F expects.
            unsafe {
                cudarc::cublas::result::gemm_ex(
                    *self.blas.handle(),
                    op,
                    blas::cublasOperation_t::CUBLAS_OP_N,
                    ni,
                    mi,
                    ki,
                    (&one as *const f32).cast(),
                    wp as *const _,
                    dt,
                    ldw,
                    xp as *const _,
                    dt,
                    ki,
                    (&zero as *const f32).cast(),
                    yp as *mut _,
                    dt,
                    ni,
                    blas::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    blas::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            }
            .map_err(|e| self.e(e))?;
        }
        if bias.is_some() || act != Act::None {
            self.bias_act(&mut y, bias, wn, act)?;
        }
        let mut shape = x.shape.clone();
        if let Some(last) = shape.last_mut() {
            *last = wn;
        }
        y.shape = shape;
        Ok(y)
    }

    /// In place, y = act(y + bias) over rows of `cols` (bias per column, may be absent).
    pub fn bias_act(
        &self,
        y: &mut GpuTensor,
        bias: Option<&CudaSlice<f32>>,
        cols: usize,
        act: Act,
    ) -> Result<()> {
        let total = y.len() as u64;
        let rows = (y.len() / cols.max(1)) as i64;
        let (code, alpha) = act.code();
        let f = self.typed("bias_act_rows", y.storage)?;
        let cols = int("columns", cols)?;
        let l = geometry::elementwise(total, &self.limits)?;
        let bias = bias.map_or(Ptr::Null, Ptr::F32);
        let ptrs = [Ptr::Buf(&y.buf), bias];
        let mut b = self.stream.launch_builder(&f);
        for p in &ptrs {
            push(&mut b, p);
        }
        b.arg(&rows).arg(&cols).arg(&code).arg(&alpha);
        self.go(b, l)
    }

    /// y[.., j] = act(x[.., cols.start + j]) for `j` in `0..cols.len()`: a column range of the
    /// last axis (one head's share of a stacked GEMM) with its activation.
    pub fn columns_act(
        &self,
        x: &GpuTensor,
        cols: std::ops::Range<usize>,
        act: Act,
    ) -> Result<GpuTensor> {
        let x_cols = *x.shape.last().unwrap_or(&0);
        if cols.start > cols.end || cols.end > x_cols {
            return Err(Error::BadTensor(format!("columns {cols:?} of {:?}", x.shape)));
        }
        let rows = (x.len() / x_cols.max(1)) as i64;
        let mut shape = x.shape.clone();
        if let Some(last) = shape.last_mut() {
            *last = cols.len();
        }
        let y = self.zeros(&shape, x.storage)?;
        if y.is_empty() {
            return Ok(y);
        }
        let (code, alpha) = act.code();
        let f = self.typed("columns_act", x.storage)?;
        let l = geometry::elementwise((rows as u64) * cols.len() as u64, &self.limits)?;
        let (xc, yc, off) =
            (int("columns", x_cols)?, int("columns", cols.len())?, int("offset", cols.start)?);
        let mut b = self.stream.launch_builder(&f);
        b.arg(&x.buf).arg(&y.buf);
        b.arg(&rows).arg(&xc).arg(&yc).arg(&off).arg(&code).arg(&alpha);
        self.go(b, l)?;
        Ok(y)
    }

    /// y = act(a + b), same shapes.
    pub fn add_act(&self, a: &GpuTensor, b: &GpuTensor, act: Act) -> Result<GpuTensor> {
        if a.shape != b.shape || a.storage != b.storage {
            return Err(Error::BadTensor(format!(
                "Add of {:?} and {:?} (no broadcasting on the GPU)",
                a.shape, b.shape
            )));
        }
        let y = self.zeros(&a.shape, a.storage)?;
        let total = a.len() as i64;
        let (code, alpha) = act.code();
        let f = self.typed("add_act", a.storage)?;
        let l = geometry::elementwise(total as u64, &self.limits)?;
        {
            let ptrs = [Ptr::Buf(&a.buf), Ptr::Buf(&b.buf), Ptr::Buf(&y.buf)];
            let mut b = self.stream.launch_builder(&f);
            for p in &ptrs {
                push(&mut b, p);
            }
            b.arg(&total).arg(&code).arg(&alpha);
            self.go(b, l)
        }?;
        Ok(y)
    }

    /// Max (`is_max`) or average pooling.
    pub fn pool2d(
        &self,
        x: &GpuTensor,
        p: &ConvParams,
        is_max: bool,
        count_include_pad: bool,
    ) -> Result<GpuTensor> {
        let s = PoolShape::new(four(&x.shape)?, p, count_include_pad)?;
        let y = self.zeros(&[x.shape[0], x.shape[1], s.oh as usize, s.ow as usize], x.storage)?;
        let f = self.typed(if is_max { "maxpool2d" } else { "avgpool2d" }, x.storage)?;
        let l = geometry::elementwise(y.len() as u64, &self.limits)?;
        {
            let ptrs = [Ptr::Buf(&x.buf), Ptr::Buf(&y.buf)];
            let mut b = self.stream.launch_builder(&f);
            for p in &ptrs {
                push(&mut b, p);
            }
            b.arg(&s);
            self.go(b, l)
        }?;
        Ok(y)
    }

    /// Global average pooling, `[n, c, h, w]` → `[n, c, 1, 1]`.
    pub fn global_avgpool(&self, x: &GpuTensor) -> Result<GpuTensor> {
        let [n, c, h, w] = four(&x.shape)?;
        let y = self.zeros(&[n, c, 1, 1], x.storage)?;
        let plane = int("plane", h * w)?;
        let f = self.typed("global_avgpool", x.storage)?;
        let l = geometry::rows((n * c) as u64, (h * w) as u64, &self.limits)?;
        {
            let ptrs = [Ptr::Buf(&x.buf), Ptr::Buf(&y.buf)];
            let mut b = self.stream.launch_builder(&f);
            for p in &ptrs {
                push(&mut b, p);
            }
            b.arg(&plane);
            self.go(b, l)
        }?;
        Ok(y)
    }

    /// Softmax over the last axis.
    pub fn softmax(&self, x: &GpuTensor) -> Result<GpuTensor> {
        let len = *x.shape.last().unwrap_or(&1);
        let y = self.zeros(&x.shape, x.storage)?;
        let f = self.typed("softmax_rows", x.storage)?;
        let l = geometry::rows((x.len() / len.max(1)) as u64, len as u64, &self.limits)?;
        let len = int("row length", len)?;
        {
            let ptrs = [Ptr::Buf(&x.buf), Ptr::Buf(&y.buf)];
            let mut b = self.stream.launch_builder(&f);
            for p in &ptrs {
                push(&mut b, p);
            }
            b.arg(&len);
            self.go(b, l)
        }?;
        Ok(y)
    }

    /// Layer normalisation over the last axis.
    pub fn layernorm(
        &self,
        x: &GpuTensor,
        gamma: Option<&CudaSlice<f32>>,
        beta: Option<&CudaSlice<f32>>,
        eps: f32,
    ) -> Result<GpuTensor> {
        let len = *x.shape.last().unwrap_or(&1);
        let y = self.zeros(&x.shape, x.storage)?;
        let f = self.typed("layernorm_rows", x.storage)?;
        let l = geometry::rows((x.len() / len.max(1)) as u64, len as u64, &self.limits)?;
        let len = int("row length", len)?;
        let (g, b) = (gamma.map_or(Ptr::Null, Ptr::F32), beta.map_or(Ptr::Null, Ptr::F32));
        {
            let ptrs = [Ptr::Buf(&x.buf), g, b, Ptr::Buf(&y.buf)];
            let mut b = self.stream.launch_builder(&f);
            for p in &ptrs {
                push(&mut b, p);
            }
            b.arg(&len).arg(&eps);
            self.go(b, l)
        }?;
        Ok(y)
    }

    /// y = act(x·scale[c] + shift[c]) over NCHW (a BatchNormalization left unfolded).
    pub fn scale_shift(
        &self,
        x: &GpuTensor,
        scale: &CudaSlice<f32>,
        shift: &CudaSlice<f32>,
        act: Act,
    ) -> Result<GpuTensor> {
        let channels = int("channels", *x.shape.get(1).unwrap_or(&1))?;
        let plane = int("plane", x.shape.iter().skip(2).product())?;
        let total = x.len() as i64;
        let y = self.zeros(&x.shape, x.storage)?;
        let (code, alpha) = act.code();
        let f = self.typed("scale_shift_channels", x.storage)?;
        let l = geometry::elementwise(total as u64, &self.limits)?;
        {
            let ptrs = [Ptr::Buf(&x.buf), Ptr::F32(scale), Ptr::F32(shift), Ptr::Buf(&y.buf)];
            let mut b = self.stream.launch_builder(&f);
            for p in &ptrs {
                push(&mut b, p);
            }
            b.arg(&total).arg(&channels).arg(&plane).arg(&code).arg(&alpha);
            self.go(b, l)?;
        }
        Ok(y)
    }

    /// Concatenation along `axis`.
    pub fn concat(&self, parts: &[&GpuTensor], axis: usize) -> Result<GpuTensor> {
        let first = parts.first().ok_or_else(|| Error::BadTensor("Concat of nothing".into()))?;
        let mut shape = first.shape.clone();
        if axis >= shape.len() {
            return Err(Error::BadTensor(format!("Concat axis {axis} of {shape:?}")));
        }
        shape[axis] = parts.iter().map(|p| p.shape.get(axis).copied().unwrap_or(0)).sum();
        let y = self.zeros(&shape, first.storage)?;
        let outer: i64 = shape[..axis].iter().product::<usize>() as i64;
        let dst_inner: i64 = shape[axis..].iter().product::<usize>() as i64;
        let f = self.typed("concat_copy", first.storage)?;
        let mut offset = 0i64;
        for p in parts {
            let src_inner: i64 = p.shape[axis..].iter().product::<usize>() as i64;
            let l = geometry::elementwise((outer * src_inner).max(1) as u64, &self.limits)?;
            let mut b = self.stream.launch_builder(&f);
            b.arg(&p.buf).arg(&y.buf);
            b.arg(&outer).arg(&src_inner).arg(&dst_inner).arg(&offset);
            self.go(b, l)?;
            offset += src_inner;
        }
        Ok(y)
    }

    /// Resize of NCHW planes to `(oh, ow)`: nearest (floor) or bilinear.
    pub fn resize(
        &self,
        x: &GpuTensor,
        oh: usize,
        ow: usize,
        bilinear: bool,
        align_corners: bool,
    ) -> Result<GpuTensor> {
        let [n, c, h, w] = four(&x.shape)?;
        let y = self.zeros(&[n, c, oh, ow], x.storage)?;
        let planes = (n * c) as i64;
        let (hi, wi, ohi, owi) =
            (int("height", h)?, int("width", w)?, int("height", oh)?, int("width", ow)?);
        let l = geometry::elementwise(y.len() as u64, &self.limits)?;
        let f =
            self.typed(if bilinear { "resize_bilinear" } else { "resize_nearest" }, x.storage)?;
        let align = i32::from(align_corners);
        {
            let ptrs = [Ptr::Buf(&x.buf), Ptr::Buf(&y.buf)];
            let mut b = self.stream.launch_builder(&f);
            for p in &ptrs {
                push(&mut b, p);
            }
            b.arg(&planes).arg(&hi).arg(&wi).arg(&ohi).arg(&owi);
            if bilinear {
                b.arg(&align);
            }
            self.go(b, l)
        }?;
        Ok(y)
    }

    /// Softmax + cross-entropy over `[rows, classes]` logits: per-row losses and the gradient
    /// (scaled by `grad_scale`) in one kernel. Labels must be below `classes` (negative: ignored).
    pub fn softmax_xent(
        &self,
        logits: &GpuTensor,
        labels: &[i32],
        grad_scale: f32,
    ) -> Result<(Vec<f32>, GpuTensor)> {
        let [rows, classes] = <[usize; 2]>::try_from(logits.shape.as_slice()).map_err(|_| {
            Error::BadTensor(format!("logits {:?}: expected [rows, classes]", logits.shape))
        })?;
        if labels.len() != rows || labels.iter().any(|&l| l >= classes as i32) {
            return Err(Error::BadTensor(format!(
                "{} labels for {rows} rows of {classes} classes",
                labels.len()
            )));
        }
        let labels = self.stream.clone_htod(labels).map_err(|e| self.e(e))?;
        let loss = self.stream.alloc_zeros::<f32>(rows).map_err(|e| self.e(e))?;
        let grad = self.zeros(&logits.shape, logits.storage)?;
        let f = self.typed("softmax_xent", logits.storage)?;
        let l = geometry::rows(rows as u64, classes as u64, &self.limits)?;
        let c = int("classes", classes)?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(&logits.buf).arg(&labels).arg(&loss).arg(&grad.buf).arg(&c).arg(&grad_scale);
        // SAFETY: the arguments match `softmax_xent_*` in kernels/src/loss.cu; sizes checked above.
        unsafe { b.launch(cfg(l)) }.map_err(|e| self.e(e))?;
        let loss = self.stream.clone_dtoh(&loss).map_err(|e| self.e(e))?;
        Ok((loss, grad))
    }

    /// One AdamW step on f32 parameters (`t` counts steps from 1), as the CPU optimizer.
    #[allow(clippy::too_many_arguments)]
    pub fn adamw(
        &self,
        p: &mut CudaSlice<f32>,
        g: &CudaSlice<f32>,
        m: &mut CudaSlice<f32>,
        v: &mut CudaSlice<f32>,
        lr: f32,
        betas: (f32, f32),
        eps: f32,
        weight_decay: f32,
        t: i32,
    ) -> Result<()> {
        let total = p.len() as i64;
        if g.len() != p.len() || m.len() != p.len() || v.len() != p.len() {
            return Err(Error::BadTensor("AdamW slots of different sizes".into()));
        }
        let bc1 = 1.0 - betas.0.powi(t);
        let bc2_sqrt = (1.0 - betas.1.powi(t)).sqrt();
        let f = self.function("adamw_f32")?;
        let l = geometry::elementwise(total as u64, &self.limits)?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(p)
            .arg(g)
            .arg(m)
            .arg(v)
            .arg(&total)
            .arg(&lr)
            .arg(&betas.0)
            .arg(&betas.1)
            .arg(&eps)
            .arg(&weight_decay)
            .arg(&bc1)
            .arg(&bc2_sqrt);
        // SAFETY: matches `adamw_f32` in kernels/src/optim.rs; equal lengths checked.
        unsafe { b.launch(cfg(l)) }.map_err(|e| self.e(e))?;
        Ok(())
    }

    /// One SGD step with momentum on f32 parameters (`first`: the momentum buffer is fresh).
    #[allow(clippy::too_many_arguments)]
    pub fn sgd(
        &self,
        p: &mut CudaSlice<f32>,
        g: &CudaSlice<f32>,
        buf: &mut CudaSlice<f32>,
        lr: f32,
        momentum: f32,
        dampening: f32,
        weight_decay: f32,
        nesterov: bool,
        first: bool,
    ) -> Result<()> {
        let total = p.len() as i64;
        if g.len() != p.len() || buf.len() != p.len() {
            return Err(Error::BadTensor("SGD slots of different sizes".into()));
        }
        let (nesterov, first) = (i32::from(nesterov), i32::from(first));
        let f = self.function("sgd_momentum_f32")?;
        let l = geometry::elementwise(total as u64, &self.limits)?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(p)
            .arg(g)
            .arg(buf)
            .arg(&total)
            .arg(&lr)
            .arg(&momentum)
            .arg(&dampening)
            .arg(&weight_decay)
            .arg(&nesterov)
            .arg(&first);
        // SAFETY: matches `sgd_momentum_f32` in kernels/src/optim.cu; equal lengths checked.
        unsafe { b.launch(cfg(l)) }.map_err(|e| self.e(e))?;
        Ok(())
    }
}

fn four(shape: &[usize]) -> Result<[usize; 4]> {
    <[usize; 4]>::try_from(shape)
        .map_err(|_| Error::BadTensor(format!("expected an NCHW tensor, got {shape:?}")))
}

fn conv_params(node: &OpNode, kernel: (usize, usize), groups: usize) -> ConvParams {
    let pair = |name: &str, d: usize| -> (usize, usize) {
        match node.ints(name) {
            Some(v) if v.len() >= 2 => (v[0].max(0) as usize, v[1].max(0) as usize),
            _ => (d, d),
        }
    };
    ConvParams {
        kernel,
        stride: pair("strides", 1),
        pad: pair("pads", 0),
        dilation: pair("dilations", 1),
        groups,
    }
}

/// A segment ready to run on the GPU: its fused steps, and the weights of its convolutions and
/// matrix products uploaded once (BatchNorm folded, Gemm's alpha and beta applied).
pub struct GpuSegment {
    ir: SegmentIr,
    steps: Vec<Step>,
    consts: HashMap<String, HostConst>,
    /// Per step: the uploaded weight and f32 bias of a Conv or Gemm step.
    params: Vec<Option<(GpuTensor, Option<CudaSlice<f32>>)>>,
    storage: Storage,
}

impl GpuSegment {
    /// Plans `ir` ([`place`] must have said [`Placement::Cuda`]) and uploads its weights.
    pub fn new(
        gpu: &GpuContext,
        ir: SegmentIr,
        consts: HashMap<String, HostConst>,
        storage: Storage,
    ) -> Result<GpuSegment> {
        if let Placement::Cpu { node, op, reason } = place(&ir) {
            return Err(Error::UnsupportedOp {
                node,
                op_type: format!("{op} on the GPU ({reason})"),
            });
        }
        let steps = plan(&ir);
        let konst = |name: &str| -> Result<&HostConst> {
            consts.get(name).ok_or_else(|| {
                Error::InvalidModel(format!("constant `{name}` not available to the GPU plan"))
            })
        };
        let floats = |name: Option<&String>| -> Result<Option<Vec<f32>>> {
            name.filter(|b| !b.is_empty()).map(|b| konst(b).map(HostConst::f32s)).transpose()
        };
        let mut params = Vec::with_capacity(steps.len());
        for step in &steps {
            let p = match step {
                Step::Conv { conv, batch_norm, .. } => {
                    let node = &ir.nodes[*conv];
                    let w = konst(&node.inputs[1])?;
                    if w.shape.len() != 4 {
                        return Err(Error::InvalidModel(format!(
                            "Conv `{}`: weight {:?}",
                            node.name, w.shape
                        )));
                    }
                    let mut weight = w.f32s();
                    let mut bias = floats(node.inputs.get(2))?;
                    if let Some(b) = batch_norm {
                        let bn_node = &ir.nodes[*b];
                        let get = |i: usize| konst(&bn_node.inputs[i]).map(HostConst::f32s);
                        let bn = BatchNorm {
                            gamma: get(1)?,
                            beta: get(2)?,
                            mean: get(3)?,
                            var: get(4)?,
                            eps: bn_node.float("epsilon", 1e-5),
                        };
                        let (fw, fb) = fold(&weight, bias.as_deref(), &bn)?;
                        weight = fw;
                        bias = Some(fb);
                    }
                    let b = bias.map(|b| gpu.upload_f32(&b)).transpose()?;
                    Some((gpu.upload(&w.shape, &weight, storage)?, b))
                }
                Step::Gemm { gemm, bias_add, .. } => {
                    let node = &ir.nodes[*gemm];
                    let w = konst(&node.inputs[1])?;
                    if w.shape.len() != 2 {
                        return Err(Error::InvalidModel(format!(
                            "{} `{}`: weight {:?}",
                            node.op, node.name, w.shape
                        )));
                    }
                    let bias = match bias_add {
                        Some(a) => {
                            floats(ir.nodes[*a].inputs.iter().find(|i| consts.contains_key(*i)))?
                        }
                        None => floats(node.inputs.get(2))?,
                    };
                    let (alpha, beta) = (node.float("alpha", 1.0), node.float("beta", 1.0));
                    let weight: Vec<f32> = w.f32s().iter().map(|v| v * alpha).collect();
                    let bias = bias.map(|b| b.iter().map(|v| v * beta).collect::<Vec<f32>>());
                    let b = bias.map(|b| gpu.upload_f32(&b)).transpose()?;
                    Some((gpu.upload(&w.shape, &weight, storage)?, b))
                }
                _ => None,
            };
            params.push(p);
        }
        Ok(GpuSegment { ir, steps, consts, params, storage })
    }

    /// The storage type of the segment's tensors.
    pub fn storage(&self) -> Storage {
        self.storage
    }

    /// Runs the segment on `env` (its inputs, on the device, in the segment's storage type);
    /// returns its outputs.
    pub fn run(
        &self,
        gpu: &GpuContext,
        env: HashMap<String, GpuTensor>,
    ) -> Result<HashMap<String, GpuTensor>> {
        let given: HashMap<String, Arc<GpuTensor>> =
            env.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        self.run_shared(gpu, &given)
    }

    /// [`GpuSegment::run`] on inputs that other segments may read too.
    pub fn run_shared(
        &self,
        gpu: &GpuContext,
        given: &HashMap<String, Arc<GpuTensor>>,
    ) -> Result<HashMap<String, GpuTensor>> {
        let ir = &self.ir;
        let mut env = Values { given, made: HashMap::new() };
        for (step, params) in self.steps.iter().zip(&self.params) {
            match (step, params) {
                (Step::Conv { conv, residual, act, output, .. }, Some((w, b))) => {
                    let node = &ir.nodes[*conv];
                    let groups = node.int("group", 1).max(1) as usize;
                    let p = conv_params(node, (w.shape[2], w.shape[3]), groups);
                    let x = env.get(&node.inputs[0])?;
                    let r = residual.as_ref().map(|r| env.get(r)).transpose()?;
                    let y = gpu.conv2d(x, w, b.as_ref(), r, &p, *act)?;
                    env.made.insert(output.clone(), y);
                }
                (Step::Gemm { gemm, act, output, .. }, Some((w, b))) => {
                    let node = &ir.nodes[*gemm];
                    let trans_b = node.op == "Gemm" && node.int("transB", 0) != 0;
                    let y = gpu.gemm(env.get(&node.inputs[0])?, w, trans_b, b.as_ref(), *act)?;
                    env.made.insert(output.clone(), y);
                }
                (Step::AddAct { add, act, output, .. }, _) => {
                    let node = &ir.nodes[*add];
                    let (a, b) = (env.get(&node.inputs[0])?, env.get(&node.inputs[1])?);
                    let y = gpu.add_act(a, b, *act)?;
                    env.made.insert(output.clone(), y);
                }
                (Step::Single(i), _) => {
                    let node = &ir.nodes[*i];
                    let y = single(gpu, node, ir, &env, &self.consts)?;
                    env.made.insert(node.outputs[0].clone(), y);
                }
                (step, None) => {
                    return Err(Error::InvalidModel(format!("GPU step {step:?} has no weights")))
                }
            }
        }
        let mut out = HashMap::new();
        for o in &ir.outputs {
            let t = match env.made.remove(o) {
                Some(t) => t,
                // An output that is one of the inputs is handed out as a copy.
                None => reshaped(gpu, env.get(o)?, env.get(o)?.shape.clone())?,
            };
            out.insert(o.clone(), t);
        }
        Ok(out)
    }

    /// The whole of `graph` as one GPU segment (for parity checks and benchmarks), or where it
    /// must run instead and why.
    pub fn for_graph(
        gpu: &GpuContext,
        graph: &OnnxGraph,
        storage: Storage,
    ) -> Result<std::result::Result<GpuSegment, Placement>> {
        let nodes: Vec<usize> = (0..graph.nodes().len()).collect();
        GpuSegment::for_nodes(gpu, graph, &nodes, graph.outputs(), storage)
    }

    /// The nodes `nodes` of `graph` handing out `outputs` as one GPU segment, or where they must
    /// run instead and why.
    pub fn for_nodes(
        gpu: &GpuContext,
        graph: &OnnxGraph,
        nodes: &[usize],
        outputs: &[String],
        storage: Storage,
    ) -> Result<std::result::Result<GpuSegment, Placement>> {
        let ir = SegmentIr::from_graph(graph, nodes, outputs);
        let placement = place(&ir);
        if placement != Placement::Cuda {
            return Ok(Err(placement));
        }
        let mut names: Vec<&str> = ir
            .nodes
            .iter()
            .flat_map(|n| n.inputs.iter().map(String::as_str))
            .filter(|i| ir.constants.contains(*i))
            .collect();
        names.sort_unstable();
        names.dedup();
        let consts = constants(graph, &names)?;
        GpuSegment::new(gpu, ir, consts, storage).map(Ok)
    }

    /// Runs the segment on host tensors (converted to f32, then to the storage type) and
    /// returns its outputs on the host as `(shape, f32 values)`.
    pub fn run_host(
        &self,
        gpu: &GpuContext,
        inputs: &[(&str, &crate::Tensor)],
    ) -> Result<HashMap<String, HostTensor>> {
        let mut env = HashMap::new();
        for (name, t) in inputs {
            let f = t.to_f32();
            let values = f
                .as_slice::<f32>()
                .ok_or_else(|| Error::BadTensor(format!("input `{name}` is not numeric")))?;
            env.insert(name.to_string(), gpu.upload(t.shape(), values, self.storage)?);
        }
        let out = self.run(gpu, env)?;
        out.into_iter().map(|(k, t)| Ok((k, (t.shape.clone(), gpu.download(&t)?)))).collect()
    }
}

/// An optional f32 constant input (empty name: absent) uploaded to the device.
fn opt_f32(
    gpu: &GpuContext,
    consts: &HashMap<String, HostConst>,
    name: Option<&String>,
) -> Result<Option<CudaSlice<f32>>> {
    match name.filter(|n| !n.is_empty()) {
        Some(n) => {
            let c = consts.get(n).ok_or_else(|| {
                Error::InvalidModel(format!("constant `{n}` not available to the GPU plan"))
            })?;
            Ok(Some(gpu.upload_f32(&c.f32s())?))
        }
        None => Ok(None),
    }
}

/// The tensors a segment run sees: its inputs (shared) and what its steps made so far.
struct Values<'a> {
    given: &'a HashMap<String, Arc<GpuTensor>>,
    made: HashMap<String, GpuTensor>,
}

impl Values<'_> {
    fn get(&self, name: &str) -> Result<&GpuTensor> {
        self.made
            .get(name)
            .or_else(|| self.given.get(name).map(|t| &**t))
            .ok_or_else(|| Error::MissingFeature(name.to_string()))
    }
}

/// A copy of `x` with another shape (the same elements).
fn reshaped(gpu: &GpuContext, x: &GpuTensor, shape: Vec<usize>) -> Result<GpuTensor> {
    if shape.iter().product::<usize>() != x.len() {
        return Err(Error::BadTensor(format!("reshape of {:?} to {shape:?}", x.shape)));
    }
    let buf = gpu.stream.clone_dtod(&x.buf).map_err(|e| gpu.e(e))?;
    Ok(GpuTensor { shape, storage: x.storage, buf })
}

fn single(
    gpu: &GpuContext,
    node: &OpNode,
    ir: &SegmentIr,
    env: &Values<'_>,
    consts: &HashMap<String, HostConst>,
) -> Result<GpuTensor> {
    let x = env.get(&node.inputs[0])?;
    let unsupported = |why: &str| Error::UnsupportedOp {
        node: node.name.clone(),
        op_type: format!("{} on the GPU ({why})", node.op),
    };
    if let Some(act) = activation(node, ir) {
        let mut y = reshaped(gpu, x, x.shape.clone())?;
        gpu.bias_act(&mut y, None, 1, act)?;
        return Ok(y);
    }
    match node.op.as_str() {
        "Add" => gpu.add_act(x, env.get(&node.inputs[1])?, Act::None),
        "Identity" | "Dropout" => reshaped(gpu, x, x.shape.clone()),
        "Flatten" => {
            let axis = node.int("axis", 1).rem_euclid(x.shape.len().max(1) as i64) as usize;
            let outer = x.shape[..axis].iter().product();
            reshaped(gpu, x, vec![outer, x.len() / outer.max(1)])
        }
        "Reshape" => {
            let spec =
                consts.get(&node.inputs[1]).ok_or_else(|| unsupported("shape not constant"))?;
            let mut shape: Vec<i64> = spec.values.iter().map(|&v| v as i64).collect();
            for (i, d) in shape.iter_mut().enumerate() {
                if *d == 0 {
                    *d = *x.shape.get(i).unwrap_or(&1) as i64;
                }
            }
            let known: i64 = shape.iter().filter(|&&d| d > 0).product();
            let shape: Vec<usize> = shape
                .iter()
                .map(|&d| if d < 0 { x.len() / known.max(1) as usize } else { d as usize })
                .collect();
            reshaped(gpu, x, shape)
        }
        "MaxPool" | "AveragePool" => {
            let k = node.ints("kernel_shape").ok_or_else(|| unsupported("no kernel_shape"))?;
            let p = conv_params(node, (k[0] as usize, k[1] as usize), 1);
            gpu.pool2d(x, &p, node.op == "MaxPool", node.int("count_include_pad", 0) != 0)
        }
        "GlobalAveragePool" => gpu.global_avgpool(x),
        "ReduceMean" => {
            // Placed only with axes (2, 3) of NCHW: a global average pool.
            let mut y = gpu.global_avgpool(x)?;
            if node.int("keepdims", 1) == 0 {
                y.shape.truncate(2);
            }
            Ok(y)
        }
        "Softmax" => gpu.softmax(x),
        "LayerNormalization" => {
            let (g, b) = (
                opt_f32(gpu, consts, node.inputs.get(1))?,
                opt_f32(gpu, consts, node.inputs.get(2))?,
            );
            gpu.layernorm(x, g.as_ref(), b.as_ref(), node.float("epsilon", 1e-5))
        }
        "BatchNormalization" => {
            let get = |i: usize| {
                consts
                    .get(&node.inputs[i])
                    .map(HostConst::f32s)
                    .ok_or_else(|| unsupported("parameters not constant"))
            };
            let (gamma, beta, mean, var) = (get(1)?, get(2)?, get(3)?, get(4)?);
            let eps = node.float("epsilon", 1e-5);
            let scale: Vec<f32> =
                gamma.iter().zip(&var).map(|(g, v)| g / (v + eps).sqrt()).collect();
            let shift: Vec<f32> = (0..scale.len()).map(|c| beta[c] - mean[c] * scale[c]).collect();
            gpu.scale_shift(x, &gpu.upload_f32(&scale)?, &gpu.upload_f32(&shift)?, Act::None)
        }
        "Concat" => {
            let parts: Vec<&GpuTensor> =
                node.inputs.iter().map(|i| env.get(i)).collect::<Result<_>>()?;
            let axis = node.int("axis", 1).rem_euclid(x.shape.len().max(1) as i64) as usize;
            gpu.concat(&parts, axis)
        }
        "Resize" | "Upsample" => {
            // Upsample(X, scales); Resize(X, roi, scales, sizes): scales or sizes, 4 values.
            let four_values = |i: usize| {
                let name = node.inputs.get(i).filter(|n| !n.is_empty())?;
                consts.get(name).filter(|c| c.values.len() == 4)
            };
            let [_, _, h, w] = four(&x.shape)?;
            let scales = if node.op == "Upsample" { four_values(1) } else { four_values(2) };
            let (oh, ow) = match (scales, four_values(3)) {
                (Some(s), _) => {
                    ((h as f64 * s.values[2]) as usize, (w as f64 * s.values[3]) as usize)
                }
                (None, Some(sizes)) => (sizes.values[2] as usize, sizes.values[3] as usize),
                (None, None) => return Err(unsupported("scales or sizes not constant")),
            };
            if oh == 0 || ow == 0 {
                return Err(unsupported("an empty output"));
            }
            let bilinear = node.string("mode", "nearest") != "nearest";
            let align = node.string("coordinate_transformation_mode", "") == "align_corners";
            gpu.resize(x, oh, ow, bilinear, align)
        }
        _ => Err(unsupported("no GPU kernel")),
    }
}
