//! `MaxPool2d`: a 2-D max pooling of NCHW or CHW f32 planes (ResNet's 3×3 stride-2 pool after
//! the stem), threaded over the planes.
//!
//! Each input row a window reads is copied once into a scratch row padded with `-∞` and, for
//! stride 2, split into its even and odd columns, so that every output row is a running
//! maximum of unit-stride sweeps that vectorise. The result is exact: a maximum does not round.

use super::copy::{copy_row, every_other};
use super::parallel::{self, SharedOut};
use super::plane_op;
use super::scratch::grow;
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
}

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
        // Stride 2: the even then the odd columns of the padded row.
        let half = pw.div_ceil(2);
        let threads = parallel::threads();
        let jobs = if threads == 1 { 1 } else { planes.min(4 * threads) };
        let shared = SharedOut::new(out);
        parallel::for_each(jobs, |job| {
            SCRATCH.with(|scratch| {
                let scratch = &mut *scratch.borrow_mut();
                let scratch = grow(scratch, pw + 2 * half);
                let (padded, split) = scratch.split_at_mut(pw);
                // The padding columns stay `-∞`: only the interior is written below.
                padded.fill(f32::NEG_INFINITY);
                for p in job * planes / jobs..(job + 1) * planes / jobs {
                    let src = &input[p * h * w..][..h * w];
                    // SAFETY: jobs own disjoint plane ranges.
                    let dst = unsafe { shared.slice(p * oh * ow, oh * ow) };
                    for (oy, row) in dst.chunks_exact_mut(ow).enumerate() {
                        row.fill(f32::NEG_INFINITY);
                        for ky in 0..kh {
                            let Some(iy) = (oy * s + ky).checked_sub(self.pads[0]) else {
                                continue;
                            };
                            if iy >= h {
                                continue;
                            }
                            copy_row(&mut padded[self.pads[1]..][..w], &src[iy * w..][..w]);
                            if s == 1 {
                                for kx in 0..kw {
                                    max_into(row, &padded[kx..][..ow]);
                                }
                                continue;
                            }
                            let (even, odd) = split.split_at_mut(half);
                            every_other(even, padded);
                            every_other(&mut odd[..pw / 2], &padded[1..]);
                            // Column `2·ox + kx`: even `ox + kx/2` for even `kx`, odd ones else.
                            for kx in 0..kw {
                                let phase = if kx % 2 == 0 { &even[..] } else { &odd[..] };
                                max_into(row, &phase[kx / 2..][..ow]);
                            }
                        }
                    }
                }
            })
        });
    }
}

/// `acc[i] = max(acc[i], x[i])`, as a compare and select (one `maxps`).
#[inline(always)]
fn max_into(acc: &mut [f32], x: &[f32]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a = if v > *a { v } else { *a };
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
        seed: usize,
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
        let replaced = super::super::fuse::patch(&mut ours, super::super::Isa::best()).unwrap();
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
            let (want, got, replaced) = both(shape, kernel, stride, pads, case);
            assert_eq!(replaced, 1, "{shape:?} k{kernel} s{stride} {pads:?}");
            assert_eq!(want, got, "{shape:?} k{kernel} s{stride} {pads:?}");
        }
    }

    #[test]
    fn resnet_stem_pool_equals_tract_with_threads() {
        let (want, got, replaced) =
            super::super::probe::with_threads(2, || both((1, 64, 112, 112), 3, 2, [1; 4], 1));
        assert_eq!(replaced, 1);
        assert_eq!(want, got);
    }
}
