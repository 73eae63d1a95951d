//! `MaxPool2d`: a 2-D max pooling of NCHW or CHW f32 planes (ResNet's 3×3 stride-2 pool after
//! the stem), threaded over the planes.
//!
//! Separable: each input row is copied once into a scratch row padded with `-∞` and reduced to
//! its window maxima along the row (one value per output column); each output row is then the
//! element-wise maximum of the reduced rows its window covers. With AVX-512 the row reduction
//! runs 16 outputs per vector, with AVX2 8 (stride 2: even and odd columns split by permutes);
//! elsewhere as plain loops. The result is exact: a maximum does not round, and every path
//! takes the same maxima in the same order (`if x > m { x } else { m }`).

use super::copy::copy_row;
use super::parallel::{self, SharedOut};
use super::plane_op;
use super::scratch::grow;
use super::Isa;
use std::cell::RefCell;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

/// A max pooling with a `kh × kw` window, stride 1 or 2 on both axes, and padding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MaxPool2d {
    /// Window height and width.
    pub kernel: (usize, usize),
    /// 1 or 2, both axes.
    pub stride: usize,
    /// Padding: top, left, bottom, right (each smaller than the window).
    pub pads: [usize; 4],
    /// The kernels' instruction set.
    pub isa: Isa,
}

/// `-∞` values past a padded scratch row: what the vector row reduction reads beyond it.
const SLACK: usize = 64;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = RefCell::default();
}

impl MaxPool2d {
    /// Output height and width for an `h × w` input, `None` when empty.
    pub fn out_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let o = |n: usize, k: usize, a: usize, b: usize| {
            (n + a + b).checked_sub(k).map(|x| x / self.stride + 1)
        };
        let (kh, kw) = self.kernel;
        Some((o(h, kh, self.pads[0], self.pads[2])?, o(w, kw, self.pads[1], self.pads[3])?))
    }

    /// Pools `planes` planes of `h × w` into `oh × ow` each.
    fn run(&self, (h, w): (usize, usize), planes: usize, input: &[f32], out: &mut [f32]) {
        let Some((oh, ow)) = self.out_hw(h, w) else { return };
        let (kh, kw) = self.kernel;
        let s = self.stride;
        // A padded row: the columns every window reaches.
        let pw = ((ow - 1) * s + kw).max(w + self.pads[1]);
        let threads = parallel::threads();
        let jobs = if threads == 1 { 1 } else { planes.min(4 * threads) };
        let shared = SharedOut::new(out);
        parallel::for_each(jobs, |job| {
            SCRATCH.with(|scratch| {
                let scratch = &mut *scratch.borrow_mut();
                let scratch = grow(scratch, pw + SLACK + h * ow);
                let (padded, reduced) = scratch.split_at_mut(pw + SLACK);
                // The padding columns stay `-∞`: only the interior is written below.
                padded.fill(f32::NEG_INFINITY);
                for p in job * planes / jobs..(job + 1) * planes / jobs {
                    let src = &input[p * h * w..][..h * w];
                    for (row, reduced) in src.chunks_exact(w).zip(reduced.chunks_exact_mut(ow)) {
                        copy_row(&mut padded[self.pads[1]..][..w], row);
                        row_maxima(self.isa, padded, (s, kw), reduced);
                    }
                    // SAFETY: jobs own disjoint plane ranges.
                    let dst = unsafe { shared.slice(p * oh * ow, oh * ow) };
                    for (oy, row) in dst.chunks_exact_mut(ow).enumerate() {
                        // Input rows of the window (at least one: pads are smaller than it).
                        let first = (oy * s).saturating_sub(self.pads[0]);
                        let end = (oy * s + kh).saturating_sub(self.pads[0]).min(h);
                        copy_row(row, &reduced[first * ow..][..ow]);
                        for iy in first + 1..end {
                            max_into(self.isa, row, &reduced[iy * ow..][..ow]);
                        }
                    }
                }
            })
        });
    }
}

/// `acc[i] = max(acc[i], x[i])`, as a compare and select (one `maxps`).
#[inline(always)]
fn max_into_body(acc: &mut [f32], x: &[f32]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a = if v > *a { v } else { *a };
    }
}

