//! `Im2colConv`: any ungrouped, undilated NCHW f32 convolution (strided, any kernel size) as
//! one matrix product per block of output pixels, with bias, an optional residual input and an
//! optional ReLU applied as the products are stored.
//!
//! A job gathers the input patches of a block of consecutive output pixels into a
//! `K × pixels` panel (`K = cin·kh·kw`, zero where the kernel overlaps the padding) and
//! multiplies it by the packed weights with the [`gemm`] micro-kernel. This is where tract is
//! slowest on ResNet-class trunks: the 7×7 stride-2 stem and the stride-2 3×3 convolutions.

use super::copy::{copy_row, every_other, zero_row};
use super::gemm::{self, LANES, MR};
use super::parallel::{self, SharedOut};
use super::scratch::grow;
use super::{Activation, Isa};
use std::cell::RefCell;
use std::sync::Arc;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

/// Columns of one kernel call (two vector units).
const PANEL: usize = 2 * LANES;

#[derive(Debug)]
struct Weights {
    /// Packed `MR`-row panels of the `cout × K` kernel ([`gemm::pack`]).
    u: Vec<f32>,
    bias: Vec<f32>,
}

/// Shape of an [`Im2colConv`]: channels, kernel, stride and padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel height and width.
    pub kernel: (usize, usize),
    /// Strides along height and width.
    pub stride: (usize, usize),
    /// Zero padding: top, left, bottom, right.
    pub pads: [usize; 4],
}

impl ConvShape {
    /// Output height and width for an `h × w` input, `None` when empty.
    pub fn out_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let o = |n: usize, a: usize, b: usize, k: usize, s: usize| {
            (n + a + b).checked_sub(k).map(|x| x / s + 1)
        };
        let oh = o(h, self.pads[0], self.pads[2], self.kernel.0, self.stride.0)?;
        let ow = o(w, self.pads[1], self.pads[3], self.kernel.1, self.stride.1)?;
        Some((oh, ow))
    }

    fn k(&self) -> usize {
        self.cin * self.kernel.0 * self.kernel.1
    }
}

/// A fused convolution computed as gathered patches times packed weights.
#[derive(Debug, Clone)]
pub struct Im2colConv {
    shape: ConvShape,
    residual: bool,
    act: Activation,
    isa: Isa,
    weights: Arc<Weights>,
}

impl PartialEq for Im2colConv {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.weights, &other.weights)
            && (self.shape, self.residual, self.act, self.isa)
                == (other.shape, other.residual, other.act, other.isa)
    }
}
impl Eq for Im2colConv {}

impl Im2colConv {
    /// Builds the op from an OIHW kernel and its bias (`None`: zero).
    pub fn new(
        shape: ConvShape,
        kernel: &[f32],
        bias: Option<&[f32]>,
        residual: bool,
        act: Activation,
        isa: Isa,
    ) -> TractResult<Im2colConv> {
        let (k, cout) = (shape.k(), shape.cout);
        ensure!(kernel.len() == cout * k, "kernel of {} values for {shape:?}", kernel.len());
        let bias = match bias {
            Some(b) => {
                ensure!(b.len() == cout, "bias of {} values for {cout} channels", b.len());
                b.to_vec()
            }
            None => vec![0.0; cout],
        };
        let u = gemm::pack(kernel, cout, k);
        Ok(Im2colConv { shape, residual, act, isa, weights: Arc::new(Weights { u, bias }) })
    }

    /// Computes one image: `input` is `cin × h × w`, `residual` and `out` are `cout × oh × ow`.
    pub fn run_image(
        &self,
        (h, w): (usize, usize),
        (oh, ow): (usize, usize),
        input: &[f32],
        residual: Option<&[f32]>,
        out: &mut [f32],
    ) {
        let k = self.shape.k();
        let pixels = oh * ow;
        let panels = self.shape.cout.div_ceil(MR);
        let block = ((65536 / k) / PANEL * PANEL).clamp(PANEL, 512);
        let blocks = pixels.div_ceil(block);
        let split = parallel::channel_split(blocks, panels);
        let shared = SharedOut::new(out);
        parallel::for_each(blocks * split, |job| {
            let (b, s) = (job / split, job % split);
            let pix = (b * block, ((b + 1) * block).min(pixels));
            let ps = (s * panels / split, (s + 1) * panels / split);
            SCRATCH.with(|scratch| {
                let (v, c) = &mut *scratch.borrow_mut();
                let v = grow(v, k * block);
                let c = grow(c, MR * PANEL);
                gather(self.isa, &self.shape, (h, w), ow, input, pix, v, block);
                self.multiply(pixels, pix, ps, v, block, c, residual, shared);
            })
        });
    }

