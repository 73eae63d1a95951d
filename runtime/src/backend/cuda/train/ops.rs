//! f32 device arrays and one launcher per kernel that head training uses (the inference
//! kernels' `_f32` entry points, `kernels/src/backward.cu` and `kernels/src/train.cu`), plus
//! the row-major cuBLAS SGEMM with a choice of operand layouts.

use super::super::context::{err, GpuContext};
use super::super::fusion::Act;
use super::super::geometry::{self, ConvShape, Launch, PoolShape};
use super::super::train_plan::Product;
use crate::error::{Error, Result};
use crate::train::real::Op;
use cudarc::cublas::sys as blas;
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, LaunchArgs, LaunchConfig, PushKernelArg};

/// An f32 buffer in device memory.
pub type Buf = CudaSlice<f32>;

/// An f32 tensor in device memory: its shape and buffer.
pub struct DeviceArray {
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values (at least one element is allocated, so empty tensors have a buffer).
    pub buf: Buf,
}

impl DeviceArray {
    /// Element count.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when it has no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

static NULL: u64 = 0;

fn e(gpu: &GpuContext, m: impl std::fmt::Display) -> Error {
    err(gpu.ordinal, m)
}

fn i32_of(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        Error::InvalidArgument(format!("{what} = {v} is too large for the GPU kernels"))
    })
}

fn i64_of(v: usize) -> i64 {
    v as i64
}

/// A zeroed buffer of `n` values (one at least).
pub fn alloc(gpu: &GpuContext, n: usize) -> Result<Buf> {
    gpu.stream.alloc_zeros::<f32>(n.max(1)).map_err(|x| e(gpu, x))
}

/// A zeroed tensor.
pub fn zeros(gpu: &GpuContext, shape: &[usize]) -> Result<DeviceArray> {
    Ok(DeviceArray { shape: shape.to_vec(), buf: alloc(gpu, shape.iter().product())? })
}

/// Copies host values to the device.
pub fn upload(gpu: &GpuContext, shape: &[usize], values: &[f32]) -> Result<DeviceArray> {
    if shape.iter().product::<usize>() != values.len() {
        return Err(Error::BadTensor(format!("shape {shape:?} but {} values", values.len())));
    }
    let buf = if values.is_empty() {
        alloc(gpu, 1)?
    } else {
        gpu.stream.clone_htod(values).map_err(|x| e(gpu, x))?
    };
    Ok(DeviceArray { shape: shape.to_vec(), buf })
}

/// Copies a tensor's values back to the host.
pub fn download(gpu: &GpuContext, a: &DeviceArray) -> Result<Vec<f32>> {
    let mut v = gpu.stream.clone_dtoh(&a.buf).map_err(|x| e(gpu, x))?;
    v.truncate(a.len());
    Ok(v)
}

/// A device copy of a tensor.
pub fn copy(gpu: &GpuContext, a: &DeviceArray) -> Result<DeviceArray> {
    let buf = gpu.stream.clone_dtod(&a.buf).map_err(|x| e(gpu, x))?;
    Ok(DeviceArray { shape: a.shape.clone(), buf })
}

fn cfg(l: Launch) -> LaunchConfig {
    LaunchConfig { grid_dim: l.grid, block_dim: l.block, shared_mem_bytes: l.shared_bytes }
}

fn go(gpu: &GpuContext, mut b: LaunchArgs<'_>, l: Launch) -> Result<()> {
    // SAFETY: every caller pushes exactly the kernel's parameters, in order, as declared in
    // kernels/src/*.cu, after sizing the buffers from the same shapes it passes.
    unsafe { b.launch(cfg(l)) }.map_err(|x| e(gpu, x))?;
    Ok(())
}

fn opt<'a>(b: &mut LaunchArgs<'a>, p: Option<&'a Buf>) {
    match p {
        Some(s) => b.arg(s),
        None => b.arg(&NULL),
    };
}