super::multiversion! {
    /// [`max_into_body`] compiled for `isa`.
    fn max_into(acc: &mut [f32], x: &[f32]) => max_into_body
}

/// `out[ox] = max(padded[s·ox + kx] for kx < kw)`, maxima taken in increasing `kx`. `padded`
/// holds the row and at least [`SLACK`] values past the last window.
fn row_maxima(isa: Isa, padded: &[f32], (s, kw): (usize, usize), out: &mut [f32]) {
    let ow = out.len();
    assert!(ow > 0 && (1..=2).contains(&s) && kw > 0);
    assert!(padded.len() >= (ow - 1) * s + kw + SLACK, "padded row too short");
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: AVX-512F is there (`Isa::available`); the asserts bound every read (the
        // last vector reads at most `s·16 + kw + 16` values past `s·(ow - 16)`, inside the
        // slack) and the stores are masked to `out`.
        return unsafe { x86::row_maxima(padded.as_ptr(), (s, kw), out) };
    }
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        // SAFETY: AVX2 is there (`Isa::available`); the last vector reads at most
        // `s·8 + kw + 8` values past `s·(ow - 8)`, inside the slack; the stores are masked.
        return unsafe { x86::row_maxima_avx2(padded.as_ptr(), (s, kw), out) };
    }
    let _ = isa;
    for (ox, o) in out.iter_mut().enumerate() {
        let window = &padded[s * ox..][..kw];
        let mut m = window[0];
        for &x in &window[1..] {
            m = if x > m { x } else { m };
        }
        *o = m;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::avx2;
    use super::super::avx512::{even_odd, mask};
    use std::arch::x86_64::*;

    /// [`super::row_maxima`], 8 outputs per vector.
    ///
    /// # Safety
    /// AVX2; `padded` readable for `s·(ow + 8) + kw + 8` values.
    #[target_feature(enable = "avx2")]
    pub unsafe fn row_maxima_avx2(padded: *const f32, (s, kw): (usize, usize), out: &mut [f32]) {
        let ow = out.len();
        let mut c = 0;
        while c < ow {
            let mut m = tap_avx2(padded, s, c, 0);
            for kx in 1..kw {
                // `max(x, m)`: `x > m ? x : m`, the scalar order.
                m = _mm256_max_ps(tap_avx2(padded, s, c, kx), m);
            }
            let dst = out.as_mut_ptr().add(c);
            if ow - c >= 8 {
                _mm256_storeu_ps(dst, m);
            } else {
                _mm256_maskstore_ps(dst, avx2::mask(ow - c), m);
            }
            c += 8;
        }
    }

    /// Column `s·(c + i) + kx` of `padded` in lane `i`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn tap_avx2(padded: *const f32, s: usize, c: usize, kx: usize) -> __m256 {
        if s == 1 {
            return _mm256_loadu_ps(padded.add(c + kx));
        }
        let base = padded.add(2 * c + kx / 2 * 2);
        let (even, odd) = avx2::even_odd(_mm256_loadu_ps(base), _mm256_loadu_ps(base.add(8)));
        if kx.is_multiple_of(2) {
            even
        } else {
            odd
        }
    }

    /// [`super::row_maxima`], 16 outputs per vector.
    ///
    /// # Safety
    /// AVX-512F; `padded` readable for `s·(ow + 16) + kw + 16` values.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn row_maxima(padded: *const f32, (s, kw): (usize, usize), out: &mut [f32]) {
        let ow = out.len();
        let mut c = 0;
        while c < ow {
            let mask = mask(ow - c);
            // Column `s·(c + i) + kx` of lane `i`.
            let tap = |kx: usize| {
                if s == 1 {
                    return _mm512_loadu_ps(padded.add(c + kx));
                }
                let base = padded.add(2 * c + kx / 2 * 2);
                let (even, odd) = even_odd(_mm512_loadu_ps(base), _mm512_loadu_ps(base.add(16)));
                if kx.is_multiple_of(2) {
                    even
                } else {
                    odd
                }
            };
            let mut m = tap(0);
            for kx in 1..kw {
                // `max(x, m)`: `x > m ? x : m`, the scalar order.
                m = _mm512_max_ps(tap(kx), m);
            }
            _mm512_mask_storeu_ps(out.as_mut_ptr().add(c), mask, m);
            c += 16;
        }
    }
}

