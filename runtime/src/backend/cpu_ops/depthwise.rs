//! `DepthwiseConv`: a 3×3 depthwise convolution (one filter per channel), stride 1 or 2, NCHW
//! or CHW (batch 1, as tract's declutter leaves it) f32, with its bias and a clamp (ReLU, ReLU6
//! or none) in one op: MobileNet's middle layers.
//!
//! Narrow planes ([`lanes_win`]) run with 16 channels side by side in vector lanes
//! ([`depthwise_lanes`]). Otherwise a job computes whole channel planes, each in bands of
//! output rows whose scratch stays in the L1 cache. A band's input rows are first copied into
//! zero-padded scratch rows (for stride 2 into their four row/column parity phases), so that
//! every output is nine multiply-adds at fixed offsets from one running index: one unit-stride
//! loop over the band that vectorises, whatever the width. The same code is compiled for
//! AVX-512F, for AVX2+FMA and portably (chosen at run time; the portable one is what aarch64
//! runs, with NEON); with AVX-512F or AVX2, bands are swept four output rows at a time from
//! registers instead ([`super::depthwise_avx512`], [`super::depthwise_avx2`]; stride 2 from
//! zero-padded rows, not parity phases).
//!
//! Error: each output sums the same nine products as a direct convolution, in a fixed order;
//! tests bound the difference to tract's own op by 1e-5 of the output's largest magnitude.

use super::copy::{copy_row, every_other, zero_row};
use super::depthwise_lanes::{self, GroupWeights, Lanes, GROUP};
use super::parallel::{self, SharedOut};
use super::plane_op;
use super::scratch::grow;
use super::{Activation, Isa};
use std::cell::RefCell;
use std::sync::Arc;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

#[derive(Debug)]
struct Weights {
    /// `k[c·9 + ky·3 + kx]`.
    k: Vec<f32>,
    bias: Vec<f32>,
    /// The same weights by groups of [`GROUP`] channels, as the lanes layout reads them.
    groups: Vec<GroupWeights>,
}

/// A fused 3×3 depthwise convolution.
#[derive(Debug, Clone)]
pub struct DepthwiseConv {
    channels: usize,
    stride: usize,
    /// Zero padding: top, left, bottom, right (each at most 2).
    pads: [usize; 4],
    act: Activation,
    isa: Isa,
    weights: Arc<Weights>,
}

impl PartialEq for DepthwiseConv {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.weights, &other.weights)
            && (self.stride, self.pads, self.act, self.isa)
                == (other.stride, other.pads, other.act, other.isa)
    }
}
impl Eq for DepthwiseConv {}

/// Where one plane's values lie, and how it is cut into bands of output rows.
#[derive(Debug, Clone, Copy)]
struct Plane {
    h: usize,
    w: usize,
    ow: usize,
    stride: usize,
    pad_top: usize,
    pad_left: usize,
    /// Output rows per band: a band's scratch stays in the L1 cache.
    band: usize,
}

/// Scratch values one band aims at (16 KiB: the L1 cache keeps them beside the streamed input
/// and output rows).
const BAND_VALUES: usize = 4096;

impl Plane {
    /// The geometry, with bands of as many rows as [`BAND_VALUES`] allows (at least one).
    fn new(
        (h, w): (usize, usize),
        (oh, ow): (usize, usize),
        stride: usize,
        pad_top: usize,
        pad_left: usize,
    ) -> Plane {
        let mut geo = Plane { h, w, ow, stride, pad_top, pad_left, band: oh };
        // (planes · (band + 4 - stride) + band) · width values per band.
        let per_row = (geo.planes() + 1) * geo.width();
        let fixed = geo.planes() * (4 - stride) * geo.width();
        geo.band = (BAND_VALUES.saturating_sub(fixed) / per_row).clamp(1, oh.max(1));
        geo
    }

    /// Width of a scratch row: output columns plus the ones the taps reach past them.
    fn width(&self) -> usize {
        self.ow + 3 - self.stride
    }

    /// Rows of one scratch plane (one more than the taps of a band reach, for the spare
    /// columns).
    fn rows(&self) -> usize {
        self.band + 4 - self.stride
    }