/// Product `p` (row-major, [`Product`]) on cuBLAS in f32, written over its part of `c`.
pub fn gemm(gpu: &GpuContext, p: &Product, a: &Buf, b: &Buf, c: &mut Buf) -> Result<()> {
    let (m, n, k) = (p.m, p.n, p.k);
    let (a, b, c) = ((a, p.a.0, p.a.1), (b, p.b.0, p.b.1), (c, p.c));
    let fits = |buf: &Buf, off: usize, len: usize| off + len <= buf.len();
    if !fits(a.0, a.1, m * k) || !fits(b.0, b.1, k * n) || !fits(c.0, c.1, m * n) {
        return Err(Error::BadTensor(format!("a {m}×{k}·{k}×{n} GEMM on buffers too small")));
    }
    let (mi, ni, ki) = (i32_of("rows", m)?, i32_of("columns", n)?, i32_of("depth", k)?);
    let op = |o: Op| match o {
        Op::N => blas::cublasOperation_t::CUBLAS_OP_N,
        Op::T => blas::cublasOperation_t::CUBLAS_OP_T,
    };
    // Column-major cᵀ[n×m] = op(b)ᵀ·op(a)ᵀ: a row-major [r, s] operand is its column-major
    // transpose with leading dimension s.
    let lda = if a.2 == Op::N { ki } else { mi };
    let ldb = if b.2 == Op::N { ni } else { ki };
    let (one, zero) = (1.0f32, 0.0f32);
    let (ap, _ra) = a.0.device_ptr(&gpu.stream);
    let (bp, _rb) = b.0.device_ptr(&gpu.stream);
    let (cp, _rc) = c.0.device_ptr_mut(&gpu.stream);
    let (ap, bp, cp) = (ap + 4 * a.1 as u64, bp + 4 * b.1 as u64, cp + 4 * c.1 as u64);
    // SAFETY: the pointers are live device buffers holding the operands (sizes checked above),
    // on the handle's stream; alpha and beta are host f32.
    unsafe {
        cudarc::cublas::result::sgemm(
            *gpu.blas.handle(),
            op(b.2),
            op(a.2),
            ni,
            mi,
            ki,
            &one,
            bp as *const f32,
            ldb,
            ap as *const f32,
            lda,
            &zero,
            cp as *mut f32,
            ni,
        )
    }
    .map_err(|x| e(gpu, x))
}

/// y = conv(x, w) + bias (the inference kernels, no epilogue activation).
pub fn conv2d(
    gpu: &GpuContext,
    x: &DeviceArray,
    w: &Buf,
    bias: Option<&Buf>,
    shape: &ConvShape,
    out: &[usize],
) -> Result<DeviceArray> {
    let y = zeros(gpu, out)?;
    let (kernel, l) = geometry::conv(shape, &gpu.limits)?;
    let name = if kernel == geometry::ConvKernel::ImplicitGemm {
        "conv2d_igemm_f32"
    } else {
        "conv2d_direct_f32"
    };
    let f = gpu.function(name)?;
    let (code, alpha) = Act::None.code();
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(&x.buf).arg(w);
    opt(&mut b, bias);
    b.arg(&NULL).arg(&y.buf).arg(shape).arg(&code).arg(&alpha);
    go(gpu, b, l)?;
    Ok(y)
}

/// col = im2col(x) for group `g` (`[C/groups·k·k, N·Ho·Wo]`).
pub fn im2col(gpu: &GpuContext, x: &Buf, col: &mut Buf, shape: &ConvShape, g: i32) -> Result<()> {
    let f = gpu.function("im2col_f32")?;
    let l =
        geometry::elementwise(shape.k_len() * shape.output_len() / shape.oc as u64, &gpu.limits)?;
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(x).arg(col).arg(shape).arg(&g);
    go(gpu, b, l)
}

/// The input gradient of group `g` from its column gradient (writes that group's channels).
pub fn col2im(gpu: &GpuContext, dcol: &Buf, dx: &mut Buf, shape: &ConvShape, g: i32) -> Result<()> {
    let f = gpu.function("col2im_f32")?;
    let total = shape.n as u64 * (shape.c / shape.groups) as u64 * shape.h as u64 * shape.w as u64;
    let l = geometry::elementwise(total, &gpu.limits)?;
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(dcol).arg(dx).arg(shape).arg(&g);
    go(gpu, b, l)
}

/// `y[j, i, k] = x[i, j, k]` for `x` of `[a, b, inner]`.
pub fn swap01(gpu: &GpuContext, x: &Buf, a: usize, b_: usize, inner: usize) -> Result<Buf> {
    let mut y = alloc(gpu, a * b_ * inner)?;
    let f = gpu.function("swap01_f32")?;
    let l = geometry::elementwise((a * b_ * inner) as u64, &gpu.limits)?;
    let (ai, bi, inn) = (i32_of("axis", a)?, i32_of("axis", b_)?, i64_of(inner));
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(x).arg(&mut y).arg(&ai).arg(&bi).arg(&inn);
    go(gpu, b, l)?;
    Ok(y)
}

