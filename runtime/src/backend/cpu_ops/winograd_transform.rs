//! The input and output transforms of Winograd F(2×2, 3×3) on NCHW planes.
//!
//! With `Bᵀ = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]]` and `Aᵀ = [[1,1,1,0],[0,1,-1,-1]]`,
//! a 4×4 input tile `d` becomes `Bᵀ d B` (16 values, index `ξ = 4i + j`) and the 16 products
//! `m` become the 2×2 outputs `Aᵀ m A`. Both are additions only. Rows are combined first over
//! whole image rows and columns second over even/odd split rows, so every loop runs with unit
//! stride over the tiles of a tile row and vectorises.

/// Where the tiles of one convolution lie: input `h × w`, padding, output `oh × ow`, and
/// `th × tw` tiles of 2×2 outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Zero rows above the input.
    pub pad_top: usize,
    /// Zero columns left of the input.
    pub pad_left: usize,
    /// Output height (`h + pad_top + pad_bottom - 2`).
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Tile rows (`⌈oh / 2⌉`).
    pub th: usize,
    /// Tiles per tile row (`⌈ow / 2⌉`).
    pub tw: usize,
}

impl Geometry {
    /// The geometry of a 3×3 stride-1 convolution; `pads` are top, left, bottom, right.
    /// `None` when the output would be empty.
    pub fn new(h: usize, w: usize, pads: [usize; 4]) -> Option<Geometry> {
        let oh = (h + pads[0] + pads[2]).checked_sub(2).filter(|&n| n > 0)?;
        let ow = (w + pads[1] + pads[3]).checked_sub(2).filter(|&n| n > 0)?;
        Some(Geometry {
            h,
            w,
            pad_top: pads[0],
            pad_left: pads[1],
            oh,
            ow,
            th: oh.div_ceil(2),
            tw: ow.div_ceil(2),
        })
    }

    /// Width of a zero-padded input row covering every tile (`2·tw + 2`).
    fn padded_width(&self) -> usize {
        2 * self.tw + 2
    }
}

/// Scratch rows reused by the transforms of one job.
#[derive(Default)]
pub struct Scratch {
    rows: Vec<f32>,
}

impl Scratch {
    fn take(&mut self, n: usize) -> &mut [f32] {
        if self.rows.len() < n {
            self.rows.resize(n, 0.0);
        }
        &mut self.rows[..n]
    }
}

super::multiversion! {
    /// [`input_tiles_body`] compiled for `isa`.
    pub fn input_tiles(
        g: &Geometry,
        input: &[f32],
        cin: usize,
        tiles: (usize, usize),
        v: &mut [f32],
        tp: usize,
        scratch: &mut Scratch,
    ) => input_tiles_body
}

super::multiversion! {
    /// [`output_tiles_body`] compiled for `isa`.
    pub fn output_tiles(
        g: &Geometry,
        m: &[f32],
        m_stride: usize,
        tiles: (usize, usize),
        out: &mut [f32],
        epi: Epilogue<'_>,
        scratch: &mut Scratch,
    ) => output_tiles_body
}

/// Transforms tile rows `ty0..ty1` of `input` (`cin` planes of `h × w`) into
/// `v[(ξ·cin + ci)·tp + t]`, `t = (ty - ty0)·tw + tx`. Columns `t ≥ (ty1 - ty0)·tw` are left as
/// they are (the products computed from them are never read).
#[inline(always)]
fn input_tiles_body(
    g: &Geometry,
    input: &[f32],
    cin: usize,
    (ty0, ty1): (usize, usize),
    v: &mut [f32],
    tp: usize,
    scratch: &mut Scratch,
) {
    let (wp, tw) = (g.padded_width(), g.tw);
    let half = tw + 1;
    let plane = g.h * g.w;
    // The block's input rows 2·ty0 - pad_top ..: each split once into even and odd columns
    // of the zero-padded row (`half` values each), then combined per tile row.
    let rows = 2 * (ty1 - ty0) + 2;
    let buf = scratch.take(wp + 2 * rows * half + 8 * half);
    let (padded, rest) = buf.split_at_mut(wp);
    let (split, combo) = rest.split_at_mut(2 * rows * half);
    for ci in 0..cin {
        let src = &input[ci * plane..][..plane];
        for (k, eo) in split.chunks_exact_mut(2 * half).enumerate() {
            let (e, o) = eo.split_at_mut(half);
            let y = (2 * ty0 + k) as isize - g.pad_top as isize;
            if !(0..g.h as isize).contains(&y) {
                e.fill(0.0);
                o.fill(0.0);
                continue;
            }
            padded.fill(0.0);
            let n = g.w.min(wp - g.pad_left);
            padded[g.pad_left..][..n].copy_from_slice(&src[y as usize * g.w..][..n]);
            for ((e, o), pair) in e.iter_mut().zip(o.iter_mut()).zip(padded.chunks_exact(2)) {
                *e = pair[0];
                *o = pair[1];
            }
        }
        for ty in ty0..ty1 {
            let row = |k: usize| {
                let r = &split[(2 * (ty - ty0) + k) * 2 * half..][..2 * half];
                r.split_at(half)
            };
            let ((e0, o0), (e1, o1), (e2, o2), (e3, o3)) = (row(0), row(1), row(2), row(3));
            let t0 = (ty - ty0) * tw;
            let (ce, co) = combo.split_at_mut(4 * half);
            // Rows combined (Bᵀ d) on the even and odd halves.
            for x in 0..half {
                ce[x] = e0[x] - e2[x];
                ce[half + x] = e1[x] + e2[x];
                ce[2 * half + x] = e2[x] - e1[x];
                ce[3 * half + x] = e1[x] - e3[x];
                co[x] = o0[x] - o2[x];
                co[half + x] = o1[x] + o2[x];
                co[2 * half + x] = o2[x] - o1[x];
                co[3 * half + x] = o1[x] - o3[x];
            }
            for i in 0..4 {
                let e = &ce[i * half..][..half];
                let o = &co[i * half..][..half];
                // Columns combined (· B): the four ξ = 4i + j of every tile of the row.
                let at = |j: usize| ((4 * i + j) * cin + ci) * tp + t0;
                let v0 = &mut v[at(0)..][..tw];
                for tx in 0..tw {
                    v0[tx] = e[tx] - e[tx + 1];
                }
                let v1 = &mut v[at(1)..][..tw];
                for tx in 0..tw {
                    v1[tx] = o[tx] + e[tx + 1];
                }
                let v2 = &mut v[at(2)..][..tw];
                for tx in 0..tw {
                    v2[tx] = e[tx + 1] - o[tx];
                }
                let v3 = &mut v[at(3)..][..tw];
                for tx in 0..tw {
                    v3[tx] = o[tx] - o[tx + 1];
                }
            }
        }
    }
}

