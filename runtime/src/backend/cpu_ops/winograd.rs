//! `WinogradConv`: a stride-1 3×3 convolution by Winograd F(2×2, 3×3) or F(4×4, 3×3), NCHW
//! f32, with its bias, an optional residual input added after it, and an optional ReLU, in one
//! op.
//!
//! Per image, the output is cut into blocks of tile rows; a job transforms one block's input
//! tiles (`V = Bᵀ d B`, `n²` planes of `cin × tiles`), multiplies them by the transformed
//! weights (`U = G g Gᵀ`, packed at load time) as `n²` matrix products, and transforms 8 output
//! channels at a time back (`Aᵀ M A`) with the epilogue applied. Jobs run on the model's
//! threads; with few blocks (deep, small layers) they also split the output channels.
//!
//! The tile size is chosen per layer from its (concrete) input size by [`choose_tile`]: F(4×4)
//! does 1.78× fewer multiplications per output, but on small planes its 4×4 tiles waste more
//! of the matrix products' columns.
//!
//! Error: F(2×2)'s transforms are exact up to f32 rounding of sums of at most 4 terms; tests
//! bound the difference to tract's direct convolution by 1e-5 of the output's largest
//! magnitude. F(4×4)'s larger coefficients round more; its bound is 1e-4 (measured ≈ 1e-5).

use super::gemm::{self, LANES, MR};
use super::parallel::{self, SharedOut};
use super::scratch::grow;
use super::winograd_transform::{
    input_tiles, output_tiles, Epilogue, Geometry, Scratch, Tile, CHUNK,
};
use super::Isa;
use std::cell::RefCell;
use std::sync::Arc;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

/// Values between consecutive ξ planes of the scratch buffers beyond their size. They keep the
/// transforms' `n²` streams out of the same L1 sets (plane sizes are multiples of 4 KiB for
/// most channel counts: 1.4× less time on ResNet-18's 56×56 layers), and take the chunked
/// reads past a plane's last row of products.
const PLANE_PAD: usize = CHUNK;
/// Floats of a job's transformed input (`n² · cin · tiles`) that a block aims at.
const BLOCK_FLOATS: usize = 131_072;
/// Fewest tiles a job aims at, whatever the channel count.
const MIN_TILES: usize = 16;

/// The convolution's transformed, packed weights and its bias.
#[derive(Debug)]
struct Weights {
    /// `u[((ξ·panels + p)·cin + ci)·MR + r]` is `(G g Gᵀ)[ξ]` of output channel `p·MR + r`.
    u: Vec<f32>,
    /// The algorithm `u` is transformed for.
    tile: Tile,
    bias: Vec<f32>,
}

/// A fused stride-1 3×3 convolution computed by Winograd F(2×2, 3×3) or F(4×4, 3×3).
#[derive(Debug, Clone)]
pub struct WinogradConv {
    cin: usize,
    cout: usize,
    /// Zero padding: top, left, bottom, right.
    pads: [usize; 4],
    residual: bool,
    relu: bool,
    isa: Isa,
    weights: Arc<Weights>,
}

impl PartialEq for WinogradConv {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.weights, &other.weights)
            && (self.pads, self.residual, self.relu, self.isa)
                == (other.pads, other.residual, other.relu, other.isa)
    }
}
impl Eq for WinogradConv {}