    /// Scratch planes: the zero-padded input (stride 1), or its four (row, column) parity
    /// phases (stride 2: even rows' even columns, even rows' odd columns, odd rows' even
    /// columns, odd rows' odd columns).
    fn planes(&self) -> usize {
        if self.stride == 1 {
            1
        } else {
            4
        }
    }

    /// Scratch values: one band's planes, then its `band × width` results.
    fn scratch_len(&self) -> usize {
        (self.planes() * self.rows() + self.band) * self.width()
    }

    /// Where tap `ky·3 + kx` of output `oy·width + ox` (band-relative) lies in the planes,
    /// less that index.
    fn tap_offsets(&self) -> [usize; 9] {
        let w = self.width();
        let size = self.rows() * w;
        std::array::from_fn(|t| {
            let (ky, kx) = (t / 3, t % 3);
            if self.stride == 1 {
                return ky * w + kx;
            }
            // Padded row `2·oy + ky`, column `2·ox + kx`.
            let plane = 2 * (ky % 2) + kx % 2;
            plane * size + (ky / 2) * w + kx / 2
        })
    }
}

impl DepthwiseConv {
    /// Builds the op from a `channels × 1 × 3 × 3` kernel and its bias (`None`: zero).
    pub fn new(
        kernel: &[f32],
        bias: Option<&[f32]>,
        channels: usize,
        stride: usize,
        pads: [usize; 4],
        act: Activation,
        isa: Isa,
    ) -> TractResult<DepthwiseConv> {
        ensure!(
            kernel.len() == channels * 9,
            "kernel of {} values for {channels}×1×3×3",
            kernel.len()
        );
        ensure!((1..=2).contains(&stride), "stride {stride}: only 1 and 2");
        ensure!(pads.iter().all(|&p| p <= 2), "padding {pads:?}: at most 2");
        let bias = match bias {
            Some(b) => {
                ensure!(b.len() == channels, "bias of {} values for {channels} channels", b.len());
                b.to_vec()
            }
            None => vec![0.0; channels],
        };
        let groups = (0..channels.div_ceil(GROUP))
            .map(|g| {
                let c0 = g * GROUP;
                GroupWeights::new(kernel, &bias, c0, GROUP.min(channels - c0))
            })
            .collect();
        let weights = Arc::new(Weights { k: kernel.to_vec(), bias, groups });
        Ok(DepthwiseConv { channels, stride, pads, act, isa, weights })
    }

