//! [`Real`]: the floating-point element type of training (f32 for real work, f64 for gradient
//! checks), and [`matmul`], the one matrix product every layer uses.

use super::dot::{add_products, Rows};
use crate::backend::cpu_ops::parallel;
use crate::backend::cpu_ops::pointwise::PointwiseConv;
use crate::backend::cpu_ops::{Activation, Isa};
use num_traits::{Float, FloatConst, FromPrimitive};
use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};
use tract_linalg::multithread::{multithread_tract_scope, Executor};

/// A floating-point type layers, losses and optimizers compute in.
pub trait Real:
    Float
    + FloatConst
    + FromPrimitive
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
    + Default
    + Debug
    + Send
    + Sync
    + 'static
{
    /// The error function.
    fn erf(self) -> Self;
    /// Converts from f64 (rounding for f32).
    fn of(x: f64) -> Self {
        Self::from_f64(x).unwrap_or_else(Self::nan)
    }
    /// Converts from f32 (exact).
    fn of_f32(x: f32) -> Self;
    /// Converts to f32 (rounding for f64).
    fn to_f32(self) -> f32;
    /// `e^x` in a form that vectorises when inlined into a loop: for f32 a polynomial within
    /// 3e-7 relative of `exp` on `[-87, 88]` (inputs are clamped to it; NaN stays NaN), for
    /// f64 `exp` itself.
    fn exp_in_loop(self) -> Self;
    /// `x` as f32 values when `Self` is f32: the entry to hydrant's own f32 kernels.
    fn as_f32s(x: &[Self]) -> Option<&[f32]>;
    /// `x` as mutable f32 values when `Self` is f32.
    fn as_f32s_mut(x: &mut [Self]) -> Option<&mut [f32]>;
}

impl Real for f32 {
    fn erf(self) -> f32 {
        libm::erff(self)
    }
    fn of_f32(x: f32) -> f32 {
        x
    }
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn exp_in_loop(self) -> f32 {
        exp_f32(self)
    }
    fn as_f32s(x: &[f32]) -> Option<&[f32]> {
        Some(x)
    }
    fn as_f32s_mut(x: &mut [f32]) -> Option<&mut [f32]> {
        Some(x)
    }
}

impl Real for f64 {
    fn erf(self) -> f64 {
        libm::erf(self)
    }
    fn of_f32(x: f32) -> f64 {
        x as f64
    }
    fn to_f32(self) -> f32 {
        self as f32
    }
    #[inline(always)]
    fn exp_in_loop(self) -> f64 {
        self.exp()
    }
    fn as_f32s(_: &[f64]) -> Option<&[f32]> {
        None
    }
    fn as_f32s_mut(_: &mut [f64]) -> Option<&mut [f32]> {
        None
    }
}

/// `e^x` for f32 as Cephes' `expf` computes it: `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`, a
/// degree-7 polynomial in `r`, and `2^n` built in the exponent bits. Branch-free, so loops of
/// it vectorise; no rounding call (adding `1.5·2^23` rounds to nearest).
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    // Comparisons written so that a NaN passes through both.
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    const ROUND: f32 = 12_582_912.0; // 1.5·2^23
                                     // `t`'s low mantissa bits hold n = round(x·log2 e) as an integer: no float-to-int
                                     // conversion (whose NaN and overflow handling would not vectorise).
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let n_bits = t.to_bits().wrapping_sub(ROUND.to_bits());
    // ln 2 in two parts, so that n·LN2_HI is exact.
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_2e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

/// Independent partial sums of [`sum_by`]: enough to hide the add latency and fill a vector.
const SUM_LANES: usize = 16;