impl WinogradConv {
    /// Builds the op from an OIHW `cout × cin × 3 × 3` kernel and its bias (`None`: zero),
    /// computed with `tile`. `residual` says the op takes a second input added after the bias;
    /// `relu` clamps at 0.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tile: Tile,
        kernel: &[f32],
        bias: Option<&[f32]>,
        cin: usize,
        cout: usize,
        pads: [usize; 4],
        residual: bool,
        relu: bool,
        isa: Isa,
    ) -> TractResult<WinogradConv> {
        ensure!(
            kernel.len() == cout * cin * 9,
            "kernel of {} values for {cout}×{cin}×3×3",
            kernel.len()
        );
        let bias = match bias {
            Some(b) => {
                ensure!(b.len() == cout, "bias of {} values for {cout} channels", b.len());
                b.to_vec()
            }
            None => vec![0.0; cout],
        };
        let u = transform_weights(tile, kernel, cin, cout);
        Ok(WinogradConv {
            cin,
            cout,
            pads,
            residual,
            relu,
            isa,
            weights: Arc::new(Weights { u, tile, bias }),
        })
    }

    /// Computes `n` images: `input` is `n × cin × h × w`, `residual` and `out` are
    /// `n × cout × oh × ow`.
    ///
    /// A job covers tile rows of one image or, where an image's tiles fill less than a block
    /// (deep, small layers at batch > 1), whole images side by side as the columns of one set
    /// of matrix products, so that each weight panel is read once for all of them.
    pub fn run_images(
        &self,
        g: &Geometry,
        n: usize,
        input: &[f32],
        residual: Option<&[f32]>,
        out: &mut [f32],
    ) {
        let panels = self.cout.div_ceil(MR);
        let Blocks { rows, blocks, group } = Blocks::new(g, self.cin, n);
        let units = n.div_ceil(group) * blocks;
        let segments = |unit: usize| {
            let (first, b) = (unit / blocks * group, unit % blocks);
            Segments {
                images: (first, (first + group).min(n)),
                tiles: (b * rows, ((b + 1) * rows).min(g.th)),
            }
        };
        let split = parallel::channel_split(units, panels);
        let shared = SharedOut::new(out);
        if split == 1 {
            parallel::for_each(units, |unit| {
                JOB_SCRATCH.with(|scratch| {
                    let JobScratch { v, m, rows } = &mut *scratch.borrow_mut();
                    let seg = segments(unit);
                    let layout = Layout::new(g, self.cin, seg);
                    let v = grow(v, layout.v_len);
                    self.transform_input(g, input, seg, (0, self.cin), &layout, v, rows);
                    self.multiply(g, v, residual, shared, seg, (0, panels), m, rows);
                })
            });
            return;
        }
        // Fewer units than threads: the units' input transforms are computed once, split over
        // the input channels, then the products and output transforms split over the output
        // channels.
        let stride = Layout::new(g, self.cin, segments(0)).v_len;
        let mut local = Vec::new();
        SHARED_V.with(|cell| {
            let mut kept = cell.try_borrow_mut();
            let buf = match kept.as_deref_mut() {
                Ok(kept) => kept,
                Err(_) => &mut local,
            };
            let v_all = grow(buf, units * stride);
            let v_shared = SharedOut::new(v_all);
            parallel::for_each(units * split, |job| {
                let (unit, s) = (job / split, job % split);
                let channels = (s * self.cin / split, (s + 1) * self.cin / split);
                let layout = Layout::new(g, self.cin, segments(unit));
                // SAFETY: unit `unit` owns `v_all[unit·stride..][..stride]`, and its jobs
                // write the disjoint channel rows `channels` of it (and their rows' ends).
                let v = unsafe { v_shared.slice(unit * stride, stride) };
                JOB_SCRATCH.with(|scratch| {
                    let rows = &mut scratch.borrow_mut().rows;
                    self.transform_input(g, input, segments(unit), channels, &layout, v, rows);
                })
            });
            let v_all = &*v_all;
            parallel::for_each(units * split, |job| {
                let (unit, s) = (job / split, job % split);
                let channel_panels = (s * panels / split, (s + 1) * panels / split);
                let v = &v_all[unit * stride..][..stride];
                JOB_SCRATCH.with(|scratch| {
                    let JobScratch { m, rows, .. } = &mut *scratch.borrow_mut();
                    let seg = segments(unit);
                    self.multiply(g, v, residual, shared, seg, channel_panels, m, rows);
                })
            });
        });
    }

    /// The input transform of input channels `channels.0..channels.1` of `segments` into their
    /// rows of `v` (laid out as `layout`).
    #[allow(clippy::too_many_arguments)]
    fn transform_input(
        &self,
        g: &Geometry,
        input: &[f32],
        segments: Segments,
        (c0, c1): (usize, usize),
        layout: &Layout,
        v: &mut [f32],
        rows: &mut Scratch,
    ) {
        let Segments { images: (i0, i1), tiles } = segments;
        let hw = g.h * g.w;
        // Images in increasing column order: the chunked writes past one image's columns land
        // on the next image's, written afterwards, or in the row's last `CHUNK` values.
        for (k, image) in (i0..i1).enumerate() {
            let x = &input[(image * self.cin + c0) * hw..][..(c1 - c0) * hw];
            let v = &mut v[c0 * layout.v_row + k * layout.per_image..];
            input_tiles(self.isa, g, x, c1 - c0, tiles, v, layout.v_plane, layout.v_row, rows);
        }
    }

    /// The matrix products and output transforms of `segments` for the output channels of
    /// panels `panels.0..panels.1`, from their transformed input `v`.
    #[allow(clippy::too_many_arguments)]
    fn multiply(
        &self,
        g: &Geometry,
        v: &[f32],
        residual: Option<&[f32]>,
        out: SharedOut,
        segments: Segments,
        panels: (usize, usize),
        m: &mut Vec<f32>,
        rows: &mut Scratch,
    ) {
        let cin = self.cin;
        let Segments { images: (i0, i1), tiles } = segments;
        let Layout { per_image, tp, v_row, v_plane, .. } = Layout::new(g, cin, segments);
        let (p0, p1) = panels;
        let rows_m = (p1 - p0) * MR;
        let m_plane = rows_m * tp + PLANE_PAD;
        let xis = g.tile.products();
        let m = grow(m, xis * m_plane);
        let plane = g.oh * g.ow;
        let image_out = self.cout * plane;
        let all_panels = self.cout.div_ceil(MR);
        // Per ξ and column panel, every channel panel: the `v` panel stays in L1 while the
        // packed weights stream past it.
        for xi in 0..xis {
            let vx = &v[xi * v_plane..][..cin * v_row];
            let mx = &mut m[xi * m_plane..][..rows_m * tp];
            let mut t0 = 0;
            while t0 < tp {
                let nv = if tp - t0 >= 2 * LANES { 2 } else { 1 };
                for p in p0..p1 {
                    let u = &self.weights.u[(xi * all_panels + p) * cin * MR..][..cin * MR];
                    let c = &mut mx[(p - p0) * MR * tp + t0..];
                    gemm::panel(self.isa, cin, u, &vx[t0..], v_row, nv, c, tp);
                }
                t0 += nv * LANES;
            }
        }
        let tm = g.tile.m();
        let (y0, y1) = (tm * tiles.0, (tm * tiles.1).min(g.oh));
        for (k, image) in (i0..i1).enumerate() {
            for co in p0 * MR..(p1 * MR).min(self.cout) {
                let at = image * image_out + co * plane;
                let epi = Epilogue {
                    bias: self.weights.bias[co],
                    residual: residual.map(|res| &res[at..][..plane]),
                    relu: self.relu,
                };
                // SAFETY: jobs own disjoint (image, channel, row range) triples: units split
                // the images and rows, the channel split the panels, and this job writes only
                // its rows of its channels of its images.
                let dst = unsafe { out.slice(at + y0 * g.ow, (y1 - y0) * g.ow) };
                let mc = &m[(co - p0 * MR) * tp + k * per_image..];
                output_tiles(self.isa, g, mc, m_plane, tiles, dst, epi, rows);
            }
        }
    }

    fn geometry(&self, h: usize, w: usize) -> TractResult<Geometry> {
        Geometry::new(self.weights.tile, h, w, self.pads)
            .with_context(|| format!("empty output for a {h}×{w} input"))
    }
}