    /// Products of the gathered block with channel panels `ps`, stored with the epilogue.
    #[allow(clippy::too_many_arguments)]
    fn multiply(
        &self,
        pixels: usize,
        pix: (usize, usize),
        ps: (usize, usize),
        v: &[f32],
        stride: usize,
        c: &mut [f32],
        residual: Option<&[f32]>,
        out: SharedOut,
    ) {
        let k = self.shape.k();
        let n = pix.1 - pix.0;
        let mut t0 = 0;
        while t0 < n {
            let nv = if n - t0 > LANES { 2 } else { 1 };
            let cols = (nv * LANES).min(n - t0);
            for p in ps.0..ps.1 {
                let u = &self.weights.u[p * k * MR..][..k * MR];
                let rows = MR.min(self.shape.cout - p * MR);
                let dest = gemm::Dest {
                    out,
                    at: p * MR * pixels + pix.0 + t0,
                    stride: pixels,
                    n: cols,
                    bias: &self.weights.bias[p * MR..][..rows],
                    residual,
                    accumulate: false,
                    act: self.act,
                };
                // SAFETY: jobs own disjoint (channel, pixel range) pairs.
                unsafe { gemm::panel_into(self.isa, k, u, &v[t0..], stride, nv, c, dest) };
            }
            t0 += nv * LANES;
        }
    }
}

/// `v[kk·stride + j]` = input under weight `kk` for output pixel `pix.0 + j`.
#[inline(always)]
fn gather_body(
    s: &ConvShape,
    (h, w): (usize, usize),
    ow: usize,
    input: &[f32],
    pix: (usize, usize),
    v: &mut [f32],
    stride: usize,
) {
    let (kh, kw) = s.kernel;
    let (sh, sw) = s.stride;
    for ci in 0..s.cin {
        let plane = &input[ci * h * w..][..h * w];
        for ky in 0..kh {
            for kx in 0..kw {
                let row = &mut v[((ci * kh + ky) * kw + kx) * stride..][..pix.1 - pix.0];
                let mut p = pix.0;
                while p < pix.1 {
                    let (oy, ox0) = (p / ow, p % ow);
                    let run = (ow - ox0).min(pix.1 - p);
                    let dst = &mut row[p - pix.0..][..run];
                    let iy = (oy * sh + ky) as isize - s.pads[0] as isize;
                    if !(0..h as isize).contains(&iy) {
                        dst.fill(0.0);
                    } else {
                        let src = &plane[iy as usize * w..][..w];
                        // Output columns whose input column `ox·sw + kx - pad_left` lies inside
                        // the row: `lo..hi` of this run; zeros on either side.
                        let (pl, first) = (s.pads[1], ox0 * sw + kx);
                        let lo = pl.saturating_sub(first).div_ceil(sw).min(run);
                        let hi = (w + pl).saturating_sub(first).div_ceil(sw).clamp(lo, run);
                        zero_row(&mut dst[..lo]);
                        zero_row(&mut dst[hi..]);
                        let start = first + lo * sw - pl;
                        let (dst, src) = (&mut dst[lo..hi], &src[start..]);
                        match sw {
                            1 => copy_row(dst, &src[..dst.len()]),
                            2 => every_other(dst, src),
                            _ => dst
                                .iter_mut()
                                .zip(src.iter().step_by(sw))
                                .for_each(|(d, &x)| *d = x),
                        }
                    }
                    p += run;
                }
            }
        }
    }
}

super::multiversion! {
    /// [`gather_body`] compiled for `isa`.
    fn gather(
        s: &ConvShape,
        hw: (usize, usize),
        ow: usize,
        input: &[f32],
        pix: (usize, usize),
        v: &mut [f32],
        stride: usize,
    ) => gather_body
}

thread_local! {
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = RefCell::default();
}

