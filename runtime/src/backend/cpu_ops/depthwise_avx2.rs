//! The AVX2+FMA sweeps of a band of [`DepthwiseConv`](super::depthwise::DepthwiseConv): the
//! register blocking of [`super::depthwise_avx512`] with 8-value vectors. [`ROWS`] output rows
//! at a time, accumulated in registers (4 accumulators, 9 broadcast weights and one input
//! vector fill the 16 ymm registers), so each input vector loaded feeds every output row it
//! reaches; outputs are stored once, clamped. The last vector of a row is masked. Stride 2
//! reads zero-padded rows and splits their even and odd columns
//! ([`even_odd`]). The taps are summed in the order of the one-loop sweep of
//! [`super::depthwise`] (bias, then row by row, column by column), so both give the same bits.

use super::avx2::{even_odd, mask};
use super::depthwise::{sweep_band, Block, BAND_ROWS as ROWS};
use super::Activation;
use std::arch::x86_64::*;

/// `dst` (`rows × ow`, row-major) from a band's zero-padded input rows `padded` (`width`
/// values each), as [`super::depthwise_avx512::band`] computes it (same layouts and
/// requirements; stride 2 reads at most 16 values past its last row, within
/// [`STRIDE2_SLACK`](super::depthwise_avx512::STRIDE2_SLACK)).
///
/// Panics unless the stride is 1 or 2, `dst` holds whole rows and `padded` the rows they read.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn band(
    stride: usize,
    padded: &[f32],
    width: usize,
    ow: usize,
    k: &[f32; 9],
    bias: f32,
    act: Activation,
    dst: &mut [f32],
) {
    let v = Vectors::new(k, bias, act);
    let blocks: [Block<Vectors>; 4] = [block::<ROWS>, block::<1>, block2::<ROWS>, block2::<1>];
    sweep_band(stride, padded, width, ow, SLACK2, &v, blocks, dst)
}

/// Values a stride-2 band reads past its last padded row: the last vector starts at column
/// `2·(ow - 1)` at most and its loads reach 18 values further, 16 past the row's end.
const SLACK2: usize = 16;

/// `R` stride-2 output rows from padded rows `src`, `src + width`, … (`2R + 1` of them).
///
/// # Safety
/// AVX2 and FMA; `src` readable for `2R·width + 2·ow + 16` values, `dst` writable for `R·ow`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn block2<const R: usize>(
    src: *const f32,
    width: usize,
    ow: usize,
    v: &Vectors,
    dst: *mut f32,
) {
    let w = &v.w;
    let mut c = 0;
    while c < ow {
        let mut acc = [v.bias; R];
        for i in 0..2 * R + 1 {
            let row = src.add(i * width + 2 * c);
            let (a, b) = (_mm256_loadu_ps(row), _mm256_loadu_ps(row.add(8)));
            let (a2, b2) = (_mm256_loadu_ps(row.add(2)), _mm256_loadu_ps(row.add(10)));
            let ((x0, x1), (x2, _)) = (even_odd(a, b), even_odd(a2, b2));
            // Row `i` is tap row `ky = i - 2r` of output row `r`.
            for ky in 0..3 {
                if i >= ky && (i - ky) % 2 == 0 && (i - ky) / 2 < R {
                    let r = (i - ky) / 2;
                    let t = _mm256_fmadd_ps(w[ky * 3], x0, acc[r]);
                    let t = _mm256_fmadd_ps(w[ky * 3 + 1], x1, t);
                    acc[r] = _mm256_fmadd_ps(w[ky * 3 + 2], x2, t);
                }
            }
        }
        v.store(&acc, ow - c, dst.add(c), ow);
        c += 8;
    }
}

/// `R` stride-1 output rows from input rows `src`, `src + width`, … (`R + 2` of them).
///
/// # Safety
/// AVX2 and FMA; `src` must be readable for `(R + 1)·width + ow + 2` values and `dst` writable
/// for `R·ow`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn block<const R: usize>(
    src: *const f32,
    width: usize,
    ow: usize,
    v: &Vectors,
    dst: *mut f32,
) {
    let mut c = 0;
    while c < ow {
        let (n, m) = (ow - c, mask(ow - c));
        let mut acc = [v.bias; R];
        for i in 0..R + 2 {
            let row = src.add(i * width + c);
            for kx in 0..3 {
                let x = if n >= 8 {
                    _mm256_loadu_ps(row.add(kx))
                } else {
                    _mm256_maskload_ps(row.add(kx), m)
                };
                for ky in 0..3 {
                    if i >= ky && i - ky < R {
                        acc[i - ky] = _mm256_fmadd_ps(v.w[ky * 3 + kx], x, acc[i - ky]);
                    }
                }
            }
        }
        v.store(&acc, n, dst.add(c), ow);
        c += 8;
    }
}

/// The weights, bias and clamp bounds, broadcast.
struct Vectors {
    w: [__m256; 9],
    bias: __m256,
    lo: __m256,
    hi: __m256,
}

impl Vectors {
    #[target_feature(enable = "avx2")]
    unsafe fn new(k: &[f32; 9], bias: f32, act: Activation) -> Vectors {
        let mut w = [_mm256_setzero_ps(); 9];
        for (w, &k) in w.iter_mut().zip(k) {
            *w = _mm256_set1_ps(k);
        }
        let (lo, hi) = (_mm256_set1_ps(act.lo), _mm256_set1_ps(act.hi));
        Vectors { w, bias: _mm256_set1_ps(bias), lo, hi }
    }

    /// Stores the first `n` lanes (all 8 for `n ≥ 8`) of row `r` of `acc`, clamped, at
    /// `dst + r·ow`.
    ///
    /// # Safety
    /// AVX2; `dst` writable for `(R - 1)·ow + min(n, 8)` values.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn store<const R: usize>(&self, acc: &[__m256; R], n: usize, dst: *mut f32, ow: usize) {
        let m = mask(n);
        for (r, &a) in acc.iter().enumerate() {
            // `max(lo, a)` then `min(hi, ·)`: a NaN sum stays NaN, as `Activation::apply`.
            let y = _mm256_min_ps(self.hi, _mm256_max_ps(self.lo, a));
            if n >= 8 {
                _mm256_storeu_ps(dst.add(r * ow), y);
            } else {
                _mm256_maskstore_ps(dst.add(r * ow), m, y);
            }
        }
    }
}