/// How the tiles of `n` images are cut into jobs.
#[derive(Debug, Clone, Copy)]
struct Blocks {
    /// Tile rows per job.
    rows: usize,
    /// Jobs per image (`⌈th / rows⌉`).
    blocks: usize,
    /// Images per job: more than one only when an image is a single block.
    group: usize,
}

impl Blocks {
    fn new(g: &Geometry, cin: usize, n: usize) -> Blocks {
        let target_tiles = (BLOCK_FLOATS / (g.tile.products() * cin)).clamp(MIN_TILES, 256);
        let rows = target_tiles.div_ceil(g.tw).clamp(1, g.th);
        let blocks = g.th.div_ceil(rows);
        let group = if blocks == 1 { (target_tiles / (g.th * g.tw)).clamp(1, n) } else { 1 };
        Blocks { rows, blocks, group }
    }

    /// (Transformed product × column) pairs of the matrix products per image, the columns of
    /// a job being rounded up to the micro-kernel's width.
    fn cost(g: &Geometry, cin: usize, n: usize) -> usize {
        let Blocks { rows, group, .. } = Blocks::new(g, cin, n);
        let columns = (group * rows * g.tw).next_multiple_of(LANES);
        g.tile.products() * columns * g.th.div_ceil(rows) / group
    }
}

