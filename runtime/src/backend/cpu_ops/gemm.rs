//! The multiply-accumulate micro-kernel of hydrant's own convolutions.
//!
//! One call computes an `MR × (16·nv)` block `c = u · v` over `k`: `u` is a packed panel of `MR`
//! rows (`u[k·MR + r]`), `v` holds `k` rows of at least `16·nv` contiguous values (row stride
//! `v_stride`). [`panel`] writes the block to `c` as it is; [`panel_into`] stores it into an
//! output tensor through the convolutions' epilogue (bias, residual, clamp), from the
//! accumulators where the ISA allows (AVX-512: masked stores, no scratch round trip).
//! Three implementations compute the same sums: AVX-512F, AVX2+FMA (x86_64, chosen at run time)
//! and a portable one written to auto-vectorise on any target (aarch64 NEON included).

use super::parallel::SharedOut;
use super::{Activation, Isa};

/// Rows of a packed `u` panel (output channels per kernel call).
pub const MR: usize = 8;
/// Columns per vector unit of the kernel (`nv` units per call).
pub const LANES: usize = 16;

/// How far ahead of the current `k` step the x86 kernels prefetch the weight panel, in values
/// (64 steps of `MR` weights: 2 KB). 1 KB measured the same, 4 KB slower (ResNet-18, Xeon).
#[cfg(target_arch = "x86_64")]
const PREFETCH_AHEAD: usize = MR * 64;

/// Panics unless `u` and `v` hold what a call over `k` on `width` columns reads.
fn check_operands(k: usize, u: &[f32], v: &[f32], v_stride: usize, width: usize) {
    assert!(k > 0 && u.len() >= k * MR && v_stride >= width);
    assert!(v.len() >= (k - 1) * v_stride + width);
}

/// Where a block `width` columns wide stores through `dest`: `dest.out` at `dest.at`, after
/// checking that the block's rows and columns fit the block and lie inside the output and the
/// residual (panics otherwise).
fn dest_start(dest: &Dest<'_>, width: usize) -> *mut f32 {
    let rows = dest.bias.len();
    assert!((1..=MR).contains(&rows) && (1..=width).contains(&dest.n));
    let span = (rows - 1) * dest.stride + dest.n;
    if let Some(res) = dest.residual {
        assert!(dest.at + span <= res.len(), "residual shorter than the output");
    }
    dest.out.span(dest.at, span)
}