/// `Σ f(a[i], b[i])` over `i`, summed in [`SUM_LANES`] interleaved partial sums (then added
/// together) instead of one chain: the loop vectorises and runs at the adder's throughput
/// rather than its latency. The order of additions differs from a sequential sum, within
/// rounding.
#[inline(always)]
pub fn sum_by<T: Real>(a: &[T], b: &[T], f: impl Fn(T, T) -> T) -> T {
    let mut acc = [T::zero(); SUM_LANES];
    let (ca, cb) = (a.chunks_exact(SUM_LANES), b.chunks_exact(SUM_LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..SUM_LANES {
            acc[l] += f(x[l], y[l]);
        }
    }
    let mut total = ra.iter().zip(rb).map(|(&x, &y)| f(x, y)).sum::<T>();
    for v in acc {
        total += v;
    }
    total
}

/// `Σ x[i]`, as [`sum_by`] sums.
#[inline(always)]
pub fn sum<T: Real>(x: &[T]) -> T {
    sum_by(x, x, |v, _| v)
}

/// How a matrix operand is stored (both row-major): as given, or transposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `[rows, cols]` as the product needs it.
    N,
    /// Stored as the transpose: `[cols, rows]`.
    T,
}

/// Products smaller than this many multiply-adds run on one thread (threading costs more).
pub const PARALLEL_MIN_FMA: usize = 1 << 22;

/// `c[m×n] = op(a)[m×k] · op(b)[k×n]`, added to `c` when `accumulate`, else written over it.
/// Row-major operands; large products use the current rayon pool's threads.
///
/// In f32, three of the four layouts run on hydrant's own kernels ([`own_f32`]); f64 (the
/// gradient checks) and `aᵀ · bᵀ` use the `gemm` crate.
///
/// # Panics
/// When a slice is shorter than its shape says (a programming error: callers size buffers).
#[allow(clippy::too_many_arguments)]
pub fn matmul<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    op_a: Op,
    b: &[T],
    op_b: Op,
    c: &mut [T],
    accumulate: bool,
) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "matmul operand sizes");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].iter_mut().for_each(|x| *x = T::zero());
        }
        return;
    }
    let own = match (T::as_f32s(a), T::as_f32s(b), T::as_f32s_mut(c)) {
        (Some(a), Some(b), Some(c)) => own_f32((m, n, k), (a, op_a), (b, op_b), c, accumulate),
        _ => false,
    };
    if own {
        return;
    }
    // (row stride, column stride) of each operand as an m×k / k×n matrix.
    let (a_rs, a_cs) = match op_a {
        Op::N => (k as isize, 1),
        Op::T => (1, m as isize),
    };
    let (b_rs, b_cs) = match op_b {
        Op::N => (n as isize, 1),
        Op::T => (1, k as isize),
    };
    let par = if m * n * k >= PARALLEL_MIN_FMA && rayon::current_num_threads() > 1 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the assert above guarantees every element addressed by these shapes and strides
    // lies inside the slices; `c` does not alias `a` or `b` (distinct borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            T::one(),
            T::one(),
            false,
            false,
            false,
            par,
        );
    }
}