impl Op for MaxPool2d {
    fn name(&self) -> StaticName {
        "MaxPool2d".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?} stride {}, pads {:?}", self.kernel, self.stride, self.pads)])
    }

    op_as_typed_op!();
}

impl EvalOp for MaxPool2d {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 1, "MaxPool2d: wrong input count");
        let out_hw = |h, w| self.out_hw(h, w);
        plane_op::eval("MaxPool2d", &inputs[0], None, &out_hw, |hw, (n, c), x, out| {
            self.run(hw, n * c, x, out)
        })
    }
}

impl TypedOp for MaxPool2d {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let out_hw = |h, w| self.out_hw(h, w);
        plane_op::output_facts("MaxPool2d", inputs[0], None, &out_hw)
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::cnn::{MaxPool, PaddingSpec, PoolSpec};
    use tract_onnx::tract_core::ops::nn::DataFormat;

    /// tract's and ours on one `n × c × h × w` input: (tract's output, ours, ops replaced).
    fn both(
        (n, c, h, w): (usize, usize, usize, usize),
        kernel: usize,
        stride: usize,
        pads: [usize; 4],
        (seed, isa): (usize, Isa),
    ) -> (Tensor, Tensor, usize) {
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact([n, c, h, w])).unwrap();
        let padding = PaddingSpec::Explicit(tvec![pads[0], pads[1]], tvec![pads[2], pads[3]]);
        let spec = PoolSpec::new(
            DataFormat::NCHW,
            tvec![kernel, kernel],
            padding,
            None,
            Some(tvec![stride, stride]),
            c,
            c,
        );
        let pool = MaxPool { pool_spec: spec, with_index_outputs: None };
        let y = m.wire_node("pool", pool, &[x]).unwrap()[0];
        m.select_output_outlets(&[y]).unwrap();
        let m = m.into_decluttered().unwrap();
        let values: Vec<f32> =
            (0..n * c * h * w).map(|i| ((i * 7919 + seed * 31) % 1013) as f32 - 506.0).collect();
        let input = tvec![Tensor::from_shape(&[n, c, h, w], &values).unwrap().into_tvalue()];
        let mut ours = m.clone();
        let replaced = super::super::fuse::patch(&mut ours, isa).unwrap();
        let run = |m: TypedModel| {
            let plan = m.into_optimized().unwrap().into_runnable().unwrap();
            plan.run(input.clone()).unwrap().remove(0).into_tensor()
        };
        (run(m), run(ours), replaced)
    }

    #[test]
    fn equals_tract_exactly_on_random_shapes() {
        let mut seed = 23u64;
        let mut pick = |lo: usize, hi: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            lo + (seed >> 33) as usize % (hi - lo + 1)
        };
        for case in 0..16 {
            let kernel = pick(2, 3);
            let stride = 1 + case % 2;
            let p = kernel - 1;
            let pads = [pick(0, p), pick(0, p), pick(0, p), pick(0, p)];
            let shape = (pick(1, 2), pick(1, 9), pick(kernel, 21), pick(kernel, 40));
            for isa in Isa::available() {
                let (want, got, replaced) = both(shape, kernel, stride, pads, (case, isa));
                assert_eq!(replaced, 1, "{shape:?} k{kernel} s{stride} {pads:?}");
                assert_eq!(want, got, "{shape:?} k{kernel} s{stride} {pads:?} {isa:?}");
            }
        }
    }

    #[test]
    fn wide_windows_equal_tract_with_every_isa() {
        for (kernel, stride, pads) in [(11, 2, [5, 3, 10, 0]), (9, 1, [0, 8, 4, 4])] {
            for isa in Isa::available() {
                let (want, got, replaced) = both((1, 3, 30, 41), kernel, stride, pads, (7, isa));
                assert_eq!(replaced, 1);
                assert_eq!(want, got, "k{kernel} s{stride} {isa:?}");
            }
        }
    }

    #[test]
    fn resnet_stem_pool_equals_tract_with_threads() {
        let (want, got, replaced) = super::super::probe::with_threads(2, || {
            both((1, 64, 112, 112), 3, 2, [1; 4], (1, Isa::best()))
        });
        assert_eq!(replaced, 1);
        assert_eq!(want, got);
    }
}