/// What one job transforms: tile rows `tiles` of each of the images `images`.
#[derive(Debug, Clone, Copy)]
struct Segments {
    images: (usize, usize),
    tiles: (usize, usize),
}

/// Where a job's transformed input lies in its `v` buffer.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Columns of each image's tiles.
    per_image: usize,
    /// Columns of the matrix products (all images, rounded up to the kernel's width).
    tp: usize,
    /// Row stride: `CHUNK` more than `tp`, so that the chunked writes past the last image's
    /// columns stay in the row.
    v_row: usize,
    /// ξ plane stride.
    v_plane: usize,
    /// Values of the whole buffer.
    v_len: usize,
}

impl Layout {
    fn new(g: &Geometry, cin: usize, segments: Segments) -> Layout {
        let Segments { images: (i0, i1), tiles } = segments;
        let per_image = (tiles.1 - tiles.0) * g.tw;
        let tp = ((i1 - i0) * per_image).next_multiple_of(LANES);
        let v_row = tp + CHUNK;
        let v_plane = cin * v_row + PLANE_PAD;
        Layout { per_image, tp, v_row, v_plane, v_len: g.tile.products() * v_plane }
    }
}

/// Per-thread buffers, kept between jobs and calls.
#[derive(Default)]
struct JobScratch {
    v: Vec<f32>,
    m: Vec<f32>,
    rows: Scratch,
}

thread_local! {
    static JOB_SCRATCH: RefCell<JobScratch> = RefCell::default();
    /// The calling thread's buffer for input transforms shared by several jobs.
    static SHARED_V: RefCell<Vec<f32>> = RefCell::default();
}

/// `G g Gᵀ` of every (output, input) channel pair, in f64, packed as [`Weights::u`].
fn transform_weights(tile: Tile, kernel: &[f32], cin: usize, cout: usize) -> Vec<f32> {
    let panels = cout.div_ceil(MR);
    let mut u = vec![0f32; tile.products() * panels * cin * MR];
    for co in 0..cout {
        for ci in 0..cin {
            let g = &kernel[(co * cin + ci) * 9..][..9];
            for (xi, x) in tile.transform_kernel(g).into_iter().enumerate() {
                u[(((xi * panels + co / MR) * cin) + ci) * MR + co % MR] = x as f32;
            }
        }
    }
    u
}

/// The tile size for `n` images of `cin × h × w` with `pads`: the one whose matrix products
/// cover fewer (transformed product × column) pairs per image ([`Blocks::cost`]). F(4×4) wins
/// from about 10×10 outputs up; at 7×7 its four tiles fill a 16-column panel a quarter full,
/// unless several images share a job (batch > 1).
pub fn choose_tile(cin: usize, n: usize, h: usize, w: usize, pads: [usize; 4]) -> Tile {
    let cost = |tile: Tile| {
        Geometry::new(tile, h, w, pads)
            .map(|g| Blocks::cost(&g, cin, n.max(1)))
            .unwrap_or(usize::MAX)
    };
    if cost(Tile::F4) < cost(Tile::F2) {
        Tile::F4
    } else {
        Tile::F2
    }
}