/// In place, y = act(y + bias) over rows of `cols` (bias may be absent).
pub fn bias_act(
    gpu: &GpuContext,
    y: &mut Buf,
    bias: Option<&Buf>,
    rows: usize,
    cols: usize,
    act: Act,
) -> Result<()> {
    let f = gpu.function("bias_act_rows_f32")?;
    let l = geometry::elementwise((rows * cols) as u64, &gpu.limits)?;
    let (code, alpha) = act.code();
    let (r, c) = (i64_of(rows), i32_of("columns", cols)?);
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(y);
    opt(&mut b, bias);
    b.arg(&r).arg(&c).arg(&code).arg(&alpha);
    go(gpu, b, l)
}

/// db[c] = Σ_rows dy[r, c] (written).
pub fn bias_grad_rows(
    gpu: &GpuContext,
    dy: &Buf,
    db: &mut Buf,
    rows: usize,
    cols: usize,
) -> Result<()> {
    let f = gpu.function("bias_grad_rows_f32")?;
    let l = geometry::columns(cols as u64, &gpu.limits)?;
    let (r, c) = (i64_of(rows), i32_of("columns", cols)?);
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(dy).arg(db).arg(&r).arg(&c);
    go(gpu, b, l)
}

/// db[c] = Σ over batch and plane of dy[n, c, :] (written).
pub fn bias_grad_channels(
    gpu: &GpuContext,
    dy: &Buf,
    db: &mut Buf,
    (n, c, plane): (usize, usize, usize),
) -> Result<()> {
    let f = gpu.function("bias_grad_channels_f32")?;
    let l = geometry::rows(c as u64, plane as u64, &gpu.limits)?;
    let (ni, ci, pi) = (i32_of("batch", n)?, i32_of("channels", c)?, i32_of("plane", plane)?);
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(dy).arg(db).arg(&ni).arg(&ci).arg(&pi);
    go(gpu, b, l)
}

/// y = act(x).
pub fn act_forward(gpu: &GpuContext, x: &Buf, total: usize, act: Act) -> Result<Buf> {
    let mut y = alloc(gpu, total)?;
    let f = gpu.function("act_forward_f32")?;
    let l = geometry::elementwise(total as u64, &gpu.limits)?;
    let (code, alpha) = act.code();
    let t = i64_of(total);
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(x).arg(&mut y).arg(&t).arg(&code).arg(&alpha);
    go(gpu, b, l)?;
    Ok(y)
}

/// dx = dy·act'(x) (from the input `x` or, for sigmoid and tanh, the output `y`).
pub fn act_backward(
    gpu: &GpuContext,
    x: Option<&Buf>,
    y: Option<&Buf>,
    dy: &Buf,
    total: usize,
    act: Act,
) -> Result<Buf> {
    let mut dx = alloc(gpu, total)?;
    let f = gpu.function("act_backward_f32")?;
    let l = geometry::elementwise(total as u64, &gpu.limits)?;
    let (code, alpha) = act.code();
    let t = i64_of(total);
    let mut b = gpu.stream.launch_builder(&f);
    opt(&mut b, x);
    opt(&mut b, y);
    b.arg(dy).arg(&mut dx).arg(&t).arg(&code).arg(&alpha);
    go(gpu, b, l)?;
    Ok(dx)
}

/// BatchNorm forward buffers: γ, β, running mean and variance.
pub struct NormParams<'a> {
    /// Scale.
    pub gamma: &'a Buf,
    /// Shift.
    pub beta: &'a Buf,
}

/// BatchNorm forward over `[n, c, plane]`: y, and in training x̂ and 1/σ (`saved`).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward(
    gpu: &GpuContext,
    x: &Buf,
    p: NormParams<'_>,
    running: (&mut Buf, &mut Buf),
    saved: Option<(&mut Buf, &mut Buf)>,
    (n, c, plane): (usize, usize, usize),
    (eps, momentum): (f32, f32),
    batch_stats: bool,
) -> Result<Buf> {
    let mut y = alloc(gpu, n * c * plane)?;
    let f = gpu.function("batchnorm_forward_f32")?;
    let l = geometry::rows(c as u64, (n * plane) as u64, &gpu.limits)?;
    let (ni, ci, pi) = (i32_of("batch", n)?, i32_of("channels", c)?, i32_of("plane", plane)?);
    let bs = i32::from(batch_stats);
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(x).arg(p.gamma).arg(p.beta).arg(running.0).arg(running.1);
    match saved {
        Some((xhat, inv)) => {
            b.arg(xhat).arg(inv);
        }
        None => {
            b.arg(&NULL).arg(&NULL);
        }
    }
    b.arg(&mut y).arg(&ni).arg(&ci).arg(&pi).arg(&eps).arg(&momentum).arg(&bs);
    go(gpu, b, l)?;
    Ok(y)
}