    /// Output height and width for an `h × w` input, `None` when empty.
    pub fn out_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let o =
            |n: usize, a: usize, b: usize| (n + a + b).checked_sub(3).map(|x| x / self.stride + 1);
        Some((o(h, self.pads[0], self.pads[2])?, o(w, self.pads[1], self.pads[3])?))
    }

    /// Computes `images` images: `input` is `images × channels × h × w`, `out` is
    /// `images × channels × oh × ow`.
    fn run(&self, (h, w): (usize, usize), images: usize, input: &[f32], out: &mut [f32]) {
        let Some((oh, ow)) = self.out_hw(h, w) else { return };
        if lanes_win(self.isa, self.stride, ow) {
            self.run_lanes((h, w), (oh, ow), images, input, out)
        } else {
            self.run_rows((h, w), (oh, ow), images, input, out)
        }
    }

    /// [`DepthwiseConv::run`] as row sweeps, channel by channel.
    fn run_rows(
        &self,
        (h, w): (usize, usize),
        (oh, ow): (usize, usize),
        images: usize,
        input: &[f32],
        out: &mut [f32],
    ) {
        let geo = Plane::new((h, w), (oh, ow), self.stride, self.pads[0], self.pads[1]);
        let planes = images * self.channels;
        let threads = parallel::threads();
        let jobs = if threads == 1 { 1 } else { planes.min(8 * threads) };
        let shared = SharedOut::new(out);
        parallel::for_each(jobs, |job| {
            SCRATCH.with(|scratch| {
                let scratch = &mut *scratch.borrow_mut();
                let scratch = grow(scratch, geo.scratch_len());
                // The padding columns are zero from here on (see `fill_planes`).
                scratch[..geo.planes() * geo.rows() * geo.width()].fill(0.0);
                for p in job * planes / jobs..(job + 1) * planes / jobs {
                    let c = p % self.channels;
                    let k: &[f32; 9] = self.weights.k[c * 9..][..9].try_into().expect("9 taps");
                    let src = &input[p * h * w..][..h * w];
                    // SAFETY: jobs own disjoint plane ranges.
                    let dst = unsafe { shared.slice(p * oh * ow, oh * ow) };
                    let bias = self.weights.bias[c];
                    plane(self.isa, &geo, src, k, bias, self.act, dst, scratch);
                }
            })
        });
    }

    /// [`DepthwiseConv::run`] for narrow planes: groups of 16 channels, one per vector lane
    /// ([`depthwise_lanes`]).
    fn run_lanes(
        &self,
        (h, w): (usize, usize),
        (oh, ow): (usize, usize),
        images: usize,
        input: &[f32],
        out: &mut [f32],
    ) {
        let (stride, pad_top, pad_left) = (self.stride, self.pads[0], self.pads[1]);
        let geo = Lanes { h, w, oh, ow, stride, pad_top, pad_left };
        let per_image = self.channels.div_ceil(GROUP);
        let groups = images * per_image;
        let threads = parallel::threads();
        let jobs = if threads == 1 { 1 } else { groups.min(4 * threads) };
        let shared = SharedOut::new(out);
        parallel::for_each(jobs, |job| {
            SCRATCH.with(|scratch| {
                let scratch = &mut *scratch.borrow_mut();
                let scratch = grow(scratch, geo.scratch_len());
                scratch[..geo.zeroed_len()].fill(0.0);
                for g in job * groups / jobs..(job + 1) * groups / jobs {
                    let (image, c0) = (g / per_image, g % per_image * GROUP);
                    let n = GROUP.min(self.channels - c0);
                    let weights = &self.weights.groups[c0 / GROUP];
                    let first = image * self.channels + c0;
                    let src = &input[first * h * w..][..n * h * w];
                    // SAFETY: jobs own disjoint channel groups.
                    let dst = unsafe { shared.slice(first * oh * ow, n * oh * ow) };
                    depthwise_lanes::group(self.isa, &geo, src, weights, self.act, dst, scratch);
                }
            })
        });
    }
}

/// Whether channels in vector lanes ([`depthwise_lanes`]) beat row sweeps for this ISA,
/// stride and output width. Measured with `hydrant bench-ops --only dw --cpu-time` on
/// MobileNet-V2's shapes (Zen 4): with AVX-512, whose rows are register-blocked
/// ([`super::depthwise_avx512`]), stride-1 rows win from 14 wide up (1.8× at 14, 2.4× at
/// 28–112) and tie at 7; stride-2 rows win from 28 wide up (1.4× at 28, 1.8× at 56) and lose
/// at 14 (1.1–1.3× slower), where the lanes' copies (register transposes) cost little. With the
/// AVX2 rows, blocked the same way ([`super::depthwise_avx2`]), win from 14 wide up (1.2–1.7×
/// at 14 and 56–112, Zen 3) and lose at 7 (1.3× slower). With the portable path the lanes win on
/// planes up to 14 wide (about 1.5–2.5× on 7×7 and 14×14) and lose on wider ones (2–3× slower
/// at 112).
fn lanes_win(isa: Isa, stride: usize, ow: usize) -> bool {
    match isa {
        Isa::Avx512 => ow <= if stride == 2 { 14 } else { 7 },
        Isa::Avx2 => ow <= 7,
        _ => ow <= 14,
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = RefCell::default();
}

/// Output rows a register-blocked band sweep computes together.
#[cfg(target_arch = "x86_64")]
pub(super) const BAND_ROWS: usize = 4;

/// One block of a register-blocked band sweep with vectors `V`: output rows from input rows
/// `src` (`width` apart), `ow` wide, stored at `dst`.
#[cfg(target_arch = "x86_64")]
pub(super) type Block<V> = unsafe fn(*const f32, usize, usize, &V, *mut f32);

/// The row loop of a register-blocked band sweep ([`super::depthwise_avx512::band`],
/// [`super::depthwise_avx2::band`]): checks that `padded` holds every input row the output rows
/// of `dst` read (stride 2: and `slack` values past them), then runs `blocks` (stride 1 over
/// [`BAND_ROWS`] rows, stride 1 over one, the same for stride 2) down the band.
///
/// Panics unless the stride is 1 or 2, `dst` holds whole rows and `padded` the rows they read.
///
/// # Safety
/// The CPU must have the features the blocks are compiled for; each block reads only the
/// input rows of its output rows (and the slack) and writes only those output rows.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn sweep_band<V>(
    stride: usize,
    padded: &[f32],
    width: usize,
    ow: usize,
    slack: usize,
    v: &V,
    blocks: [Block<V>; 4],
    dst: &mut [f32],
) {
    assert!((1..=2).contains(&stride) && ow > 0 && dst.len().is_multiple_of(ow));
    let rows = dst.len() / ow;
    let (in_rows, slack) = if stride == 1 { (rows + 2, 0) } else { (2 * rows + 1, slack) };
    assert!(width >= stride * ow + 2, "band rows too narrow");
    assert!(padded.len() >= in_rows * width + slack, "band scratch too short");
    let (src, out) = (padded.as_ptr(), dst.as_mut_ptr());
    let mut y = 0;
    while y < rows {
        let four = y + BAND_ROWS <= rows;
        let block = blocks[2 * (stride - 1) + usize::from(!four)];
        // SAFETY: output rows `y..y + BAND_ROWS` (or `y`) and the input rows they read (and,
        // for stride 2, the slack past them) are in bounds (asserted above).
        unsafe { block(src.add(stride * y * width), width, ow, v, out.add(y * ow)) };
        y += if four { BAND_ROWS } else { 1 };
    }
}

