//! `PointwiseConv`: a 1×1, stride-1, unpadded NCHW f32 convolution, `out[cout, HW] =
//! W[cout, cin] · X[cin, HW]` per image, with bias, an optional residual input and a clamp
//! (ReLU, ReLU6) applied as the products are stored: MobileNet-V2's expand (+ ReLU6) and
//! project (+ residual `Add`) convolutions.
//!
//! NCHW needs no gathering: the [`gemm`] micro-kernel can read the input's channel rows in place
//! (row stride `HW`). A job whose output channels span [`PACK_PANELS`] panels or more first
//! copies its columns into contiguous panels, which stream faster; the last, partial column
//! block of an image is always copied, zero-padded.

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

/// Panels from which a job packs its input columns contiguously instead of reading the rows in
/// place (row stride `HW`): the copy pays for itself when this many panels read them (MobileNet-V2
/// 1×1 convolutions, AVX2; fewer panels measured slower packed).
const PACK_PANELS: usize = 6;

#[derive(Debug)]
struct Weights {
    /// Packed `MR`-row panels of `W` ([`gemm::pack`]).
    u: Vec<f32>,
    bias: Vec<f32>,
}

/// A fused 1×1 convolution computed as packed weights times the input's channel rows.
#[derive(Debug, Clone)]
pub struct PointwiseConv {
    cin: usize,
    cout: usize,
    residual: bool,
    act: Activation,
    isa: Isa,
    weights: Arc<Weights>,
}

impl PartialEq for PointwiseConv {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.weights, &other.weights)
            && (self.cin, self.cout, self.residual, self.act, self.isa)
                == (other.cin, other.cout, other.residual, other.act, other.isa)
    }
}
impl Eq for PointwiseConv {}

impl PointwiseConv {
    /// Builds the op from a `cout × cin` kernel (OIHW with 1×1 spatial) and its bias (`None`:
    /// zero).
    pub fn new(
        cin: usize,
        cout: usize,
        kernel: &[f32],
        bias: Option<&[f32]>,
        residual: bool,
        act: Activation,
        isa: Isa,
    ) -> TractResult<PointwiseConv> {
        ensure!(cin > 0 && cout > 0, "1×1 convolution with {cin} → {cout} channels");
        ensure!(kernel.len() == cout * cin, "kernel of {} values for {cin}→{cout}", kernel.len());
        let bias = match bias {
            Some(b) => {
                ensure!(b.len() == cout, "bias of {} values for {cout} channels", b.len());
                b.to_vec()
            }
            None => vec![0.0; cout],
        };
        let u = gemm::pack(kernel, cout, cin);
        Ok(PointwiseConv { cin, cout, residual, act, isa, weights: Arc::new(Weights { u, bias }) })
    }

    /// Computes one image: `input` is `cin × pixels`, `residual` and `out` are `cout × pixels`.
    pub fn run_image(
        &self,
        pixels: usize,
        input: &[f32],
        residual: Option<&[f32]>,
        out: &mut [f32],
    ) {
        self.run(pixels, input, (residual, false), out)
    }

    /// [`PointwiseConv::run_image`] added to what `out` holds, in place: `out = act(W·X + bias
    /// + out)`, for an unclamped op without bias the matrix products' `C += A·B`.
    pub fn add_image(&self, pixels: usize, input: &[f32], out: &mut [f32]) {
        self.run(pixels, input, (None, true), out)
    }

    /// One image, with the residual and whether `out`'s values are added
    /// ([`gemm::Dest::accumulate`]).
    fn run(
        &self,
        pixels: usize,
        input: &[f32],
        (residual, accumulate): (Option<&[f32]>, bool),
        out: &mut [f32],
    ) {
        let k = self.cin;
        let panels = self.cout.div_ceil(MR);
        // Column blocks whose `k` input rows stay in the L2 cache while every panel uses them.
        let mut block = ((65536 / k) / PANEL * PANEL).clamp(PANEL, 1024);
        let threads = parallel::threads();
        if threads > 1 && pixels > block {
            // As many blocks per thread: a 13th block of 13 would leave one thread idle for
            // the last one.
            let blocks = pixels.div_ceil(block).next_multiple_of(threads);
            block = pixels.div_ceil(blocks).next_multiple_of(PANEL);
        }
        let blocks = pixels.div_ceil(block);
        let split = parallel::channel_split(blocks, panels);
        let shared = SharedOut::new(out);
        parallel::for_each(blocks * split, |job| {
            let (b, s) = (job / split, job % split);
            let cols = (b * block, ((b + 1) * block).min(pixels));
            let ps = (s * panels / split, (s + 1) * panels / split);
            SCRATCH.with(|scratch| {
                let (tail, c) = &mut *scratch.borrow_mut();
                let c = grow(c, MR * PANEL);
                self.multiply(pixels, input, cols, ps, tail, c, (residual, accumulate), shared);
            })
        });
    }