/// BatchNorm backward: dγ, dβ written; dx when asked.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward(
    gpu: &GpuContext,
    dy: &Buf,
    (xhat, inv_std): (&Buf, &Buf),
    gamma: &Buf,
    (dgamma, dbeta): (&mut Buf, &mut Buf),
    (n, c, plane): (usize, usize, usize),
    batch_stats: bool,
    want_dx: bool,
) -> Result<Option<Buf>> {
    let mut dx = if want_dx { Some(alloc(gpu, n * c * plane)?) } else { None };
    let f = gpu.function("batchnorm_backward_f32")?;
    let l = geometry::rows(c as u64, (n * plane) as u64, &gpu.limits)?;
    let (ni, ci, pi) = (i32_of("batch", n)?, i32_of("channels", c)?, i32_of("plane", plane)?);
    let bs = i32::from(batch_stats);
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(dy).arg(xhat).arg(inv_std).arg(gamma);
    match dx.as_mut() {
        Some(d) => b.arg(d),
        None => b.arg(&NULL),
    };
    b.arg(dgamma).arg(dbeta).arg(&ni).arg(&ci).arg(&pi).arg(&bs);
    go(gpu, b, l)?;
    Ok(dx)
}

/// LayerNorm forward over rows of `len`: y, and in training x̂ and 1/σ per row (`saved`).
pub fn layernorm_forward(
    gpu: &GpuContext,
    x: &Buf,
    p: NormParams<'_>,
    saved: Option<(&mut Buf, &mut Buf)>,
    (rows, len): (usize, usize),
    eps: f32,
) -> Result<Buf> {
    let mut y = alloc(gpu, rows * len)?;
    let f = gpu.function("layernorm_forward_f32")?;
    let l = geometry::rows(rows as u64, len as u64, &gpu.limits)?;
    let li = i32_of("row length", len)?;
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(x).arg(p.gamma).arg(p.beta);
    match saved {
        Some((xhat, inv)) => {
            b.arg(xhat).arg(inv);
        }
        None => {
            b.arg(&NULL).arg(&NULL);
        }
    }
    b.arg(&mut y).arg(&li).arg(&eps);
    go(gpu, b, l)?;
    Ok(y)
}

/// LayerNorm backward: dγ, dβ written; dx when asked.
pub fn layernorm_backward(
    gpu: &GpuContext,
    dy: &Buf,
    (xhat, inv_std): (&Buf, &Buf),
    gamma: &Buf,
    (dgamma, dbeta): (&mut Buf, &mut Buf),
    (rows, len): (usize, usize),
    want_dx: bool,
) -> Result<Option<Buf>> {
    let li = i32_of("row length", len)?;
    {
        let f = gpu.function("layernorm_param_grads_f32")?;
        let l = geometry::columns(len as u64, &gpu.limits)?;
        let r = i64_of(rows);
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(dy).arg(xhat).arg(dgamma).arg(dbeta).arg(&r).arg(&li);
        go(gpu, b, l)?;
    }
    if !want_dx {
        return Ok(None);
    }
    let mut dx = alloc(gpu, rows * len)?;
    let f = gpu.function("layernorm_backward_f32")?;
    let l = geometry::rows(rows as u64, len as u64, &gpu.limits)?;
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(dy).arg(xhat).arg(inv_std).arg(gamma).arg(&mut dx).arg(&li);
    go(gpu, b, l)?;
    Ok(Some(dx))
}

/// Inverted dropout: y and the mask (0 or 1/(1−p) per element).
pub fn dropout_forward(
    gpu: &GpuContext,
    x: &Buf,
    total: usize,
    p: f32,
    seed: u64,
) -> Result<(Buf, Buf)> {
    let (mut y, mut mask) = (alloc(gpu, total)?, alloc(gpu, total)?);
    let f = gpu.function("dropout_forward_f32")?;
    let l = geometry::elementwise(total as u64, &gpu.limits)?;
    let (t, keep) = (i64_of(total), 1.0 / (1.0 - p));
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(x).arg(&mut y).arg(&mut mask).arg(&t).arg(&p).arg(&keep).arg(&seed);
    go(gpu, b, l)?;
    Ok((y, mask))
}