/// A register-blocked band sweep: [`super::depthwise_avx512::band`] or
/// [`super::depthwise_avx2::band`].
#[cfg(target_arch = "x86_64")]
type BandSweep = unsafe fn(usize, &[f32], usize, usize, &[f32; 9], f32, Activation, &mut [f32]);

/// One plane through `band`, band by band: stride 1 from zero-padded planes
/// ([`fill_planes`]), stride 2 from zero-padded rows ([`fill_padded_rows`]). False (nothing
/// written) when `scratch` is too short for a stride-2 band and its slack.
///
/// # Safety
/// The CPU must have the features `band` is compiled for.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn blocked_bands(
    geo: &Plane,
    src: &[f32],
    (k, bias, act): (&[f32; 9], f32, Activation),
    dst: &mut [f32],
    scratch: &mut [f32],
    band: BandSweep,
) -> bool {
    if geo.stride == 2 {
        use super::depthwise_avx512::STRIDE2_SLACK;
        let width = 2 * geo.ow + 2;
        let len = (2 * geo.band + 1) * width + STRIDE2_SLACK;
        if scratch.len() < len {
            return false;
        }
        for (b, dst) in dst.chunks_mut(geo.band * geo.ow).enumerate() {
            let rows = 2 * (dst.len() / geo.ow) + 1;
            fill_padded_rows(geo, src, 2 * b * geo.band, &mut scratch[..rows * width]);
            band(2, &scratch[..len], width, geo.ow, k, bias, act, dst);
        }
        return true;
    }
    let width = geo.width();
    let planes = &mut scratch[..geo.rows() * width];
    for (b, dst) in dst.chunks_mut(geo.band * geo.ow).enumerate() {
        fill_planes(geo, src, b * geo.band, planes);
        band(1, planes, width, geo.ow, k, bias, act, dst);
    }
    true
}

