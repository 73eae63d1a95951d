//! The AVX-512F sweeps of a band of [`DepthwiseConv`](super::depthwise::DepthwiseConv):
//! [`ROWS`] output rows at a time, 16 columns per vector, accumulated in registers, so each
//! input vector loaded feeds every output row it reaches (stride 1: 18 loads for 36
//! multiply-adds instead of 36), and outputs are stored once, clamped, into the output plane.
//! The last vector of a row is masked. Stride 2 reads zero-padded rows and splits their even
//! and odd columns with two-register permutes (the same blocking over the parity-phase planes
//! of the portable path measured no faster than the lanes layout). Other ISAs run the portable
//! loop of [`super::depthwise`].

use super::avx512::{even_odd, mask};
use super::depthwise::{sweep_band, Block, BAND_ROWS as ROWS};
use super::Activation;
use std::arch::x86_64::*;

/// Values a stride-2 band reads past its last padded row (the loads of its last vector).
pub const STRIDE2_SLACK: usize = 48;

/// `dst` (`rows × ow`, row-major) from a band's zero-padded input rows `padded` (`width`
/// values each): output `(y, x)` is
/// `act(bias + Σ k[ky·3 + kx] · padded[(stride·y + ky)·width + stride·x + kx])`.
/// - Stride 1: `width ≥ ow + 2`, `rows + 2` input rows.
/// - Stride 2: `width ≥ 2·ow + 2`, `2·rows + 1` input rows, then [`STRIDE2_SLACK`] values of
///   any value. Each 16 outputs' taps come from four loads of a row and three two-register
///   permutes (even columns, odd columns, even columns one further).
///
/// Panics unless the stride is 1 or 2, `dst` holds whole rows and `padded` the rows they read.
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
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
    sweep_band(stride, padded, width, ow, STRIDE2_SLACK, &v, blocks, dst)
}

/// `R` stride-2 output rows from padded rows `src`, `src + width`, … (`2R + 1` of them).
///
/// # Safety
/// AVX-512F; `src` readable for `2R·width + 2·ow + 34` values, `dst` writable for `R·ow`.
#[target_feature(enable = "avx512f")]
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
        let mask = mask(ow - c);
        let mut acc = [v.bias; R];
        for i in 0..2 * R + 1 {
            let row = src.add(i * width + 2 * c);
            let (a, b) = (_mm512_loadu_ps(row), _mm512_loadu_ps(row.add(16)));
            let (a2, b2) = (_mm512_loadu_ps(row.add(2)), _mm512_loadu_ps(row.add(18)));
            let ((x0, x1), (x2, _)) = (even_odd(a, b), even_odd(a2, b2));
            // Row `i` is tap row `ky = i - 2r` of output row `r`.
            for ky in 0..3 {
                if i >= ky && (i - ky) % 2 == 0 && (i - ky) / 2 < R {
                    let r = (i - ky) / 2;
                    let t = _mm512_fmadd_ps(w[ky * 3], x0, acc[r]);
                    let t = _mm512_fmadd_ps(w[ky * 3 + 1], x1, t);
                    acc[r] = _mm512_fmadd_ps(w[ky * 3 + 2], x2, t);
                }
            }
        }
        v.store(&acc, mask, dst.add(c), ow);
        c += 16;
    }
}

/// The weights, bias and clamp bounds, broadcast.
struct Vectors {
    w: [__m512; 9],
    bias: __m512,
    lo: __m512,
    hi: __m512,
}

impl Vectors {
    #[target_feature(enable = "avx512f")]
    unsafe fn new(k: &[f32; 9], bias: f32, act: Activation) -> Vectors {
        let mut w = [_mm512_setzero_ps(); 9];
        for (w, &k) in w.iter_mut().zip(k) {
            *w = _mm512_set1_ps(k);
        }
        let (lo, hi) = (_mm512_set1_ps(act.lo), _mm512_set1_ps(act.hi));
        Vectors { w, bias: _mm512_set1_ps(bias), lo, hi }
    }

    /// Stores row `r` of `acc`, clamped, at `dst + r·ow` (lanes in `mask`).
    ///
    /// # Safety
    /// AVX-512F; `dst` writable for `(R - 1)·ow` values plus the masked lanes.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store<const R: usize>(
        &self,
        acc: &[__m512; R],
        mask: __mmask16,
        dst: *mut f32,
        ow: usize,
    ) {
        for (r, &a) in acc.iter().enumerate() {
            // `max(lo, a)` then `min(hi, ·)`: a NaN sum stays NaN, as `Activation::apply`.
            let y = _mm512_min_ps(self.hi, _mm512_max_ps(self.lo, a));
            _mm512_mask_storeu_ps(dst.add(r * ow), mask, y);
        }
    }
}

/// `R` output rows from input rows `src`, `src + width`, … (`R + 2` of them).
///
/// # Safety
/// AVX-512F; `src` must be readable for `(R + 1)·width + ow + 2` values and `dst` writable for
/// `R·ow`.
#[target_feature(enable = "avx512f")]
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
        let mask = mask(ow - c);
        let mut acc = [v.bias; R];
        for i in 0..R + 2 {
            let row = src.add(i * width + c);
            for kx in 0..3 {
                let x = _mm512_maskz_loadu_ps(mask, row.add(kx));
                for ky in 0..3 {
                    if i >= ky && i - ky < R {
                        acc[i - ky] = _mm512_fmadd_ps(v.w[ky * 3 + kx], x, acc[i - ky]);
                    }
                }
            }
        }
        v.store(&acc, mask, dst.add(c), ow);
        c += 16;
    }
}
