//! Single-convolution models: the reference tests of hydrant's ops against tract's own, and
//! the micro-benchmark behind `hydrant bench-ops`.

use super::{fuse, Isa};
use std::time::Instant;
pub use tract_onnx::prelude::TractError;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::ensure;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::math;
use tract_onnx::tract_core::ops::nn::DataFormat;

/// Runs `f` with `threads` threads for tract's and hydrant's ops (1: the calling thread).
pub fn with_threads<R>(threads: usize, f: impl FnOnce() -> R) -> R {
    use tract_linalg::multithread::{multithread_tract_scope, Executor};
    let executor =
        if threads > 1 { Executor::multithread(threads) } else { Executor::SingleThread };
    multithread_tract_scope(executor, f)
}

/// A 2-D convolution with bias, optionally followed by a residual `Add` and a `Relu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvCase {
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Input height and width.
    pub hw: (usize, usize),
    /// Kernel height and width.
    pub kernel: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding: top, left, bottom, right.
    pub pads: [usize; 4],
    /// Whether a second input is added to the convolution's output.
    pub residual: bool,
    /// Whether the result goes through `max(·, 0)`.
    pub relu: bool,
    /// Whether the result then goes through `min(·, 6)` (ReLU6 with `relu`).
    pub relu6: bool,
    /// Whether each channel has its own filter (groups = `cin`, which must equal `cout`).
    pub depthwise: bool,
}

impl ConvCase {
    /// Output height and width.
    pub fn out_hw(&self) -> (usize, usize) {
        let o = |n: usize, a: usize, b: usize| (n + a + b - self.kernel) / self.stride + 1;
        (o(self.hw.0, self.pads[0], self.pads[2]), o(self.hw.1, self.pads[1], self.pads[3]))
    }

    /// Multiply-accumulates of the convolution.
    pub fn macs(&self) -> u64 {
        let (oh, ow) = self.out_hw();
        let cin = if self.depthwise { 1 } else { self.cin };
        (cin * self.cout * self.kernel * self.kernel * oh * ow) as u64
    }

    /// The case as a typed model with seeded random weights, and random inputs for it.
    pub fn model(&self, seed: u64) -> TractResult<(TypedModel, TVec<TValue>)> {
        let mut rnd = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let (h, w) = self.hw;
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact([1, self.cin, h, w]))?;
        let k = self.kernel;
        let (group, cin_per_group) = if self.depthwise { (self.cin, 1) } else { (1, self.cin) };
        ensure!(!self.depthwise || self.cin == self.cout, "depthwise with cin != cout");
        let fan_in = (cin_per_group * k * k) as f32;
        let kernel = rnd.tensor(&[self.cout, cin_per_group, k, k], 1.0 / fan_in.sqrt())?;
        let bias = rnd.tensor(&[self.cout], 0.1)?;
        let (kernel, bias) = (m.add_const("kernel", kernel)?, m.add_const("bias", bias)?);
        let padding = PaddingSpec::Explicit(
            tvec![self.pads[0], self.pads[1]],
            tvec![self.pads[2], self.pads[3]],
        );
        let pool = PoolSpec::new(
            DataFormat::NCHW,
            tvec![k, k],
            padding,
            None,
            Some(tvec![self.stride, self.stride]),
            self.cin,
            self.cout,
        );
        let conv = Conv::new(pool, KernelFormat::OIHW, group, None);
        let mut y = m.wire_node("conv", conv, &[x, kernel, bias])?[0];
        let mut inputs = tvec![rnd.tensor(&[1, self.cin, h, w], 1.0)?.into_tvalue()];
        if self.residual {
            let (oh, ow) = self.out_hw();
            let r = m.add_source("residual", f32::fact([1, self.cout, oh, ow]))?;
            inputs.push(rnd.tensor(&[1, self.cout, oh, ow], 1.0)?.into_tvalue());
            y = m.wire_node("add", math::add(), &[y, r])?[0];
        }
        if self.relu {
            let zero = m.add_const("zero", tensor4(&[[[[0f32]]]]))?;
            y = m.wire_node("relu", math::max(), &[y, zero])?[0];
        }
        if self.relu6 {
            let six = m.add_const("six", tensor4(&[[[[6f32]]]]))?;
            y = m.wire_node("relu6", math::min(), &[y, six])?[0];
        }
        m.select_output_outlets(&[y])?;
        Ok((m, inputs))
    }
}