/// What is applied to each output value after the transform: `+ bias`, `+ residual`, `max(0)`.
#[derive(Debug, Clone, Copy)]
pub struct Epilogue<'a> {
    /// The channel's bias.
    pub bias: f32,
    /// The channel's residual plane (`oh × ow`), added after the bias.
    pub residual: Option<&'a [f32]>,
    /// Whether negative values become 0 (after the residual).
    pub relu: bool,
}

/// Transforms the products `m[ξ·m_stride + t]` of one output channel for tile rows `ty0..ty1`
/// into `out` (the channel's output rows `2·ty0..min(2·ty1, oh)`), applying `epi` (whose
/// residual is the channel's whole `oh × ow` plane).
#[inline(always)]
fn output_tiles_body(
    g: &Geometry,
    m: &[f32],
    m_stride: usize,
    (ty0, ty1): (usize, usize),
    out: &mut [f32],
    epi: Epilogue,
    scratch: &mut Scratch,
) {
    let tw = g.tw;
    let buf = scratch.take(2 * 2 * tw);
    let (row0, row1) = buf.split_at_mut(2 * tw);
    for ty in ty0..ty1 {
        let t0 = (ty - ty0) * tw;
        let mrow = |xi: usize| &m[xi * m_stride + t0..][..tw];
        let mm: [&[f32]; 16] = std::array::from_fn(mrow);
        for tx in 0..tw {
            let v = |xi: usize| mm[xi][tx];
            // Aᵀ m: rows 0 and 1 of the 2×4 intermediate.
            let s0 = |j: usize| v(j) + v(4 + j) + v(8 + j);
            let s1 = |j: usize| v(4 + j) - v(8 + j) - v(12 + j);
            let (a0, a1, a2, a3) = (s0(0), s0(1), s0(2), s0(3));
            let (b0, b1, b2, b3) = (s1(0), s1(1), s1(2), s1(3));
            row0[2 * tx] = a0 + a1 + a2;
            row0[2 * tx + 1] = a1 - a2 - a3;
            row1[2 * tx] = b0 + b1 + b2;
            row1[2 * tx + 1] = b1 - b2 - b3;
        }
        for (a, row) in [&*row0, &*row1].into_iter().enumerate() {
            let y = 2 * ty + a;
            if y >= g.oh {
                break;
            }
            let dst = &mut out[(y - 2 * ty0) * g.ow..][..g.ow];
            let row = &row[..g.ow];
            match (epi.residual, epi.relu) {
                (Some(res), relu) => {
                    let res = &res[y * g.ow..][..g.ow];
                    for ((d, &x), &r) in dst.iter_mut().zip(row).zip(res) {
                        let s = x + epi.bias + r;
                        *d = if relu { s.max(0.0) } else { s };
                    }
                }
                (None, true) => {
                    for (d, &x) in dst.iter_mut().zip(row) {
                        *d = (x + epi.bias).max(0.0);
                    }
                }
                (None, false) => {
                    for (d, &x) in dst.iter_mut().zip(row) {
                        *d = x + epi.bias;
                    }
                }
            }
        }
    }
}