/// [`matmul`] in f32 on hydrant's kernels, each reading the larger operand in place; false
/// (nothing written) for `aᵀ · bᵀ`, which they do not cover.
/// - `a · bᵀ`: row dot products of `a` and `b` ([`add_products`]);
/// - `a · b`: `a` packed as a 1×1 convolution's weights, `b`'s rows its input pixels
///   ([`PointwiseConv`]'s packed-panel kernel);
/// - `aᵀ · b`: the same, after transposing `a` (the smaller operand where layers use it: the
///   output gradient, or a convolution group's weights).
fn own_f32(
    (m, n, k): (usize, usize, usize),
    (a, op_a): (&[f32], Op),
    (b, op_b): (&[f32], Op),
    c: &mut [f32],
    accumulate: bool,
) -> bool {
    let c = &mut c[..m * n];
    let isa = Isa::best();
    let transposed;
    let a = match (op_a, op_b) {
        (Op::N, Op::T) => {
            if !accumulate {
                c.fill(0.0);
            }
            add_products(isa, Rows { a, a_rows: m, b, b_rows: n, len: k, segments: 1 }, c);
            return true;
        }
        (Op::N, Op::N) => &a[..m * k],
        (Op::T, Op::N) => {
            let mut t = vec![0f32; m * k];
            for (kk, row) in a[..k * m].chunks_exact(m).enumerate() {
                row.iter().enumerate().for_each(|(i, &v)| t[i * k + kk] = v);
            }
            transposed = t;
            &transposed
        }
        (Op::T, Op::T) => return false,
    };
    let Ok(conv) = PointwiseConv::new(k, m, a, None, false, Activation::NONE, isa) else {
        return false;
    };
    let mut run = move || match accumulate {
        true => conv.add_image(n, b, c),
        false => conv.run_image(n, b, None, c),
    };
    match parallel::threads() > 1 && m * n * k >= PARALLEL_MIN_FMA {
        true => run(),
        // Small products on this thread alone: waking the others costs more.
        false => parallel::with_pool(None, || multithread_tract_scope(Executor::SingleThread, run)),
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f64], ta: bool, b: &[f64], tb: bool) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    let x = if ta { a[p * m + i] } else { a[i * k + p] };
                    let y = if tb { b[j * k + p] } else { b[p * n + j] };
                    c[i * n + j] += x * y;
                }
            }
        }
        c
    }

    #[test]
    fn f32_matmul_matches_the_naive_product_for_every_transpose() {
        // Partial blocks in every direction, and the benchmark MLP's first layer.
        for (m, n, k) in [(7, 5, 9), (19, 37, 33), (32, 128, 512)] {
            let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
            let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.91).cos()).collect();
            let (a32, b32): (Vec<f32>, Vec<f32>) =
                (a.iter().map(|&v| v as f32).collect(), b.iter().map(|&v| v as f32).collect());
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let want = naive(m, n, k, &a, ta, &b, tb);
                let op = |t| if t { Op::T } else { Op::N };
                let mut c = vec![1f32; m * n];
                matmul(m, n, k, &a32, op(ta), &b32, op(tb), &mut c, false);
                let tol = 1e-5 * k as f64;
                for (x, y) in c.iter().zip(&want) {
                    assert!((*x as f64 - y).abs() < tol, "{m}×{n}×{k} {ta} {tb}: {x} vs {y}");
                }
                matmul(m, n, k, &a32, op(ta), &b32, op(tb), &mut c, true);
                for (x, y) in c.iter().zip(&want) {
                    assert!((*x as f64 - 2.0 * y).abs() < 2.0 * tol, "accumulate {ta} {tb}");
                }
            }
        }
    }

    #[test]
    fn lane_sums_match_sequential_sums_for_every_length() {
        for n in 0..70 {
            let a: Vec<f64> = (0..n).map(|i| (i as f64 * 0.7).sin()).collect();
            let b: Vec<f64> = (0..n).map(|i| (i as f64 * 0.3).cos()).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((sum_by(&a, &b, |x, y| x * y) - want).abs() < 1e-12, "length {n}");
            assert!((sum(&a) - a.iter().sum::<f64>()).abs() < 1e-12, "length {n}");
        }
    }

    #[test]
    fn the_f32_exponential_is_within_3e7_of_exp() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f64 / 200_000.0;
            let got = (x as f32).exp_in_loop() as f64;
            let want = (x as f32 as f64).exp();
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        assert!(f32::NAN.exp_in_loop().is_nan());
        assert_eq!(0f32.exp_in_loop(), 1.0);
        assert!(f32::NEG_INFINITY.exp_in_loop() < 2e-38);
    }

    #[test]
    fn matmul_matches_the_naive_product_for_every_transpose() {
        let (m, n, k) = (7, 5, 9);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.91).cos()).collect();
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let want = naive(m, n, k, &a, ta, &b, tb);
            let op = |t| if t { Op::T } else { Op::N };
            let mut c = vec![1.0; m * n];
            matmul(m, n, k, &a, op(ta), &b, op(tb), &mut c, false);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - y).abs() < 1e-12, "{ta} {tb}: {x} vs {y}");
            }
            matmul(m, n, k, &a, op(ta), &b, op(tb), &mut c, true);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - 2.0 * y).abs() < 1e-12, "accumulate {ta} {tb}");
            }
        }
    }
}