/// a·b element-wise.
pub fn mul(gpu: &GpuContext, a: &Buf, b_: &Buf, total: usize) -> Result<Buf> {
    let mut y = alloc(gpu, total)?;
    let f = gpu.function("mul_f32")?;
    let l = geometry::elementwise(total as u64, &gpu.limits)?;
    let t = i64_of(total);
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(a).arg(b_).arg(&mut y).arg(&t);
    go(gpu, b, l)?;
    Ok(y)
}

/// x *= s in place.
pub fn scale(gpu: &GpuContext, x: &mut Buf, total: usize, s: f32) -> Result<()> {
    let f = gpu.function("scale_f32")?;
    let l = geometry::elementwise(total as u64, &gpu.limits)?;
    let t = i64_of(total);
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(x).arg(&t).arg(&s);
    go(gpu, b, l)
}

/// Σ x² (block partials summed on the host in f64).
pub fn sum_squares(gpu: &GpuContext, x: &Buf, total: usize) -> Result<f64> {
    let l = geometry::elementwise(total as u64, &gpu.limits)?;
    let mut out = alloc(gpu, l.grid.0 as usize)?;
    let f = gpu.function("sum_squares_f32")?;
    let t = i64_of(total);
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(x).arg(&mut out).arg(&t);
    go(gpu, b, l)?;
    let parts = gpu.stream.clone_dtoh(&out).map_err(|x| e(gpu, x))?;
    Ok(parts.iter().map(|&v| v as f64).sum())
}

/// Max pooling forward.
pub fn maxpool(gpu: &GpuContext, x: &Buf, s: &PoolShape) -> Result<Buf> {
    let total = (s.n * s.c) as usize * (s.oh * s.ow) as usize;
    let mut y = alloc(gpu, total)?;
    let f = gpu.function("maxpool2d_f32")?;
    let l = geometry::elementwise(total as u64, &gpu.limits)?;
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(x).arg(&mut y).arg(s);
    go(gpu, b, l)?;
    Ok(y)
}

/// Max pooling backward (the gradient goes to each window's first maximum).
pub fn maxpool_backward(gpu: &GpuContext, x: &Buf, dy: &Buf, s: &PoolShape) -> Result<Buf> {
    let total = (s.n * s.c) as usize * (s.h * s.w) as usize;
    let mut dx = alloc(gpu, total)?;
    let f = gpu.function("maxpool2d_backward_f32")?;
    let l = geometry::elementwise(total as u64, &gpu.limits)?;
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(x).arg(dy).arg(&mut dx).arg(s);
    go(gpu, b, l)?;
    Ok(dx)
}

/// Mean over each plane of `plane` values.
pub fn global_avgpool(gpu: &GpuContext, x: &Buf, planes: usize, plane: usize) -> Result<Buf> {
    let mut y = alloc(gpu, planes)?;
    let f = gpu.function("global_avgpool_f32")?;
    let l = geometry::rows(planes as u64, plane as u64, &gpu.limits)?;
    let p = i32_of("plane", plane)?;
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(x).arg(&mut y).arg(&p);
    go(gpu, b, l)?;
    Ok(y)
}

/// dx = dy / plane, spread over each plane.
pub fn global_avgpool_backward(
    gpu: &GpuContext,
    dy: &Buf,
    planes: usize,
    plane: usize,
) -> Result<Buf> {
    let mut dx = alloc(gpu, planes * plane)?;
    let f = gpu.function("global_avgpool_backward_f32")?;
    let l = geometry::elementwise((planes * plane) as u64, &gpu.limits)?;
    let (pl, p) = (i64_of(planes), i32_of("plane", plane)?);
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(dy).arg(&mut dx).arg(&pl).arg(&p);
    go(gpu, b, l)?;
    Ok(dx)
}