/// One plane: through the register-blocked sweeps of [`super::depthwise_avx512`] or
/// [`super::depthwise_avx2`] with those ISAs, else [`plane_body`] compiled portably.
#[allow(clippy::too_many_arguments)]
fn plane(
    isa: Isa,
    geo: &Plane,
    src: &[f32],
    k: &[f32; 9],
    bias: f32,
    act: Activation,
    dst: &mut [f32],
    scratch: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn avx512(
            geo: &Plane,
            src: &[f32],
            k: &[f32; 9],
            bias: f32,
            act: Activation,
            dst: &mut [f32],
            scratch: &mut [f32],
        ) {
            let band = super::depthwise_avx512::band;
            if !blocked_bands(geo, src, (k, bias, act), dst, scratch, band) {
                plane_body::<true>(geo, src, k, bias, act, dst, scratch)
            }
        }
        #[target_feature(enable = "avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn avx2(
            geo: &Plane,
            src: &[f32],
            k: &[f32; 9],
            bias: f32,
            act: Activation,
            dst: &mut [f32],
            scratch: &mut [f32],
        ) {
            let band = super::depthwise_avx2::band;
            if !blocked_bands(geo, src, (k, bias, act), dst, scratch, band) {
                plane_body::<true>(geo, src, k, bias, act, dst, scratch)
            }
        }
        match isa {
            // SAFETY: `Isa::Avx512` is only handed out where the CPU has AVX-512F, AVX2 and
            // FMA, `Isa::Avx2` where it has AVX2 and FMA (`Isa::available`).
            Isa::Avx512 => return unsafe { avx512(geo, src, k, bias, act, dst, scratch) },
            Isa::Avx2 => return unsafe { avx2(geo, src, k, bias, act, dst, scratch) },
            Isa::Portable => {}
        }
    }
    let _ = isa;
    plane_body::<{ cfg!(target_arch = "aarch64") }>(geo, src, k, bias, act, dst, scratch)
}

/// `a·b + c`, fused with `FMA` (compiled where the target has it), plain otherwise.
#[inline(always)]
pub(super) fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// One channel: `src` is its `h × w` input plane, `dst` its `oh × ow` output plane, computed
/// band by band. The taps of a band's outputs are read from its scratch planes at fixed offsets
/// from one running index, so the main loop runs over the whole band at once (a few spare
/// columns per row included).
#[inline(always)]
fn plane_body<const FMA: bool>(
    geo: &Plane,
    src: &[f32],
    k: &[f32; 9],
    bias: f32,
    act: Activation,
    dst: &mut [f32],
    scratch: &mut [f32],
) {
    let (width, rows) = (geo.width(), geo.rows());
    let (planes, results) = scratch[..geo.scratch_len()].split_at_mut(geo.planes() * rows * width);
    let offsets = geo.tap_offsets();
    for (b, dst) in dst.chunks_mut(geo.band * geo.ow).enumerate() {
        let band_rows = dst.len() / geo.ow;
        fill_planes(geo, src, b * geo.band, planes);
        let n = band_rows * width;
        let results = &mut results[..n];
        let t: [&[f32]; 9] = offsets.map(|o| &planes[o..][..n]);
        // One pass over the band, nine taps per output: zipped slices, so no bounds checks are
        // left in the loop and it vectorises.
        let taps = t[0].iter().zip(t[1]).zip(t[2]).zip(t[3]).zip(t[4]);
        let taps = taps.zip(t[5]).zip(t[6]).zip(t[7]).zip(t[8]);
        for (r, ((((((((&a0, &a1), &a2), &a3), &a4), &a5), &a6), &a7), &a8)) in
            results.iter_mut().zip(taps)
        {
            let s = madd::<FMA>(k[2], a2, madd::<FMA>(k[1], a1, madd::<FMA>(k[0], a0, bias)));
            let s = madd::<FMA>(k[5], a5, madd::<FMA>(k[4], a4, madd::<FMA>(k[3], a3, s)));
            *r = act.apply(madd::<FMA>(k[8], a8, madd::<FMA>(k[7], a7, madd::<FMA>(k[6], a6, s))));
        }
        for (d, r) in dst.chunks_exact_mut(geo.ow).zip(results.chunks_exact(width)) {
            copy_row(d, &r[..geo.ow]);
        }
    }
}

/// Writes every value of `rows` (whole rows of `width` values): padded input rows `y0, y0 + 1,
/// …` (row `iy + pad_top`, column `ix + pad_left` is input `(iy, ix)`; zero elsewhere).
#[inline(always)]
fn fill_padded_rows(geo: &Plane, src: &[f32], y0: usize, rows: &mut [f32]) {
    let Plane { h, w, pad_top, pad_left, .. } = *geo;
    let width = 2 * geo.ow + 2;
    for (j, row) in rows.chunks_exact_mut(width).enumerate() {
        let iy = (y0 + j).wrapping_sub(pad_top);
        let n = w.min(width.saturating_sub(pad_left));
        if iy >= h || n == 0 {
            zero_row(row);
            continue;
        }
        let (left, rest) = row.split_at_mut(pad_left);
        let (body, right) = rest.split_at_mut(n);
        zero_row(left);
        copy_row(body, &src[iy * w..][..n]);
        zero_row(right);
    }
}

