//! Small planes of [`DepthwiseConv`](super::depthwise::DepthwiseConv): 16 channels at a time,
//! one in each vector lane.
//!
//! On a 7×7 or 14×14 plane a row is shorter than a vector or two, and the per-plane work of the
//! row sweep (padding, row copies, remainders) outweighs its nine multiply-adds per output.
//! Here a group of up to [`GROUP`] channels is first interleaved into a zero-padded scratch
//! plane of 16-value pixels (`[y][x][channel]`); every output pixel is then nine multiply-adds
//! of whole 16-lane vectors at fixed offsets, whatever the stride, and the results are
//! de-interleaved into the channels' output planes. Each output sums the same products in the
//! same order as the row sweep.

use super::depthwise::madd;
use super::{Activation, Isa};

/// Channels per group: the lanes of one AVX-512 vector (two AVX2 ones).
pub const GROUP: usize = 16;

/// One group's geometry.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lanes {
    /// Input plane.
    pub h: usize,
    /// Input plane.
    pub w: usize,
    /// Output plane.
    pub oh: usize,
    /// Output plane.
    pub ow: usize,
    /// 1 or 2.
    pub stride: usize,
    /// Zero rows above the input.
    pub pad_top: usize,
    /// Zero columns left of the input.
    pub pad_left: usize,
}

impl Lanes {
    /// Rows and columns of the padded plane: every tap of every output lies inside.
    fn padded(&self) -> (usize, usize) {
        let reach = |o: usize, n: usize, pad: usize| ((o - 1) * self.stride + 3).max(n + pad);
        (reach(self.oh, self.h, self.pad_top), reach(self.ow, self.w, self.pad_left))
    }

    /// Scratch values of one group: the padded plane, then the results.
    pub fn scratch_len(&self) -> usize {
        let (ph, pw) = self.padded();
        (ph * pw + self.oh * self.ow) * GROUP
    }

    /// The scratch values that must be zero before a job's first group (the padded plane;
    /// groups only ever write its interior).
    pub fn zeroed_len(&self) -> usize {
        let (ph, pw) = self.padded();
        ph * pw * GROUP
    }
}

/// The weights of one group: `taps[t][lane]` is tap `t = ky·3 + kx` of channel `lane`, and
/// `bias[lane]`; lanes past the group's channels are zero.
#[derive(Debug)]
pub(super) struct GroupWeights {
    /// Per tap, one weight per lane.
    pub taps: [[f32; GROUP]; 9],
    /// One bias per lane.
    pub bias: [f32; GROUP],
}

impl GroupWeights {
    /// The weights of channels `c0..c0 + n` from `k[c·9 + t]` and `bias[c]`.
    pub fn new(k: &[f32], bias: &[f32], c0: usize, n: usize) -> GroupWeights {
        let mut g = GroupWeights { taps: [[0.0; GROUP]; 9], bias: [0.0; GROUP] };
        for lane in 0..n.min(GROUP) {
            for (t, tap) in g.taps.iter_mut().enumerate() {
                tap[lane] = k[(c0 + lane) * 9 + t];
            }
            g.bias[lane] = bias[c0 + lane];
        }
        g
    }
}

/// [`group_body`] compiled for `isa`: with AVX-512F (one vector per pixel), AVX2+FMA or
/// neither.
pub(super) fn group(
    isa: Isa,
    geo: &Lanes,
    src: &[f32],
    weights: &GroupWeights,
    act: Activation,
    dst: &mut [f32],
    scratch: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(
            geo: &Lanes,
            src: &[f32],
            weights: &GroupWeights,
            act: Activation,
            dst: &mut [f32],
            scratch: &mut [f32],
        ) {
            group_body::<true>(geo, src, weights, act, dst, scratch)
        }
        match isa {
            // SAFETY: `Isa::Avx512` is only handed out where the CPU has AVX-512F, AVX2 and
            // FMA, `Isa::Avx2` where it has AVX2 and FMA (`Isa::available`).
            Isa::Avx512 => return unsafe { x86::group(geo, src, weights, act, dst, scratch) },
            Isa::Avx2 => return unsafe { avx2(geo, src, weights, act, dst, scratch) },
            Isa::Portable => {}
        }
    }
    let _ = isa;
    group_body::<{ cfg!(target_arch = "aarch64") }>(geo, src, weights, act, dst, scratch)
}