    /// Products of input columns `cols` with channel panels `ps`, stored with the epilogue.
    #[allow(clippy::too_many_arguments)]
    fn multiply(
        &self,
        pixels: usize,
        input: &[f32],
        cols: (usize, usize),
        ps: (usize, usize),
        tail: &mut Vec<f32>,
        c: &mut [f32],
        (residual, accumulate): (Option<&[f32]>, bool),
        out: SharedOut,
    ) {
        let k = self.cin;
        // Column chunks of one kernel call each: (first column, width, columns kept). With
        // AVX2, blocks one vector wide ([`gemm::narrow_into`]) end the columns: a 7×7 image is
        // 32 + 16 + 8 columns, not 32 + 32.
        let narrow = self.isa == Isa::Avx2;
        let mut chunks = vec![];
        let mut t0 = cols.0;
        while t0 < cols.1 {
            let left = cols.1 - t0;
            // Two units unless one (and, with AVX2, a narrow block) covers what is left.
            let one_unit_covers = LANES + if narrow { gemm::NARROW } else { 0 };
            let width = if left > one_unit_covers {
                2 * LANES
            } else if narrow && left <= gemm::NARROW {
                gemm::NARROW
            } else {
                LANES
            };
            chunks.push((t0, width, width.min(left)));
            t0 += width;
        }
        // A chunk is read in place, or packed (its `k` rows contiguous, zero-padded past the
        // image): the partial last one always, all of them when enough panels reuse them.
        let pack_all = ps.1 - ps.0 >= PACK_PANELS;
        let mut packed_at = Vec::with_capacity(chunks.len());
        let mut total = 0;
        for &(t0, width, _) in &chunks {
            let packed = pack_all || t0 + width > pixels;
            packed_at.push(packed.then_some(total));
            total += if packed { k * width } else { 0 };
        }
        let packed = grow(tail, total);
        for (&(t0, width, n), at) in chunks.iter().zip(&packed_at) {
            let Some(at) = *at else { continue };
            for (kk, row) in packed[at..][..k * width].chunks_exact_mut(width).enumerate() {
                row[..n].copy_from_slice(&input[kk * pixels + t0..][..n]);
                row[n..].fill(0.0);
            }
        }
        let packed = &packed[..];
        // Panels outermost: one panel of weights stays in L1 while the block's columns stream
        // from L2, and the weights are read once per block.
        for p in ps.0..ps.1 {
            let u = &self.weights.u[p * k * MR..][..k * MR];
            for (&(t0, width, n), at) in chunks.iter().zip(&packed_at) {
                let (v, v_stride) = match *at {
                    Some(at) => (&packed[at..], width),
                    None => (&input[t0..], pixels),
                };
                let rows = MR.min(self.cout - p * MR);
                let dest = gemm::Dest {
                    out,
                    at: p * MR * pixels + t0,
                    stride: pixels,
                    n,
                    bias: &self.weights.bias[p * MR..][..rows],
                    residual,
                    accumulate,
                    act: self.act,
                };
                // SAFETY: jobs own disjoint (channel, column range) pairs.
                unsafe {
                    if width == gemm::NARROW {
                        gemm::narrow_into(self.isa, k, u, v, v_stride, dest)
                    } else {
                        gemm::panel_into(self.isa, k, u, v, v_stride, width / LANES, c, dest)
                    }
                }
            }
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = RefCell::default();
}

impl Op for PointwiseConv {
    fn name(&self) -> StaticName {
        "PointwiseConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{}→{}, residual {}, {:?}, {:?}",
            self.cin, self.cout, self.residual, self.act, self.isa
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for PointwiseConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 1 + self.residual as usize, "PointwiseConv: wrong input count");
        let x = &inputs[0];
        let &[n, c, h, w] = x.shape() else {
            bail!("PointwiseConv: input is not NCHW: {:?}", x.shape())
        };
        ensure!(c == self.cin, "PointwiseConv: {c} input channels for {}", self.cin);
        let pixels = h * w;
        let out_shape = [n, self.cout, h, w];
        let (image_in, image_out) = (c * pixels, self.cout * pixels);
        let x = x.try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let res_view = inputs.get(1).map(|r| r.try_as_plain_ram()).transpose()?;
        let res = res_view.as_ref().map(|r| r.as_slice::<f32>()).transpose()?;
        if let (Some(r), Some(t)) = (res, inputs.get(1)) {
            ensure!(t.shape() == out_shape && r.len() == n * image_out, "PointwiseConv: residual");
        }
        // SAFETY: every value is written by `run_image` before the tensor is read.
        let mut out = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        let mut view = out.try_as_plain_ram_mut()?;
        let slice = view.as_slice_mut::<f32>()?;
        for b in 0..n {
            self.run_image(
                pixels,
                &x[b * image_in..][..image_in],
                res.map(|r| &r[b * image_out..][..image_out]),
                &mut slice[b * image_out..][..image_out],
            );
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for PointwiseConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let s = &inputs[0].shape;
        ensure!(s.rank() == 4, "PointwiseConv: input is not NCHW");
        Ok(tvec!(f32::fact([s[0].clone(), self.cout.to_dim(), s[2].clone(), s[3].clone()])))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::super::probe::{with_threads, ConvCase, Pair};
    use super::*;

    /// Bound on `max |ours - tract| / max |tract|`: the same products summed in another order.
    const BOUND: f32 = 1e-5;

    fn case(cin: usize, cout: usize, hw: (usize, usize), residual: bool, relu6: bool) -> ConvCase {
        ConvCase {
            cin,
            cout,
            hw,
            kernel: 1,
            stride: 1,
            pads: [0; 4],
            residual,
            relu: relu6 || !residual,
            relu6,
            depthwise: false,
        }
    }

    #[test]
    fn matches_tract_on_random_shapes_with_every_isa() {
        let mut seed = 11u64;
        let mut pick = |lo: usize, hi: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            lo + (seed >> 33) as usize % (hi - lo + 1)
        };
        for case_ix in 0..12 {
            let c = case(
                pick(1, 200),
                pick(1, 70),
                (pick(1, 23), pick(1, 29)),
                case_ix % 2 == 1,
                case_ix % 3 == 0,
            );
            for isa in Isa::available() {
                let pair = Pair::new(&c, case_ix as u64, isa).unwrap();
                assert_eq!(pair.replaced, 1, "{c:?}");
                let err = pair.relative_error().unwrap();
                assert!(err <= BOUND, "{c:?} {isa:?}: relative error {err:e}");
            }
        }
    }

    #[test]
    fn a_bias_behind_a_cast_is_found_before_declutter() {
        use tract_onnx::tract_core::ops::cast::cast;
        use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
        use tract_onnx::tract_core::ops::nn::DataFormat;
        let (cin, cout) = (20, 12);
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact([1, cin, 5, 6])).unwrap();
        let w: Vec<f32> = (0..cout * cin).map(|i| ((i * 37 % 23) as f32 - 11.0) / 40.0).collect();
        let b: Vec<f32> = (0..cout).map(|i| i as f32 / 10.0 - 0.5).collect();
        let w = m.add_const("w", Tensor::from_shape(&[cout, cin, 1, 1], &w).unwrap()).unwrap();
        let b = m.add_const("b", Tensor::from_shape(&[cout], &b).unwrap()).unwrap();
        // As tract-onnx's typed translation leaves it: a cast whose fact is not folded yet.
        let id = m.add_node("b.cast", cast(f32::datum_type()), tvec![f32::fact([cout])]).unwrap();
        m.add_edge(b, InletId::new(id, 0)).unwrap();
        let b = OutletId::new(id, 0);
        assert!(m.outlet_fact(b).unwrap().konst.is_none());
        let pool =
            PoolSpec::new(DataFormat::NCHW, tvec![1, 1], PaddingSpec::Valid, None, None, cin, cout);
        let conv = Conv::new(pool, KernelFormat::OIHW, 1, None);
        let y = m.wire_node("conv", conv, &[x, w, b]).unwrap()[0];
        m.select_output_outlets(&[y]).unwrap();
        let input: Vec<f32> = (0..cin * 30).map(|i| ((i * 13 % 17) as f32 - 8.0) / 8.0).collect();
        let input = tvec![Tensor::from_shape(&[1, cin, 5, 6], &input).unwrap().into_tvalue()];
        let mut ours = m.clone();
        assert_eq!(super::super::fuse::patch_pointwise(&mut ours, Isa::best()).unwrap(), 1);
        let run = |m: TypedModel| -> Vec<f32> {
            let plan = m.into_optimized().unwrap().into_runnable().unwrap();
            let y = plan.run(input.clone()).unwrap().remove(0);
            y.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec()
        };
        let (want, got) = (run(m), run(ours));
        let scale = want.iter().fold(0f32, |a, x| a.max(x.abs()));
        let diff = want.iter().zip(&got).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
        assert!(diff <= BOUND * scale, "difference {diff:e} at scale {scale}");
    }

    #[test]
    fn threaded_runs_match_single_threaded() {
        for c in [case(96, 24, (13, 11), true, false), case(24, 144, (7, 7), false, true)] {
            let pair = Pair::new(&c, 3, Isa::best()).unwrap();
            let one = pair.ours.run(pair.inputs.clone()).unwrap().remove(0);
            let three = with_threads(3, || pair.ours.run(pair.inputs.clone()).unwrap().remove(0));
            assert_eq!(one, three);
        }
    }
}