/// Copies the input rows that the band starting at output row `oy0` reads into its scratch
/// planes (stride 2: split into the four parity phases). Rows outside the input are zeroed;
/// the padding columns of the others are only ever zero (the planes start zeroed), so they are
/// not written.
#[inline(always)]
fn fill_planes(geo: &Plane, src: &[f32], oy0: usize, planes: &mut [f32]) {
    let Plane { h, w, stride, pad_top, pad_left, .. } = *geo;
    let (width, rows) = (geo.width(), geo.rows());
    if stride == 1 {
        for (j, row) in planes.chunks_exact_mut(width).enumerate() {
            let iy = (oy0 + j).wrapping_sub(pad_top);
            if iy >= h {
                row.fill(0.0);
                continue;
            }
            // Column `c` is input column `c - pad_left`.
            let n = w.min(width - pad_left);
            copy_row(&mut row[pad_left..pad_left + n], &src[iy * w..][..n]);
        }
        return;
    }
    for (p, plane) in planes.chunks_exact_mut(rows * width).enumerate() {
        // Plane row `j`, column `i` is padded row `2·(oy0 + j) + p / 2`, column `2i + p % 2`.
        let (row_phase, col_phase) = (p / 2, p % 2);
        // Columns `lo..hi` lie inside the input row (`2i + col_phase - pad_left`).
        let lo = pad_left.saturating_sub(col_phase).div_ceil(2).min(width);
        let hi = (w + pad_left).saturating_sub(col_phase).div_ceil(2).clamp(lo, width);
        for (j, row) in plane.chunks_exact_mut(width).enumerate() {
            let iy = (2 * (oy0 + j) + row_phase).wrapping_sub(pad_top);
            if iy >= h {
                row.fill(0.0);
                continue;
            }
            if hi > lo {
                let first = 2 * lo + col_phase - pad_left;
                every_other(&mut row[lo..hi], &src[iy * w + first..(iy + 1) * w]);
            }
        }
    }
}

impl Op for DepthwiseConv {
    fn name(&self) -> StaticName {
        "DepthwiseConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} ch, stride {}, pads {:?}, {:?}, {:?}",
            self.channels, self.stride, self.pads, self.act, self.isa
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for DepthwiseConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 1, "DepthwiseConv: wrong input count");
        let out_hw = |h, w| self.out_hw(h, w);
        plane_op::eval(
            "DepthwiseConv",
            &inputs[0],
            Some(self.channels),
            &out_hw,
            |hw, (n, _c), x, out| self.run(hw, n, x, out),
        )
    }
}