/// One group: `src` holds its channels' `h × w` input planes one after the other (1 to
/// [`GROUP`] of them), `dst` their `oh × ow` output planes. `scratch` holds
/// [`Lanes::scratch_len`] values whose first [`Lanes::zeroed_len`] are zero outside the
/// padded plane's interior.
#[inline(always)]
fn group_body<const FMA: bool>(
    geo: &Lanes,
    src: &[f32],
    weights: &GroupWeights,
    act: Activation,
    dst: &mut [f32],
    scratch: &mut [f32],
) {
    let (padded, results) = scratch[..geo.scratch_len()].split_at_mut(geo.zeroed_len());
    interleave(geo, src, padded);
    compute::<FMA>(geo, padded, weights, act, results);
    deinterleave(geo.oh * geo.ow, results, dst);
}

/// Copies channel `lane`'s input pixel `(y, x)` to lane `lane` of padded pixel
/// `(y + pad_top, x + pad_left)`.
#[inline(always)]
fn interleave(geo: &Lanes, src: &[f32], padded: &mut [f32]) {
    let Lanes { h, w, pad_top, pad_left, .. } = *geo;
    let (_, pw) = geo.padded();
    for (lane, plane) in src.chunks_exact(h * w).take(GROUP).enumerate() {
        for (y, row) in plane.chunks_exact(w).enumerate() {
            let at = ((y + pad_top) * pw + pad_left) * GROUP + lane;
            for (x, &v) in row.iter().enumerate() {
                padded[at + x * GROUP] = v;
            }
        }
    }
}

/// Every output pixel of the group: nine multiply-adds of 16-lane vectors at fixed offsets
/// in the padded plane, then the clamp; `results[pix·16 + lane]`.
#[inline(always)]
fn compute<const FMA: bool>(
    geo: &Lanes,
    padded: &[f32],
    weights: &GroupWeights,
    act: Activation,
    results: &mut [f32],
) {
    let Lanes { oh, ow, stride, .. } = *geo;
    let (_, pw) = geo.padded();
    let offsets: [usize; 9] = std::array::from_fn(|t| ((t / 3) * pw + t % 3) * GROUP);
    for oy in 0..oh {
        let row = &mut results[oy * ow * GROUP..][..ow * GROUP];
        for (ox, out) in row.chunks_exact_mut(GROUP).enumerate() {
            let base = (oy * stride * pw + ox * stride) * GROUP;
            let mut acc = weights.bias;
            for (tap, &off) in weights.taps.iter().zip(&offsets) {
                let p: &[f32; GROUP] = padded[base + off..][..GROUP].try_into().expect("lanes");
                for ((a, &k), &x) in acc.iter_mut().zip(tap).zip(p) {
                    *a = madd::<FMA>(k, x, *a);
                }
            }
            for (o, &a) in out.iter_mut().zip(&acc) {
                *o = act.apply(a);
            }
        }
    }
}

/// Lane `lane` of result pixel `pix` to `dst[lane·pixels + pix]`, for the channels `dst`
/// holds.
#[inline(always)]
fn deinterleave(pixels: usize, results: &[f32], dst: &mut [f32]) {
    for (lane, plane) in dst.chunks_exact_mut(pixels).take(GROUP).enumerate() {
        for (pix, d) in plane.iter_mut().enumerate() {
            *d = results[pix * GROUP + lane];
        }
    }
}