impl Op for WinogradConv {
    fn name(&self) -> StaticName {
        "WinogradConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{:?}, {}→{} ch, pads {:?}, residual {}, relu {}, {:?}",
            self.weights.tile, self.cin, self.cout, self.pads, self.residual, self.relu, self.isa
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for WinogradConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 1 + self.residual as usize, "WinogradConv: wrong input count");
        let x = &inputs[0];
        let &[n, c, h, w] = x.shape() else {
            bail!("WinogradConv: input is not NCHW: {:?}", x.shape())
        };
        ensure!(c == self.cin, "WinogradConv: {c} input channels, expected {}", self.cin);
        let g = self.geometry(h, w)?;
        let out_shape = [n, self.cout, g.oh, g.ow];
        let image_in = c * h * w;
        let image_out = self.cout * g.oh * g.ow;
        let x = x.try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let res_view = inputs.get(1).map(|r| r.try_as_plain_ram()).transpose()?;
        let res = res_view.as_ref().map(|r| r.as_slice::<f32>()).transpose()?;
        if let (Some(r), Some(t)) = (res, inputs.get(1)) {
            ensure!(
                t.shape() == out_shape && r.len() == n * image_out,
                "WinogradConv: residual shape {:?}",
                t.shape()
            );
        }
        let mut out = Tensor::zero::<f32>(&out_shape)?;
        let mut view = out.try_as_plain_ram_mut()?;
        let slice = view.as_slice_mut::<f32>()?;
        self.run_images(&g, n, &x[..n * image_in], res, &mut slice[..n * image_out]);
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for WinogradConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let s = &inputs[0].shape;
        ensure!(s.rank() == 4, "WinogradConv: input is not NCHW");
        let [pt, pl, pb, pr] = self.pads.map(|p| p as i64);
        let oh = s[2].clone() + pt + pb - 2;
        let ow = s[3].clone() + pl + pr - 2;
        Ok(tvec!(f32::fact([s[0].clone(), self.cout.to_dim(), oh, ow])))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::super::probe::{ConvCase, Pair};
    use super::*;

    /// Bound on `max |ours - reference| / max |reference|` for F(2×2, 3×3), which only adds
    /// rounding of short sums (measured ≈ 1e-6 on these cases).
    const BOUND_F2: f32 = 1e-5;
    /// The same for F(4×4, 3×3) (measured 4e-6 to 7e-6 on these cases and on ResNet-18's).
    const BOUND_F4: f32 = 1e-4;

    fn bound(tile: Tile) -> f32 {
        match tile {
            Tile::F2 => BOUND_F2,
            Tile::F4 => BOUND_F4,
        }
    }