impl TypedOp for DepthwiseConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let out_hw = |h, w| self.out_hw(h, w);
        plane_op::output_facts("DepthwiseConv", inputs[0], Some(self.channels), &out_hw)
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::super::probe::{with_threads, ConvCase, Pair};
    use super::*;

    /// Bound on `max |ours - tract| / max |tract|`: the same nine products summed in another
    /// order (and fused or not).
    const BOUND: f32 = 1e-5;

    fn case(c: usize, hw: (usize, usize), stride: usize, pads: [usize; 4]) -> ConvCase {
        ConvCase {
            cin: c,
            cout: c,
            hw,
            kernel: 3,
            stride,
            pads,
            residual: false,
            relu: false,
            relu6: false,
            depthwise: true,
        }
    }

    #[test]
    fn matches_tract_on_random_shapes_with_every_isa() {
        let mut seed = 17u64;
        let mut pick = |lo: usize, hi: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            lo + (seed >> 33) as usize % (hi - lo + 1)
        };
        for case_ix in 0..12 {
            let stride = 1 + case_ix % 2;
            let pads = [pick(0, 1), pick(0, 2), pick(0, 1), pick(0, 2)];
            let mut case = case(pick(2, 40), (pick(3, 20), pick(3, 37)), stride, pads);
            case.relu = case_ix % 3 != 0;
            case.relu6 = case_ix % 3 == 2;
            for isa in Isa::available() {
                let pair = Pair::new(&case, case_ix as u64, isa).unwrap();
                assert_eq!(pair.replaced, 1, "{case:?}");
                let names: Vec<String> =
                    pair.ours.model().nodes().iter().map(|n| n.op.name().to_string()).collect();
                assert!(names.iter().any(|n| n == "DepthwiseConv"), "{names:?}");
                // The clamps went into the op.
                assert!(names.len() <= 2, "{case:?}: {names:?}");
                let err = pair.relative_error().unwrap();
                assert!(err <= BOUND, "{case:?} {isa:?}: relative error {err:e}");
            }
        }
    }

    #[test]
    fn planes_of_several_bands_match_tract() {
        for (stride, hw, pads) in [(1, (70, 90), [1, 2, 0, 1]), (2, (83, 112), [1, 0, 2, 1])] {
            let mut c = case(3, hw, stride, pads);
            c.relu = true;
            let geo = Plane::new(hw, (hw.0 / stride, hw.1 / stride), stride, pads[0], pads[1]);
            assert!(geo.band < hw.0 / stride / 2, "{c:?}: bands of {} rows", geo.band);
            for isa in Isa::available() {
                let pair = Pair::new(&c, 5, isa).unwrap();
                assert_eq!(pair.replaced, 1, "{c:?}");
                let err = pair.relative_error().unwrap();
                assert!(err <= BOUND, "{c:?} {isa:?}: relative error {err:e}");
            }
        }
    }

    #[test]
    fn lanes_and_row_sweeps_give_identical_outputs() {
        let (h, w, channels) = (11, 23, 21);
        let mut seed = 5u32;
        let mut rnd = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        let k: Vec<f32> = (0..channels * 9).map(|_| rnd()).collect();
        let bias: Vec<f32> = (0..channels).map(|_| rnd()).collect();
        let input: Vec<f32> = (0..2 * channels * h * w).map(|_| rnd()).collect();
        for (stride, pads) in [(1, [1, 1, 1, 1]), (2, [0, 1, 2, 0]), (1, [2, 0, 0, 2])] {
            for isa in Isa::available() {
                let act = Activation::RELU6;
                let op =
                    DepthwiseConv::new(&k, Some(&bias), channels, stride, pads, act, isa).unwrap();
                let (oh, ow) = op.out_hw(h, w).unwrap();
                let mut rows = vec![f32::NAN; 2 * channels * oh * ow];
                let mut lanes = rows.clone();
                op.run_rows((h, w), (oh, ow), 2, &input, &mut rows);
                op.run_lanes((h, w), (oh, ow), 2, &input, &mut lanes);
                assert!(rows.iter().all(|x| (0.0..=6.0).contains(x)), "{isa:?}: not all written");
                // The same products summed in the same order: equal to the bit.
                assert_eq!(rows, lanes, "{isa:?} stride {stride} pads {pads:?}");
            }
        }
    }

    /// The register-blocked sweeps (AVX-512, AVX2) against the AVX2 one-loop sweep (the same
    /// fused products in the same order): equal to the bit, both strides, on every width around
    /// the vector sizes and on bands whose row count is not a multiple of the block.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_blocked_sweeps_equal_the_one_loop_sweep() {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn one_loop(geo: &Plane, src: &[f32], k: &[f32; 9], dst: &mut [f32], s: &mut [f32]) {
            plane_body::<true>(geo, src, k, 0.25, Activation::RELU6, dst, s)
        }
        let blocked: Vec<Isa> =
            Isa::available().into_iter().filter(|&i| i != Isa::Portable).collect();
        if blocked.is_empty() {
            return;
        }
        let mut seed = 11u32;
        let mut rnd = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        let k: [f32; 9] = std::array::from_fn(|_| rnd());
        let sizes = [(1, 8), (5, 15), (9, 16), (7, 17), (70, 31), (13, 33), (6, 64), (3, 100)];
        let strided = [(40, 56), (9, 35), (2, 2), (11, 9), (5, 7)];
        let cases = [(1, [1; 4]), (1, [0, 2, 2, 0]), (2, [1; 4]), (2, [0, 0, 1, 2])];
        for (h, w) in sizes.into_iter().chain(strided) {
            let input: Vec<f32> = (0..h * w).map(|_| rnd()).collect();
            for (stride, pads) in cases {
                let op =
                    DepthwiseConv::new(&k, None, 1, stride, pads, Activation::RELU6, Isa::Avx2)
                        .unwrap();
                let Some((oh, ow)) = op.out_hw(h, w) else { continue };
                let geo = Plane::new((h, w), (oh, ow), stride, pads[0], pads[1]);
                let run = |isa: Option<Isa>| {
                    let mut scratch = vec![0f32; geo.scratch_len()];
                    let mut out = vec![f32::NAN; oh * ow];
                    match isa {
                        Some(isa) => plane(
                            isa,
                            &geo,
                            &input,
                            &k,
                            0.25,
                            Activation::RELU6,
                            &mut out,
                            &mut scratch,
                        ),
                        // SAFETY: the blocked ISAs need AVX2 and FMA too.
                        None => unsafe { one_loop(&geo, &input, &k, &mut out, &mut scratch) },
                    }
                    out
                };
                let want = run(None);
                assert!(want.iter().all(|x| (0.0..=6.0).contains(x)), "{h}×{w}: not all written");
                for &isa in &blocked {
                    assert_eq!(
                        run(Some(isa)),
                        want,
                        "{isa:?} {h}×{w} stride {stride} pads {pads:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn matches_tract_after_declutter_as_chw() {
        for stride in [1, 2] {
            let mut c = case(24, (13, 16), stride, [1; 4]);
            (c.relu, c.relu6) = (true, true);
            for isa in Isa::available() {
                let pair = Pair::decluttered(&c, 4, isa).unwrap();
                assert_eq!(pair.replaced, 1, "{c:?}");
                let err = pair.relative_error().unwrap();
                assert!(err <= BOUND, "{c:?} {isa:?}: relative error {err:e}");
            }
        }
    }

    #[test]
    fn relu6_clamps_both_sides() {
        let act = Activation::RELU6;
        assert_eq!((act.apply(-1.0), act.apply(2.5), act.apply(7.0)), (0.0, 2.5, 6.0));
        // Inputs scaled ×20 put outputs far beyond 6 on both sides: the clamp must show.
        let mut c = case(8, (9, 9), 1, [1; 4]);
        (c.relu, c.relu6) = (true, true);
        let pair = Pair::new(&c, 2, Isa::best()).unwrap();
        let x = pair.inputs[0].try_as_plain_ram().unwrap();
        let big: Vec<f32> = x.as_slice::<f32>().unwrap().iter().map(|v| v * 20.0).collect();
        let big = tvec![Tensor::from_shape(pair.inputs[0].shape(), &big).unwrap().into_tvalue()];
        let ours = pair.ours.run(big.clone()).unwrap().remove(0);
        let tract = pair.tract.run(big).unwrap().remove(0);
        let (ours, tract) = (ours.try_as_plain_ram().unwrap(), tract.try_as_plain_ram().unwrap());
        let (ours, tract) = (ours.as_slice::<f32>().unwrap(), tract.as_slice::<f32>().unwrap());
        assert!(ours.iter().all(|x| (0.0..=6.0).contains(x)));
        assert!(ours.iter().filter(|&&x| x == 6.0).count() > ours.len() / 10);
        assert!(ours.iter().filter(|&&x| x == 0.0).count() > ours.len() / 10);
        let diff = ours.iter().zip(tract).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff <= 6.0 * BOUND, "max difference {diff}");
    }

    #[test]
    fn threaded_runs_match_single_threaded() {
        let pair = Pair::new(&case(37, (15, 22), 2, [1; 4]), 3, Isa::best()).unwrap();
        let one = pair.ours.run(pair.inputs.clone()).unwrap().remove(0);
        let three = with_threads(3, || pair.ours.run(pair.inputs.clone()).unwrap().remove(0));
        assert_eq!(one, three);
    }

    #[test]
    fn other_grouped_convolutions_stay_with_tract() {
        for c in [case(8, (9, 9), 3, [1; 4]), ConvCase { kernel: 5, ..case(8, (9, 9), 1, [2; 4]) }]
        {
            assert_eq!(Pair::new(&c, 1, Isa::Portable).unwrap().replaced, 0, "{c:?}");
        }
    }
}