/// AVX-512F versions of the two copies: 16 × 16 blocks transposed in registers (the loops
/// above compile to gathers and scatters, slow on many CPUs).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::avx512::mask;
    use super::{Lanes, GROUP};
    use std::arch::x86_64::*;

    /// `r[i][j]` becomes `r[j][i]`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn transpose(r: &mut [__m512; 16]) {
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        // Per 128-bit lane `l`: `u[4i + j]` holds column `4l + j` of rows `4i..4i + 4`.
        let mut u = [_mm512_setzero_ps(); 16];
        let pd = _mm512_castps_pd;
        for i in 0..4 {
            let (a, b, c, d) = (pd(t[4 * i]), pd(t[4 * i + 1]), pd(t[4 * i + 2]), pd(t[4 * i + 3]));
            u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
            u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
            u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
            u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
        }
        for j in 0..4 {
            let even01 = _mm512_shuffle_f32x4::<0x88>(u[j], u[4 + j]);
            let odd01 = _mm512_shuffle_f32x4::<0xdd>(u[j], u[4 + j]);
            let even23 = _mm512_shuffle_f32x4::<0x88>(u[8 + j], u[12 + j]);
            let odd23 = _mm512_shuffle_f32x4::<0xdd>(u[8 + j], u[12 + j]);
            r[j] = _mm512_shuffle_f32x4::<0x88>(even01, even23);
            r[8 + j] = _mm512_shuffle_f32x4::<0xdd>(even01, even23);
            r[4 + j] = _mm512_shuffle_f32x4::<0x88>(odd01, odd23);
            r[12 + j] = _mm512_shuffle_f32x4::<0xdd>(odd01, odd23);
        }
    }

    /// [`super::interleave`], 16 pixels of a row at a time.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn interleave(geo: &Lanes, src: &[f32], padded: &mut [f32]) {
        let Lanes { h, w, pad_top, pad_left, .. } = *geo;
        let (ph, pw) = geo.padded();
        let n = (src.len() / (h * w)).min(GROUP);
        assert!(padded.len() >= ph * pw * GROUP && h + pad_top <= ph && w + pad_left <= pw);
        let (src, out) = (src.as_ptr(), padded.as_mut_ptr());
        for y in 0..h {
            for x0 in (0..w).step_by(16) {
                let m = mask(w - x0);
                let mut r = [_mm512_setzero_ps(); 16];
                for (c, v) in r.iter_mut().enumerate().take(n) {
                    *v = _mm512_maskz_loadu_ps(m, src.add((c * h + y) * w + x0));
                }
                transpose(&mut r);
                let at = ((y + pad_top) * pw + pad_left + x0) * GROUP;
                for (p, v) in r.iter().enumerate().take(w - x0) {
                    _mm512_storeu_ps(out.add(at + p * GROUP), *v);
                }
            }
        }
    }

    /// [`super::deinterleave`], 16 pixels at a time.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn deinterleave(pixels: usize, results: &[f32], dst: &mut [f32]) {
        let n = (dst.len() / pixels).min(GROUP);
        assert!(results.len() >= pixels * GROUP && dst.len() >= n * pixels);
        let (res, out) = (results.as_ptr(), dst.as_mut_ptr());
        for p0 in (0..pixels).step_by(16) {
            let mut r = [_mm512_setzero_ps(); 16];
            for (p, v) in r.iter_mut().enumerate().take(pixels - p0) {
                *v = _mm512_loadu_ps(res.add((p0 + p) * GROUP));
            }
            transpose(&mut r);
            let m = mask(pixels - p0);
            for (c, v) in r.iter().enumerate().take(n) {
                _mm512_mask_storeu_ps(out.add(c * pixels + p0), m, *v);
            }
        }
    }

    /// [`super::group_body`] with the AVX-512 copies.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn group(
        geo: &Lanes,
        src: &[f32],
        weights: &super::GroupWeights,
        act: super::Activation,
        dst: &mut [f32],
        scratch: &mut [f32],
    ) {
        let (padded, results) = scratch[..geo.scratch_len()].split_at_mut(geo.zeroed_len());
        interleave(geo, src, padded);
        super::compute::<true>(geo, padded, weights, act, results);
        deinterleave(geo.oh * geo.ow, results, dst);
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn the_avx512_copies_equal_the_portable_ones() {
        if !Isa::available().contains(&Isa::Avx512) {
            return;
        }
        // 19 columns: a full block of 16 and a partial one; 11 channels: idle lanes.
        let geo = Lanes { h: 5, w: 19, oh: 3, ow: 10, stride: 2, pad_top: 1, pad_left: 2 };
        let n = 11;
        let src: Vec<f32> = (0..n * geo.h * geo.w).map(|i| i as f32 * 0.5 - 7.0).collect();
        let mut want = vec![0f32; geo.zeroed_len()];
        interleave(&geo, &src, &mut want);
        let mut got = vec![0f32; geo.zeroed_len()];
        // SAFETY: the CPU has AVX-512F (checked above).
        unsafe { x86::interleave(&geo, &src, &mut got) };
        let (_, pw) = geo.padded();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            // Idle lanes of the interior may hold anything; every other value must match.
            let (pix, lane) = (i / GROUP, i % GROUP);
            let interior = (pix / pw).wrapping_sub(geo.pad_top) < geo.h
                && (pix % pw).wrapping_sub(geo.pad_left) < geo.w;
            if lane < n || !interior {
                assert_eq!(g, w, "padded value {i}");
            }
        }
        let pixels = 37;
        let results: Vec<f32> = (0..pixels * GROUP).map(|i| i as f32 - 100.0).collect();
        let mut want = vec![f32::NAN; n * pixels + 3];
        deinterleave(pixels, &results, &mut want[..n * pixels]);
        let mut got = vec![f32::NAN; n * pixels + 3];
        // SAFETY: as above.
        unsafe { x86::deinterleave(pixels, &results, &mut got[..n * pixels]) };
        assert_eq!(got[..n * pixels], want[..n * pixels]);
        assert!(got[n * pixels..].iter().all(|x| x.is_nan()), "wrote past the planes");
    }
}