    #[test]
    fn matches_tract_on_random_shapes_with_every_isa() {
        let mut seed = 11u64;
        let mut pick = |lo: usize, hi: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            lo + (seed >> 33) as usize % (hi - lo + 1)
        };
        let mut tiles = Vec::new();
        for case_ix in 0..14 {
            let pad = pick(0, 1);
            let case = ConvCase {
                cin: pick(16, 40),
                cout: pick(16, 41),
                hw: (pick(3, 30), pick(3, 34)),
                kernel: 3,
                stride: 1,
                pads: [pad, pick(0, 1), pad, pick(0, 2)],
                residual: case_ix % 2 == 0,
                relu: case_ix % 3 != 0,
                relu6: false,
                depthwise: false,
            };
            let tile = choose_tile(case.cin, 1, case.hw.0, case.hw.1, case.pads);
            tiles.push(tile);
            for isa in Isa::available() {
                let pair = Pair::new(&case, case_ix, isa).unwrap();
                assert_eq!(pair.replaced, 1, "{case:?}");
                let err = pair.relative_error().unwrap();
                assert!(err <= bound(tile), "{case:?} {tile:?} {isa:?}: relative error {err:e}");
            }
        }
        assert!(tiles.contains(&Tile::F2) && tiles.contains(&Tile::F4), "{tiles:?}");
    }

    /// Both tile sizes on the same inputs against a direct convolution written out here,
    /// on shapes whose last tiles are partial.
    #[test]
    fn both_tile_sizes_match_a_direct_convolution() {
        let (cin, cout, h, w, pads) = (5, 11, 13, 10, [1, 0, 2, 1]);
        let value =
            |i: usize, salt: usize| ((i * 7919 + salt * 104_729) % 2001) as f32 / 1000.0 - 1.0;
        let kernel: Vec<f32> = (0..cout * cin * 9).map(|i| value(i, 1)).collect();
        let bias: Vec<f32> = (0..cout).map(|i| value(i, 2)).collect();
        let input: Vec<f32> = (0..cin * h * w).map(|i| value(i, 3)).collect();
        let (oh, ow) = (h + pads[0] + pads[2] - 2, w + pads[1] + pads[3] - 2);
        let residual: Vec<f32> = (0..cout * oh * ow).map(|i| value(i, 4)).collect();
        let mut direct = vec![0f32; cout * oh * ow];
        for co in 0..cout {
            for y in 0..oh {
                for x in 0..ow {
                    let mut s = bias[co] as f64 + residual[(co * oh + y) * ow + x] as f64;
                    for ci in 0..cin {
                        for (ky, kx) in (0..3).flat_map(|ky| (0..3).map(move |kx| (ky, kx))) {
                            let (iy, ix) = (
                                (y + ky) as isize - pads[0] as isize,
                                (x + kx) as isize - pads[1] as isize,
                            );
                            if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                                let k = kernel[((co * cin + ci) * 3 + ky) * 3 + kx] as f64;
                                s += k * input[(ci * h + iy as usize) * w + ix as usize] as f64;
                            }
                        }
                    }
                    direct[(co * oh + y) * ow + x] = s.max(0.0) as f32;
                }
            }
        }
        let scale = direct.iter().fold(0f32, |m, x| m.max(x.abs()));
        for tile in [Tile::F2, Tile::F4] {
            for isa in Isa::available() {
                let op =
                    WinogradConv::new(tile, &kernel, Some(&bias), cin, cout, pads, true, true, isa)
                        .unwrap();
                let g = op.geometry(h, w).unwrap();
                let mut out = vec![f32::NAN; cout * oh * ow];
                op.run_images(&g, 1, &input, Some(&residual), &mut out);
                let err = out.iter().zip(&direct).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(
                    err / scale <= bound(tile),
                    "{tile:?} {isa:?}: relative error {:e}",
                    err / scale
                );
            }
        }
    }

    /// Small planes at batch > 1 share one set of matrix products (several images per job);
    /// each image's output is the one it gets alone, bit for bit.
    #[test]
    fn images_sharing_a_job_equal_images_run_alone() {
        let (cin, cout, h, w, n) = (24, 20, 7, 7, 5);
        let value = |i: usize| ((i * 7919) % 2003) as f32 / 1000.0 - 1.0;
        let kernel: Vec<f32> = (0..cout * cin * 9).map(value).collect();
        let input: Vec<f32> = (0..n * cin * h * w).map(|i| value(i + 17)).collect();
        let residual: Vec<f32> = (0..n * cout * h * w).map(|i| value(i + 5)).collect();
        for tile in [Tile::F2, Tile::F4] {
            let op =
                WinogradConv::new(tile, &kernel, None, cin, cout, [1; 4], true, true, Isa::best())
                    .unwrap();
            let g = op.geometry(h, w).unwrap();
            let mut together = vec![f32::NAN; n * cout * h * w];
            op.run_images(&g, n, &input, Some(&residual), &mut together);
            let (image_in, image_out) = (cin * h * w, cout * h * w);
            for b in 0..n {
                let mut alone = vec![f32::NAN; image_out];
                let x = &input[b * image_in..][..image_in];
                let r = &residual[b * image_out..][..image_out];
                op.run_images(&g, 1, x, Some(r), &mut alone);
                let diff = alone
                    .iter()
                    .zip(&together[b * image_out..][..image_out])
                    .fold(0f32, |m, (a, t)| m.max((a - t).abs()));
                assert_eq!(diff, 0.0, "{tile:?} image {b}");
            }
        }
    }

    #[test]
    fn the_tile_size_follows_the_plane_size() {
        let same = [1; 4];
        assert_eq!(choose_tile(512, 1, 7, 7, same), Tile::F2);
        assert_eq!(choose_tile(512, 8, 7, 7, same), Tile::F4);
        assert_eq!(choose_tile(256, 1, 14, 14, same), Tile::F4);
        assert_eq!(choose_tile(128, 1, 28, 28, same), Tile::F4);
        assert_eq!(choose_tile(64, 1, 56, 56, same), Tile::F4);
        assert_eq!(choose_tile(64, 1, 3, 3, same), Tile::F2);
    }

    #[test]
    fn threaded_runs_match_single_threaded() {
        let case = ConvCase {
            cin: 32,
            cout: 48,
            hw: (9, 30),
            kernel: 3,
            stride: 1,
            pads: [1; 4],
            residual: true,
            relu: true,
            relu6: false,
            depthwise: false,
        };
        // Many blocks (jobs split the tile rows), and one block (the input transform split
        // over input channels, then the products over output channels).
        for case in [case, ConvCase { cin: 40, cout: 64, hw: (6, 7), ..case }] {
            let pair = Pair::new(&case, 3, Isa::best()).unwrap();
            let one = pair.ours.run(pair.inputs.clone()).unwrap().remove(0);
            let three = super::super::probe::with_threads(3, || {
                pair.ours.run(pair.inputs.clone()).unwrap().remove(0)
            });
            assert_eq!(one, three, "{case:?}");
            let err = pair.relative_error().unwrap();
            assert!(err <= BOUND_F2, "{case:?}: relative error {err:e}");
        }
    }

    #[test]
    fn what_is_not_winograd_goes_to_other_ops_or_stays_with_tract() {
        let base = ConvCase {
            cin: 32,
            cout: 32,
            hw: (8, 8),
            kernel: 3,
            stride: 1,
            pads: [1; 4],
            residual: false,
            relu: false,
            relu6: false,
            depthwise: false,
        };
        let ops_with = |case: ConvCase, isa| {
            let pair = Pair::new(&case, 1, isa).unwrap();
            let model = pair.ours.model();
            let names: Vec<String> =
                model.nodes().iter().map(|n| n.op.name().to_string()).collect();
            (pair.replaced, names)
        };
        let ops = |case: ConvCase| ops_with(case, Isa::Portable);
        let (n, names) = ops(base);
        assert!(n == 1 && names.iter().any(|o| o == "WinogradConv"), "{names:?}");
        for case in [ConvCase { kernel: 5, pads: [2; 4], ..base }, ConvCase { stride: 2, ..base }] {
            let (n, names) = ops(case);
            assert!(n == 1 && names.iter().any(|o| o == "Im2colConv"), "{case:?}: {names:?}");
        }
        // Strided 3×3 convolutions with 64+ input channels are Im2colConv's with AVX-512 only.
        for case in
            [ConvCase { cin: 64, stride: 2, ..base }, ConvCase { cin: 128, stride: 2, ..base }]
        {
            for isa in Isa::available() {
                let (n, names) = ops_with(case, isa);
                let ours = names.iter().any(|o| o == "Im2colConv");
                let want = if isa == Isa::Avx512 { (1, true) } else { (0, false) };
                assert_eq!((n, ours), want, "{case:?} {isa:?}: {names:?}");
            }
        }
        let one_by_one = ConvCase { kernel: 1, pads: [0; 4], ..base };
        let (n, names) = ops(one_by_one);
        assert!(n == 1 && names.iter().any(|o| o == "PointwiseConv"), "{names:?}");
        let strided_one_by_one = ConvCase { stride: 2, ..one_by_one };
        for case in [strided_one_by_one, ConvCase { cout: 8, ..base }] {
            assert_eq!(ops(case).0, 0, "{case:?}");
        }
    }
}
