//! [`Real`]: the floating-point element type of training (f32 for real work, f64 for gradient
//! checks), and [`matmul`], the one matrix product every layer uses.

use num_traits::{Float, FloatConst, FromPrimitive};
use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

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
const PARALLEL_MIN_FMA: usize = 1 << 18;

/// `c[m×n] = op(a)[m×k] · op(b)[k×n]`, added to `c` when `accumulate`, else written over it.
/// Row-major operands; large products use the current rayon pool's threads.
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