/// `c[r·c_stride + j] = Σ_kk u[kk·MR + r] · v[kk·v_stride + j]` for `r < MR`, `j < 16·nv`.
///
/// Panics if a slice is too short for `k`, `nv` and the strides (the callers size them).
#[allow(clippy::too_many_arguments)]
pub fn panel(
    isa: Isa,
    k: usize,
    u: &[f32],
    v: &[f32],
    v_stride: usize,
    nv: usize,
    c: &mut [f32],
    c_stride: usize,
) {
    let width = LANES * nv;
    assert!((1..=2).contains(&nv));
    check_operands(k, u, v, v_stride, width);
    assert!(c_stride >= width && c.len() >= (MR - 1) * c_stride + width);
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx512` is only handed out where the CPU has AVX-512F
        // (`Isa::available`); the asserts above bound every access the kernel makes.
        Isa::Avx512 => unsafe {
            let (u, v, c) = (u.as_ptr(), v.as_ptr(), c.as_mut_ptr());
            match nv {
                1 => x86::avx512::<1>(k, u, v, v_stride, c, c_stride),
                _ => x86::avx512::<2>(k, u, v, v_stride, c, c_stride),
            }
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for AVX2 and FMA.
        Isa::Avx2 => unsafe {
            let sink = x86::Sink::Plain { c: c.as_mut_ptr(), c_stride };
            x86::avx2(k, u.as_ptr(), v.as_ptr(), v_stride, nv, sink)
        },
        _ => portable(k, u, v, v_stride, nv, c, c_stride),
    }
}

/// Where [`panel_into`] stores its block, and the epilogue applied on the way: row
/// `r < bias.len()` of the block goes to `out[at + r·stride..][..n]` as
/// `act(Σ + bias[r] (+ residual[at + r·stride..][..n]))`.
#[derive(Clone, Copy)]
pub struct Dest<'a> {
    /// The output tensor.
    pub out: SharedOut,
    /// Position of the block's first value in `out` (and in `residual`).
    pub at: usize,
    /// Distance between consecutive rows of the block in `out`.
    pub stride: usize,
    /// Values stored per row (`1..=16·nv`).
    pub n: usize,
    /// One bias per stored row (`1..=MR` rows).
    pub bias: &'a [f32],
    /// A tensor laid out as `out`, added before the clamp.
    pub residual: Option<&'a [f32]>,
    /// Whether the values already at the block's positions of `out` are added too (after the
    /// residual, before the clamp): `out += block` without a copy of `out`.
    pub accumulate: bool,
    /// The clamp applied last.
    pub act: Activation,
}

/// The block of [`panel`] stored through `dest`'s epilogue. `c` is scratch for ISAs whose
/// kernel does not store from its accumulators (`MR × 16·nv` values).
///
/// Panics if a slice is too short or `dest` reaches past the output or the residual.
///
/// # Safety
/// No other thread may access the output positions `dest` names while this runs.
#[allow(clippy::too_many_arguments)]
pub unsafe fn panel_into(
    isa: Isa,
    k: usize,
    u: &[f32],
    v: &[f32],
    v_stride: usize,
    nv: usize,
    c: &mut [f32],
    dest: Dest<'_>,
) {
    assert!((1..=2).contains(&nv));
    check_operands(k, u, v, v_stride, LANES * nv);
    let out = dest_start(&dest, LANES * nv);
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F is there (`Isa::available`); the asserts above bound every read of
        // `u`, `v` and the residual and every write (the block's span from `out`), which the
        // caller owns.
        Isa::Avx512 => unsafe {
            let (u, v) = (u.as_ptr(), v.as_ptr());
            match nv {
                1 => x86::avx512_into::<1>(k, u, v, v_stride, out, &dest),
                _ => x86::avx512_into::<2>(k, u, v, v_stride, out, &dest),
            }
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 and FMA are there (`Isa::available`); the asserts above bound every
        // access, as for AVX-512.
        Isa::Avx2 => unsafe {
            let sink = x86::Sink::Into { out, dest: &dest };
            x86::avx2(k, u.as_ptr(), v.as_ptr(), v_stride, nv, sink)
        },
        _ => {
            let width = LANES * nv;
            panel(isa, k, u, v, v_stride, nv, c, width);
            store_block(isa, c, width, out, dest);
        }
    }
}

/// Columns of a [`narrow_into`] block: one AVX2 vector.
pub const NARROW: usize = 8;

/// [`panel_into`] for a block [`NARROW`] columns wide (`dest.n ≤ 8`; `v` rows of at least 8
/// values), with AVX2: an image's last columns that would leave most of a 16-wide unit empty.
///
/// Panics with another ISA, if a slice is too short or `dest` reaches past the output or the
/// residual.
///
/// # Safety
/// No other thread may access the output positions `dest` names while this runs.
pub unsafe fn narrow_into(
    isa: Isa,
    k: usize,
    u: &[f32],
    v: &[f32],
    v_stride: usize,
    dest: Dest<'_>,
) {
    check_operands(k, u, v, v_stride, NARROW);
    let out = dest_start(&dest, NARROW);
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 and FMA are there (`Isa::available`); the asserts above bound every
        // access.
        Isa::Avx2 => unsafe {
            x86::avx2_narrow(
                k,
                u.as_ptr(),
                v.as_ptr(),
                v_stride,
                x86::Sink::Into { out, dest: &dest },
            )
        },
        _ => {
            let _ = (out, u, v, v_stride);
            panic!("narrow blocks are AVX2's ({isa:?})")
        }
    }
}

/// `W` (`rows × k`, row-major) as `MR`-row panels for [`panel`]: `u[(p·k + kk)·MR + r]` =
/// `W[p·MR + r][kk]`, zero past the last row.
pub fn pack(w: &[f32], rows: usize, k: usize) -> Vec<f32> {
    assert_eq!(w.len(), rows * k, "{rows}×{k} matrix");
    let mut u = vec![0f32; rows.div_ceil(MR) * k * MR];
    for (row, values) in w.chunks_exact(k).enumerate() {
        for (kk, &x) in values.iter().enumerate() {
            u[((row / MR) * k + kk) * MR + row % MR] = x;
        }
    }
    u
}

/// The epilogue of one output row: `dst = act(src + bias (+ residual) (+ dst if accumulate))`.
#[inline(always)]
pub(super) fn store_body(
    dst: &mut [f32],
    src: &[f32],
    bias: f32,
    residual: Option<&[f32]>,
    accumulate: bool,
    act: Activation,
) {
    match (residual, accumulate) {
        (Some(res), false) => {
            for ((d, &x), &y) in dst.iter_mut().zip(src).zip(res) {
                *d = x + bias + y;
            }
        }
        (Some(res), true) => {
            for ((d, &x), &y) in dst.iter_mut().zip(src).zip(res) {
                *d += x + bias + y;
            }
        }
        (None, false) => {
            for (d, &x) in dst.iter_mut().zip(src) {
                *d = x + bias;
            }
        }
        (None, true) => {
            for (d, &x) in dst.iter_mut().zip(src) {
                *d += x + bias;
            }
        }
    }
    if act != Activation::NONE {
        dst.iter_mut().for_each(|d| *d = act.apply(*d));
    }
}

/// Rows `r < dest.bias.len()` of `c` (row stride `c_stride`) stored at `out + r·dest.stride`
/// through the epilogue ([`store_body`]).
#[inline(always)]
fn store_block_body(c: &[f32], c_stride: usize, out: *mut f32, dest: Dest<'_>) {
    for (r, &bias) in dest.bias.iter().enumerate() {
        let at = r * dest.stride;
        // SAFETY: `panel_into` checked that the block's rows lie inside the output, which its
        // caller owns while this runs.
        let dst = unsafe { std::slice::from_raw_parts_mut(out.add(at), dest.n) };
        let res = dest.residual.map(|res| &res[dest.at + at..][..dest.n]);
        store_body(dst, &c[r * c_stride..][..dest.n], bias, res, dest.accumulate, dest.act);
    }
}

super::multiversion! {
    /// [`store_block_body`] compiled for `isa`.
    fn store_block(c: &[f32], c_stride: usize, out: *mut f32, dest: Dest<'_>) => store_block_body
}

/// The portable kernel: `MR × 16` blocks of plain arrays that compilers vectorise.
fn portable(
    k: usize,
    u: &[f32],
    v: &[f32],
    v_stride: usize,
    nv: usize,
    c: &mut [f32],
    c_stride: usize,
) {
    for unit in 0..nv {
        let off = unit * LANES;
        let mut acc = [[0f32; LANES]; MR];
        for kk in 0..k {
            let ur: &[f32; MR] = u[kk * MR..][..MR].try_into().expect("MR values");
            let vr: &[f32; LANES] =
                v[kk * v_stride + off..][..LANES].try_into().expect("LANES values");
            for r in 0..MR {
                for l in 0..LANES {
                    acc[r][l] = fma(ur[r], vr[l], acc[r][l]);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            c[r * c_stride + off..][..LANES].copy_from_slice(row);
        }
    }
}

/// `a·b + c`, fused where the target always has FMA (aarch64), plain elsewhere: an unfused
/// `mul_add` would be a library call on baseline x86_64.
#[inline(always)]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    if cfg!(target_arch = "aarch64") {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::avx2::mask as avx2_mask;
    use super::super::avx512::mask;
    use super::{Dest, LANES, MR, PREFETCH_AHEAD};
    use std::arch::x86_64::*;

    /// AVX-512F: `MR × NV` zmm accumulators, `v` loaded once per `kk`, `u` broadcast.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn accumulate<const NV: usize>(
        k: usize,
        u: *const f32,
        v: *const f32,
        v_stride: usize,
    ) -> [[__m512; NV]; MR] {
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        for kk in 0..k {
            let vp = v.add(kk * v_stride);
            let mut vv = [_mm512_setzero_ps(); NV];
            for (j, x) in vv.iter_mut().enumerate() {
                *x = _mm512_loadu_ps(vp.add(LANES * j));
            }
            let up = u.add(kk * MR);
            // The weights stream from memory when a layer's panels do not stay in cache
            // (large layers at batch 1): fetching 2 KB ahead hides that latency (ResNet-18,
            // 1 thread, batch 1: 32 → 26 ms on a Xeon whose L3 share is small). A prefetch
            // never faults, so the address may lie past the panel.
            _mm_prefetch::<_MM_HINT_T0>(up.wrapping_add(PREFETCH_AHEAD) as *const i8);
            for (r, row) in acc.iter_mut().enumerate() {
                let b = _mm512_set1_ps(*up.add(r));
                for (a, x) in row.iter_mut().zip(&vv) {
                    *a = _mm512_fmadd_ps(b, *x, *a);
                }
            }
        }
        acc
    }

    /// AVX-512F: the block stored to `c` as it is.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512<const NV: usize>(
        k: usize,
        u: *const f32,
        v: *const f32,
        v_stride: usize,
        c: *mut f32,
        c_stride: usize,
    ) {
        let acc = accumulate::<NV>(k, u, v, v_stride);
        for (r, row) in acc.iter().enumerate() {
            for (j, a) in row.iter().enumerate() {
                _mm512_storeu_ps(c.add(r * c_stride + LANES * j), *a);
            }
        }
    }

    /// AVX-512F: the block stored through `dest`'s epilogue straight from the accumulators,
    /// the last vector of each row with a masked load and store; `out` is `dest.out` at
    /// `dest.at`. The sums are those of [`super::store_body`], in the same order.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512_into<const NV: usize>(
        k: usize,
        u: *const f32,
        v: *const f32,
        v_stride: usize,
        out: *mut f32,
        dest: &Dest<'_>,
    ) {
        let acc = accumulate::<NV>(k, u, v, v_stride);
        let (lo, hi) = (_mm512_set1_ps(dest.act.lo), _mm512_set1_ps(dest.act.hi));
        let mut masks = [0 as __mmask16; NV];
        for (j, m) in masks.iter_mut().enumerate() {
            *m = mask(dest.n.saturating_sub(LANES * j));
        }
        let res = dest.residual.map(|r| r.as_ptr().add(dest.at));
        for (r, (row, &bias)) in acc.iter().zip(dest.bias).enumerate() {
            let b = _mm512_set1_ps(bias);
            for (j, (a, &m)) in row.iter().zip(&masks).enumerate() {
                let at = r * dest.stride + LANES * j;
                let mut x = _mm512_add_ps(*a, b);
                if let Some(res) = res {
                    x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, res.add(at)));
                }
                if dest.accumulate {
                    // `old + sum`, the order of `store_body`.
                    x = _mm512_add_ps(_mm512_maskz_loadu_ps(m, out.add(at)), x);
                }
                // `max(lo, x)`, `min(hi, x)`: a NaN in `x` is kept, as in `Activation::apply`.
                x = _mm512_min_ps(hi, _mm512_max_ps(lo, x));
                _mm512_mask_storeu_ps(out.add(at), m, x);
            }
        }
    }

    /// AVX2+FMA: rows `r0..r0 + R` of the panel times `8·C` columns of `v` from `col`, in
    /// `R × C` ymm accumulators.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn block<const R: usize, const C: usize>(
        k: usize,
        u: *const f32,
        r0: usize,
        v: *const f32,
        v_stride: usize,
        prefetch: bool,
    ) -> [[__m256; C]; R] {
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        for kk in 0..k {
            let vp = v.add(kk * v_stride);
            let mut vv = [_mm256_setzero_ps(); C];
            for (j, x) in vv.iter_mut().enumerate() {
                *x = _mm256_loadu_ps(vp.add(8 * j));
            }
            let up = u.add(kk * MR + r0);
            if prefetch {
                // As in the AVX-512 kernel: the first pass streams the panel.
                _mm_prefetch::<_MM_HINT_T0>(up.wrapping_add(PREFETCH_AHEAD) as *const i8);
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let b = _mm256_set1_ps(*up.add(r));
                for (a, x) in row.iter_mut().zip(&vv) {
                    *a = _mm256_fmadd_ps(b, *x, *a);
                }
            }
        }
        acc
    }

    /// Where the AVX2 kernel puts its blocks: `c` as they are, or an output through an
    /// epilogue (`out` is `dest.out` at `dest.at`).
    pub enum Sink<'a> {
        /// Plain stores to `c`, row stride `c_stride`.
        Plain { c: *mut f32, c_stride: usize },
        /// Through `dest`'s epilogue, straight from the accumulators.
        Into { out: *mut f32, dest: &'a Dest<'a> },
    }

    /// 8 values from `p`, or those of lanes `m` (zero elsewhere) unless `full`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn load(p: *const f32, m: __m256i, full: bool) -> __m256 {
        if full {
            _mm256_loadu_ps(p)
        } else {
            _mm256_maskload_ps(p, m)
        }
    }

    /// The `R × 8·C` block `acc` of rows `r0..`, columns `col..` stored to `sink`. Into an
    /// output, rows past `dest.bias.len()` and columns past `dest.n` are skipped (masked), and
    /// the sums are those of [`super::store_body`], in the same order.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn store<const R: usize, const C: usize>(
        acc: &[[__m256; C]; R],
        r0: usize,
        col: usize,
        sink: &Sink<'_>,
    ) {
        let (out, dest) = match *sink {
            Sink::Plain { c, c_stride } => {
                for (r, row) in acc.iter().enumerate() {
                    for (j, a) in row.iter().enumerate() {
                        _mm256_storeu_ps(c.add((r0 + r) * c_stride + col + 8 * j), *a);
                    }
                }
                return;
            }
            Sink::Into { out, dest } => (out, dest),
        };
        let (lo, hi) = (_mm256_set1_ps(dest.act.lo), _mm256_set1_ps(dest.act.hi));
        let res = dest.residual.map(|r| r.as_ptr().add(dest.at));
        let rows = dest.bias.len().saturating_sub(r0).min(R);
        for (r, row) in acc.iter().enumerate().take(rows) {
            let b = _mm256_set1_ps(dest.bias[r0 + r]);
            for (j, a) in row.iter().enumerate() {
                let c0 = col + 8 * j;
                if c0 >= dest.n {
                    break;
                }
                let (at, full) = ((r0 + r) * dest.stride + c0, dest.n - c0 >= 8);
                let m = avx2_mask(dest.n - c0);
                let mut x = _mm256_add_ps(*a, b);
                if let Some(res) = res {
                    x = _mm256_add_ps(x, load(res.add(at), m, full));
                }
                if dest.accumulate {
                    x = _mm256_add_ps(load(out.add(at), m, full), x);
                }
                // `max(lo, x)`, `min(hi, x)`: a NaN in `x` is kept, as in `Activation::apply`.
                x = _mm256_min_ps(hi, _mm256_max_ps(lo, x));
                if full {
                    _mm256_storeu_ps(out.add(at), x);
                } else {
                    _mm256_maskstore_ps(out.add(at), m, x);
                }
            }
        }
    }

    /// AVX2+FMA: all 8 rows × 8 columns in one pass (8 accumulators).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2_narrow(
        k: usize,
        u: *const f32,
        v: *const f32,
        v_stride: usize,
        sink: Sink<'_>,
    ) {
        store(&block::<8, 1>(k, u, 0, v, v_stride, true), 0, 0, &sink);
    }

    /// AVX2+FMA: for 32 columns, 6 rows × 16 columns per pass (12 accumulators hide the FMA
    /// latency) and the last 2 rows × 32 columns in one more pass; for 16 columns, two passes
    /// of 4 rows.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2(
        k: usize,
        u: *const f32,
        v: *const f32,
        v_stride: usize,
        nv: usize,
        sink: Sink<'_>,
    ) {
        if nv == 1 {
            // 4 rows × 16 columns twice: 8 accumulators each, where 6 + 2 rows would leave the
            // second pass 4, too few to hide the FMA latency.
            store(&block::<4, 2>(k, u, 0, v, v_stride, true), 0, 0, &sink);
            store(&block::<4, 2>(k, u, 4, v, v_stride, false), 4, 0, &sink);
            return;
        }
        for unit in 0..nv {
            let acc = block::<6, 2>(k, u, 0, v.add(unit * LANES), v_stride, unit == 0);
            store(&acc, 0, unit * LANES, &sink);
        }
        store(&block::<2, 4>(k, u, 6, v, v_stride, false), 6, 0, &sink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(k: usize, u: &[f32], v: &[f32], vs: usize, width: usize) -> Vec<f64> {
        let mut c = vec![0f64; MR * width];
        for r in 0..MR {
            for j in 0..width {
                c[r * width + j] =
                    (0..k).map(|kk| u[kk * MR + r] as f64 * v[kk * vs + j] as f64).sum();
            }
        }
        c
    }

    #[test]
    fn every_isa_matches_a_f64_reference() {
        let mut seed = 7u32;
        let mut rnd = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for (k, nv, vs) in [(1, 1, 16), (37, 2, 40), (300, 1, 33), (64, 2, 32)] {
            let u: Vec<f32> = (0..k * MR).map(|_| rnd()).collect();
            let v: Vec<f32> = (0..k * vs).map(|_| rnd()).collect();
            let width = LANES * nv;
            let want = reference(k, &u, &v, vs, width);
            for isa in Isa::available() {
                let cs = width + 3;
                let mut c = vec![f32::NAN; MR * cs];
                panel(isa, k, &u, &v, vs, nv, &mut c, cs);
                for r in 0..MR {
                    for j in 0..width {
                        let (got, w) = (c[r * cs + j] as f64, want[r * width + j]);
                        // k products of magnitude <= 1/4: f32 rounding stays far below 1e-5·k.
                        assert!((got - w).abs() <= 1e-6 * k as f64, "{isa:?} k={k} r={r} j={j}");
                    }
                }
            }
        }
    }

    #[test]
    fn stores_through_the_epilogue_exactly_where_told_with_every_isa() {
        let mut seed = 3u32;
        let mut rnd = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        let (stride, at) = (45, 7);
        // (k, width, rows, n, residual, accumulate, act): partial rows and columns, every
        // clamp; width 8 is `narrow_into` (AVX2).
        let cases = [
            (5, 16, MR, 16, false, false, Activation::NONE),
            (19, 32, 3, 21, true, false, Activation::RELU),
            (64, 32, MR, 32, true, false, Activation::RELU6),
            (2, 16, 1, 1, false, false, Activation::RELU6),
            (33, 32, 7, 17, false, false, Activation::RELU),
            (7, 16, MR, 13, false, true, Activation::NONE),
            (40, 32, 5, 29, false, true, Activation::NONE),
            (9, 32, MR, 32, true, true, Activation::RELU),
            (11, 8, MR, 8, true, false, Activation::RELU6),
            (6, 8, 3, 5, false, true, Activation::NONE),
            (1, 8, MR, 1, false, false, Activation::RELU),
        ];
        for (k, width, rows, n, with_res, accumulate, act) in cases {
            let vs = width + 2;
            let u: Vec<f32> = (0..k * MR).map(|_| 4.0 * rnd()).collect();
            let v: Vec<f32> = (0..k * vs).map(|_| 4.0 * rnd()).collect();
            let bias: Vec<f32> = (0..rows).map(|_| rnd()).collect();
            let len = at + (rows - 1) * stride + n + 9;
            let res: Vec<f32> = (0..len).map(|_| 4.0 * rnd()).collect();
            // What `out` holds before: NaN (nothing may read it) unless the block is added to it.
            let old: Vec<f32> =
                (0..len).map(|_| if accumulate { 4.0 * rnd() } else { f32::NAN }).collect();
            let want_sums = reference(k, &u, &v, vs, width);
            for isa in Isa::available() {
                if width == NARROW && isa != Isa::Avx2 {
                    continue;
                }
                let mut out = old.clone();
                let mut c = vec![0f32; MR * width];
                let dest = Dest {
                    out: SharedOut::new(&mut out),
                    at,
                    stride,
                    n,
                    bias: &bias,
                    residual: with_res.then_some(&res[..]),
                    accumulate,
                    act,
                };
                // SAFETY: one thread, `out` lives through the call.
                unsafe {
                    if width == NARROW {
                        narrow_into(isa, k, &u, &v, vs, dest)
                    } else {
                        panel_into(isa, k, &u, &v, vs, width / LANES, &mut c, dest)
                    }
                };
                for (i, &got) in out.iter().enumerate() {
                    let (r, j) = (
                        (i as isize - at as isize).div_euclid(stride as isize),
                        (i + stride - at % stride) % stride,
                    );
                    if i < at || r as usize >= rows || j >= n {
                        let kept = got.to_bits() == old[i].to_bits();
                        assert!(kept, "{isa:?} k={k}: position {i} written");
                        continue;
                    }
                    let r = r as usize;
                    let mut want = want_sums[r * width + j] + bias[r] as f64;
                    if with_res {
                        want += res[i] as f64;
                    }
                    if accumulate {
                        want += old[i] as f64;
                    }
                    let want = want.max(act.lo as f64).min(act.hi as f64);
                    assert!(
                        (got as f64 - want).abs() <= 1e-5 * k as f64,
                        "{isa:?} k={k} r={r} j={j}"
                    );
                }
            }
        }
    }
}