impl Op for Im2colConv {
    fn name(&self) -> StaticName {
        "Im2colConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{:?}, residual {}, {:?}, {:?}",
            self.shape, self.residual, self.act, self.isa
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for Im2colConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 1 + self.residual as usize, "Im2colConv: wrong input count");
        let x = &inputs[0];
        let &[n, c, h, w] = x.shape() else {
            bail!("Im2colConv: input is not NCHW: {:?}", x.shape())
        };
        ensure!(c == self.shape.cin, "Im2colConv: {c} input channels for {:?}", self.shape);
        let (oh, ow) =
            self.shape.out_hw(h, w).with_context(|| format!("empty output for {h}×{w}"))?;
        let out_shape = [n, self.shape.cout, oh, ow];
        let (image_in, image_out) = (c * h * w, self.shape.cout * oh * ow);
        let x = x.try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let res_view = inputs.get(1).map(|r| r.try_as_plain_ram()).transpose()?;
        let res = res_view.as_ref().map(|r| r.as_slice::<f32>()).transpose()?;
        if let (Some(r), Some(t)) = (res, inputs.get(1)) {
            ensure!(t.shape() == out_shape && r.len() == n * image_out, "Im2colConv: residual");
        }
        let mut out = Tensor::zero::<f32>(&out_shape)?;
        let mut view = out.try_as_plain_ram_mut()?;
        let slice = view.as_slice_mut::<f32>()?;
        for b in 0..n {
            self.run_image(
                (h, w),
                (oh, ow),
                &x[b * image_in..][..image_in],
                res.map(|r| &r[b * image_out..][..image_out]),
                &mut slice[b * image_out..][..image_out],
            );
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for Im2colConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let s = &inputs[0].shape;
        ensure!(s.rank() == 4, "Im2colConv: input is not NCHW");
        let (h, w) = (s[2].to_usize()?, s[3].to_usize()?);
        let (oh, ow) = self.shape.out_hw(h, w).context("empty output")?;
        Ok(tvec!(f32::fact([s[0].clone(), self.shape.cout.to_dim(), oh.to_dim(), ow.to_dim()])))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::super::probe::{with_threads, ConvCase, Pair};
    use super::*;

    /// Bound on `max |ours - tract| / max |tract|`: the same products summed in another order.
    const BOUND: f32 = 1e-5;

    #[test]
    fn matches_tract_on_random_shapes_with_every_isa() {
        let mut seed = 5u64;
        let mut pick = |lo: usize, hi: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            lo + (seed >> 33) as usize % (hi - lo + 1)
        };
        for case_ix in 0..10 {
            let kernel = [3, 5, 7][case_ix % 3];
            let pad = pick(0, kernel / 2);
            let case = ConvCase {
                cin: pick(1, 24),
                cout: pick(16, 40),
                hw: (pick(kernel, 21), pick(kernel, 25)),
                kernel,
                stride: pick(1, 2),
                pads: [pad, pick(0, kernel / 2), pad, pick(0, kernel / 2)],
                residual: case_ix % 2 == 1,
                relu: case_ix % 3 != 1,
                relu6: false,
                depthwise: false,
            };
            if case.cin * kernel * kernel < 16
                || (kernel == 3 && case.stride == 1 && case.cin >= 16)
            {
                continue;
            }
            for isa in Isa::available() {
                let pair = Pair::new(&case, case_ix as u64, isa).unwrap();
                // Strided 3×3 convolutions with 64+ input channels stay with tract but with
                // AVX-512 (`fuse`).
                if kernel == 3 && case.stride == 2 && case.cin >= 64 && isa != Isa::Avx512 {
                    assert_eq!(pair.replaced, 0, "{case:?} {isa:?}");
                    continue;
                }
                assert_eq!(pair.replaced, 1, "{case:?}");
                let err = pair.relative_error().unwrap();
                assert!(err <= BOUND, "{case:?} {isa:?}: relative error {err:e}");
            }
        }
    }

    #[test]
    fn threaded_runs_match_single_threaded() {
        let case = ConvCase {
            cin: 3,
            cout: 24,
            hw: (40, 37),
            kernel: 7,
            stride: 2,
            pads: [3; 4],
            residual: false,
            relu: true,
            relu6: false,
            depthwise: false,
        };
        let pair = Pair::new(&case, 3, Isa::best()).unwrap();
        let one = pair.ours.run(pair.inputs.clone()).unwrap().remove(0);
        let three = with_threads(3, || pair.ours.run(pair.inputs.clone()).unwrap().remove(0));
        assert_eq!(one, three);
    }
}