/// tract's plan and hydrant's plan of one case, side by side.
pub struct Pair {
    /// The model optimized by tract alone.
    pub tract: Arc<TypedRunnableModel>,
    /// The model after [`fuse::patch_pointwise`] and [`fuse::patch`], then optimized by tract.
    pub ours: Arc<TypedRunnableModel>,
    /// How many ops the patch replaced.
    pub replaced: usize,
    /// The case's inputs.
    pub inputs: TVec<TValue>,
}

impl Pair {
    /// Builds both plans for `case`, hydrant's with kernels for `isa`.
    pub fn new(case: &ConvCase, seed: u64, isa: Isa) -> TractResult<Pair> {
        let (model, inputs) = case.model(seed)?;
        let mut patched = model.clone();
        let replaced = fuse::patch_pointwise(&mut patched, isa)? + fuse::patch(&mut patched, isa)?;
        Ok(Pair {
            tract: model.into_optimized()?.into_runnable()?,
            ours: patched.into_optimized()?.into_runnable()?,
            replaced,
            inputs,
        })
    }

    /// As [`Pair::new`], with the model decluttered by tract before the patch (as the runtime
    /// does: batch-1 convolutions become CHW there).
    pub fn decluttered(case: &ConvCase, seed: u64, isa: Isa) -> TractResult<Pair> {
        let (model, inputs) = case.model(seed)?;
        let model = model.into_decluttered()?;
        let mut patched = model.clone();
        let replaced = fuse::patch(&mut patched, isa)?;
        Ok(Pair {
            tract: model.into_optimized()?.into_runnable()?,
            ours: patched.into_optimized()?.into_runnable()?,
            replaced,
            inputs,
        })
    }

    /// Largest absolute difference between the plans' outputs, over the largest magnitude of
    /// tract's.
    pub fn relative_error(&self) -> TractResult<f32> {
        let a = self.tract.run(self.inputs.clone())?.remove(0);
        let b = self.ours.run(self.inputs.clone())?.remove(0);
        ensure!(a.shape() == b.shape(), "shapes {:?} and {:?}", a.shape(), b.shape());
        let (a, b) = (a.try_as_plain_ram()?, b.try_as_plain_ram()?);
        let (a, b) = (a.as_slice::<f32>()?, b.as_slice::<f32>()?);
        let scale = a.iter().fold(0f32, |m, x| m.max(x.abs())).max(f32::MIN_POSITIVE);
        let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        Ok(if diff.is_nan() { f32::INFINITY } else { diff / scale })
    }

    /// Median milliseconds of `iters` runs of tract's and of hydrant's plan, interleaved: wall
    /// time, or with `cpu` the calling thread's on-CPU time (meaningful single-threaded only).
    pub fn time(&self, iters: usize, cpu: bool) -> TractResult<(f64, f64)> {
        let now = || match cpu {
            true => thread_cpu_ms().unwrap_or(0.0),
            false => CLOCK.with(|c| c.elapsed().as_secs_f64() * 1e3),
        };
        let mut t = (Vec::new(), Vec::new());
        for i in 0..iters.max(1) + 2 {
            let start = now();
            self.tract.run(self.inputs.clone())?;
            let mid = now();
            self.ours.run(self.inputs.clone())?;
            let end = now();
            if i >= 2 {
                t.0.push(mid - start);
                t.1.push(end - mid);
            }
        }
        Ok((median(t.0), median(t.1)))
    }
}

/// Milliseconds the calling thread has spent on a CPU (`CLOCK_THREAD_CPUTIME_ID`), or `None`
/// where that clock is not available. Unlike wall time, it does not grow while other processes
/// hold the cores.
pub fn thread_cpu_ms() -> Option<f64> {
    #[cfg(unix)]
    return cpu_clock_ms(libc::CLOCK_THREAD_CPUTIME_ID);
    #[cfg(not(unix))]
    None
}

/// Milliseconds all threads of this process have spent on a CPU (`CLOCK_PROCESS_CPUTIME_ID`,
/// threads that have ended included), or `None` where that clock is not available.
pub fn process_cpu_ms() -> Option<f64> {
    #[cfg(unix)]
    return cpu_clock_ms(libc::CLOCK_PROCESS_CPUTIME_ID);
    #[cfg(not(unix))]
    None
}

/// Reads a CPU-time clock in milliseconds.
#[cfg(unix)]
fn cpu_clock_ms(clock: libc::clockid_t) -> Option<f64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6)
}

thread_local! {
    static CLOCK: Instant = Instant::now();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// xorshift64: deterministic test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    fn tensor(&mut self, shape: &[usize], scale: f32) -> TractResult<Tensor> {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.next() * scale).collect();
        Tensor::from_shape(shape, &v)
    }
}