/// ×2 upsampling of `planes` planes of `h`×`w`: nearest or bilinear (half-pixel).
pub fn upsample2x(
    gpu: &GpuContext,
    x: &Buf,
    planes: usize,
    (h, w): (usize, usize),
    bilinear: bool,
) -> Result<Buf> {
    let total = planes * 4 * h * w;
    let mut y = alloc(gpu, total)?;
    let f = gpu.function(if bilinear { "resize_bilinear_f32" } else { "resize_nearest_f32" })?;
    let l = geometry::elementwise(total as u64, &gpu.limits)?;
    let (pl, hi, wi) = (i64_of(planes), i32_of("height", h)?, i32_of("width", w)?);
    let (oh, ow) = (2 * hi, 2 * wi);
    let align = 0i32;
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(x).arg(&mut y).arg(&pl).arg(&hi).arg(&wi).arg(&oh).arg(&ow);
    if bilinear {
        b.arg(&align);
    }
    go(gpu, b, l)?;
    Ok(y)
}

/// Gradient of [`upsample2x`].
pub fn upsample2x_backward(
    gpu: &GpuContext,
    dy: &Buf,
    planes: usize,
    (h, w): (usize, usize),
    bilinear: bool,
) -> Result<Buf> {
    let total = planes * h * w;
    let mut dx = alloc(gpu, total)?;
    let l = geometry::elementwise(total as u64, &gpu.limits)?;
    let (pl, hi, wi) = (i64_of(planes), i32_of("height", h)?, i32_of("width", w)?);
    if bilinear {
        let f = gpu.function("upsample_bilinear2x_backward_f32")?;
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(dy).arg(&mut dx).arg(&pl).arg(&hi).arg(&wi);
        go(gpu, b, l)?;
    } else {
        let f = gpu.function("upsample_nearest_backward_f32")?;
        let factor = 2i32;
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(dy).arg(&mut dx).arg(&pl).arg(&hi).arg(&wi).arg(&factor);
        go(gpu, b, l)?;
    }
    Ok(dx)
}

/// Softmax along the middle axis of `[outer, len, inner]`.
pub fn softmax_axis(
    gpu: &GpuContext,
    x: &Buf,
    (outer, len, inner): (usize, usize, usize),
) -> Result<Buf> {
    let mut y = alloc(gpu, outer * len * inner)?;
    let f = gpu.function("softmax_axis_f32")?;
    let l = geometry::elementwise((outer * inner) as u64, &gpu.limits)?;
    let (o, li, i) = (i64_of(outer), i32_of("softmax length", len)?, i64_of(inner));
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(x).arg(&mut y).arg(&o).arg(&li).arg(&i);
    go(gpu, b, l)?;
    Ok(y)
}

/// Softmax cross-entropy over the class axis of `[n, classes, inner]` logits: per-row losses
/// (rows = n·inner, on the host) and the gradient scaled by `grad_scale`. Labels are checked
/// below `classes` by the caller; negative labels are ignored.
pub fn softmax_xent(
    gpu: &GpuContext,
    logits: &Buf,
    labels: &[i32],
    (classes, inner): (usize, usize),
    grad_scale: f32,
) -> Result<(Vec<f32>, Buf)> {
    let rows = labels.len();
    let labels = gpu.stream.clone_htod(labels).map_err(|x| e(gpu, x))?;
    let mut loss = alloc(gpu, rows)?;
    let mut grad = alloc(gpu, rows * classes)?;
    let f = gpu.function("softmax_xent_axis_f32")?;
    let l = geometry::rows(rows as u64, classes as u64, &gpu.limits)?;
    let (c, i) = (i32_of("classes", classes)?, i64_of(inner));
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(logits).arg(&labels).arg(&mut loss).arg(&mut grad).arg(&c).arg(&i).arg(&grad_scale);
    go(gpu, b, l)?;
    let mut loss = gpu.stream.clone_dtoh(&loss).map_err(|x| e(gpu, x))?;
    loss.truncate(rows);
    Ok((loss, grad))
}

/// Rows `rows` of a device matrix of rows of `len` values.
pub fn gather_rows(gpu: &GpuContext, x: &Buf, rows: &[usize], len: usize) -> Result<Buf> {
    let idx: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
    let idx = gpu.stream.clone_htod(&idx).map_err(|x| e(gpu, x))?;
    let mut y = alloc(gpu, rows.len() * len)?;
    let f = gpu.function("gather_rows_f32")?;
    let l = geometry::elementwise((rows.len() * len) as u64, &gpu.limits)?;
    let (c, li) = (i64_of(rows.len()), i64_of(len));
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(x).arg(&idx).arg(&mut y).arg(&c).arg(&li);
    go(gpu, b, l)?;
    Ok(y)
}
