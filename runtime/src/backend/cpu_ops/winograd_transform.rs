//! The input and output transforms of Winograd F(m×m, 3×3), `m` = 2 or 4, on NCHW planes.
//!
//! An `n × n` input tile `d` (`n = m + 2`) becomes `Bᵀ d B` (`n²` values, index `ξ = n·i + j`)
//! and the `n²` products `M` become the `m × m` outputs `Aᵀ M A`. Every step is a linear
//! combination of whole rows of values with the matrices' constant coefficients
//! ([`lincomb`]), so every loop runs with unit stride over the tiles of a tile row and
//! vectorises:
//! - input: each padded input row is split once into its `m` column phases
//!   (`phase p, x` = column `m·x + p`), the rows of a tile row are combined (`Bᵀ d`), then
//!   the columns (`· B`): tile `tx`'s column `c` is phase `c mod m` at `x = tx + c div m`;
//! - output: the products are combined over `i` (`Aᵀ M`), then over `j` (`· A`), and the `m`
//!   column phases of each output row are interleaved before the epilogue.
//!
//! Rows are processed in whole chunks of [`CHUNK`] tiles: a tile row of `tw` tiles writes
//! `⌈tw / CHUNK⌉·CHUNK` values of each `v` row, spilling at most `CHUNK - 1` values into what
//! comes next (the next tile row, written afterwards, or the row's padding; see
//! [`input_tiles`]), and reads as many products.

use super::copy::copy_row;
use super::Activation;

/// Tiles per chunk of every row loop (one or two vector registers).
pub const CHUNK: usize = 8;

/// The tile size of a Winograd algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tile {
    /// F(2×2, 3×3): 4×4 input tiles, 16 products for 4 outputs. The transforms are additions
    /// only; `G`'s entries are 0, ±½ and 1.
    F2,
    /// F(4×4, 3×3) on the points 0, ±1, ±2, ∞: 6×6 input tiles, 36 products for 16 outputs
    /// (1.78× fewer than F(2×2)). Coefficients up to 8 in `Aᵀ` and 5 in `Bᵀ` make its rounding
    /// error about 10× that of F(2×2).
    F4,
}

#[cfg(test)]
const F2_BT: [f32; 16] = [
    1.0, 0.0, -1.0, 0.0, //
    0.0, 1.0, 1.0, 0.0, //
    0.0, -1.0, 1.0, 0.0, //
    0.0, 1.0, 0.0, -1.0,
];
#[cfg(test)]
const F2_AT: [f32; 8] = [
    1.0, 1.0, 1.0, 0.0, //
    0.0, 1.0, -1.0, -1.0,
];
const F2_G: [f64; 12] = [
    1.0, 0.0, 0.0, //
    0.5, 0.5, 0.5, //
    0.5, -0.5, 0.5, //
    0.0, 0.0, 1.0,
];
#[cfg(test)]
const F4_BT: [f32; 36] = [
    4.0, 0.0, -5.0, 0.0, 1.0, 0.0, //
    0.0, -4.0, -4.0, 1.0, 1.0, 0.0, //
    0.0, 4.0, -4.0, -1.0, 1.0, 0.0, //
    0.0, -2.0, -1.0, 2.0, 1.0, 0.0, //
    0.0, 2.0, -1.0, -2.0, 1.0, 0.0, //
    0.0, 4.0, 0.0, -5.0, 0.0, 1.0,
];
#[cfg(test)]
const F4_AT: [f32; 24] = [
    1.0, 1.0, 1.0, 1.0, 1.0, 0.0, //
    0.0, 1.0, -1.0, 2.0, -2.0, 0.0, //
    0.0, 1.0, 1.0, 4.0, 4.0, 0.0, //
    0.0, 1.0, -1.0, 8.0, -8.0, 1.0,
];
const F4_G: [f64; 18] = [
    1.0 / 4.0,
    0.0,
    0.0,
    -1.0 / 6.0,
    -1.0 / 6.0,
    -1.0 / 6.0,
    -1.0 / 6.0,
    1.0 / 6.0,
    -1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 12.0,
    1.0 / 6.0,
    1.0 / 24.0,
    -1.0 / 12.0,
    1.0 / 6.0,
    0.0,
    0.0,
    1.0,
];

impl Tile {
    /// Outputs per tile side (`m`).
    pub const fn m(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }

    /// Inputs per tile side (`n = m + 2`).
    pub const fn n(self) -> usize {
        self.m() + 2
    }

    /// Transformed products per tile (`n²`).
    pub const fn products(self) -> usize {
        self.n() * self.n()
    }

    /// `Bᵀ`, `n × n`, row-major.
    #[cfg(test)]
    fn bt(self) -> &'static [f32] {
        match self {
            Tile::F2 => &F2_BT,
            Tile::F4 => &F4_BT,
        }
    }

    /// `Aᵀ`, `m × n`, row-major.
    #[cfg(test)]
    fn at(self) -> &'static [f32] {
        match self {
            Tile::F2 => &F2_AT,
            Tile::F4 => &F4_AT,
        }
    }

    /// `G`, `n × 3`, row-major, in f64 for the weight transform.
    fn g(self) -> &'static [f64] {
        match self {
            Tile::F2 => &F2_G,
            Tile::F4 => &F4_G,
        }
    }

    /// `G g Gᵀ` of one 3×3 kernel (row-major), `n²` values indexed by `ξ`.
    pub fn transform_kernel(self, kernel: &[f32]) -> Vec<f64> {
        let (n, g) = (self.n(), self.g());
        // (G g)[i][c], then · Gᵀ.
        let gg: Vec<f64> = (0..n * 3)
            .map(|ic| (0..3).map(|k| g[ic / 3 * 3 + k] * kernel[k * 3 + ic % 3] as f64).sum())
            .collect();
        (0..n * n).map(|xi| (0..3).map(|c| gg[xi / n * 3 + c] * g[xi % n * 3 + c]).sum()).collect()
    }
}

/// Where the tiles of one convolution lie: input `h × w`, padding, output `oh × ow`, and
/// `th × tw` tiles of `m × m` outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// The algorithm.
    pub tile: Tile,
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
    /// Tile rows (`⌈oh / m⌉`).
    pub th: usize,
    /// Tiles per tile row (`⌈ow / m⌉`).
    pub tw: usize,
}

impl Geometry {
    /// The geometry of a 3×3 stride-1 convolution; `pads` are top, left, bottom, right.
    /// `None` when the output would be empty.
    pub fn new(tile: Tile, h: usize, w: usize, pads: [usize; 4]) -> Option<Geometry> {
        let oh = (h + pads[0] + pads[2]).checked_sub(2).filter(|&n| n > 0)?;
        let ow = (w + pads[1] + pads[3]).checked_sub(2).filter(|&n| n > 0)?;
        Some(Geometry {
            tile,
            h,
            w,
            pad_top: pads[0],
            pad_left: pads[1],
            oh,
            ow,
            th: oh.div_ceil(tile.m()),
            tw: ow.div_ceil(tile.m()),
        })
    }

    /// Tiles of a tile row rounded up to whole chunks.
    fn chunked(&self) -> usize {
        self.tw.next_multiple_of(CHUNK)
    }
}

/// Scratch rows reused by the transforms of one job.
#[derive(Default)]
pub struct Scratch {
    rows: Vec<f32>,
}

impl Scratch {
    fn take(&mut self, n: usize) -> &mut [f32] {
        super::scratch::grow(&mut self.rows, n)
    }
}

/// `CHUNK` values of one row, in registers.
type Lane = [f32; CHUNK];

/// `f` applied lane by lane: `out[o][l] = f(x[·][l])[o]`. The loop over lanes vectorises, each
/// `x[k]` and `out[o]` being contiguous.
#[inline(always)]
fn lanes<const I: usize, const O: usize>(
    x: &[Lane; I],
    f: impl Fn([f32; I]) -> [f32; O],
) -> [Lane; O] {
    let mut out = [[0f32; CHUNK]; O];
    for l in 0..CHUNK {
        let mut column = [0f32; I];
        for (c, row) in column.iter_mut().zip(x) {
            *c = row[l];
        }
        let r = f(column);
        for (o, v) in out.iter_mut().zip(r) {
            o[l] = v;
        }
    }
    out
}

/// `I` lanes read at `src(k)[at..]`.
#[inline(always)]
fn gather<'a, const I: usize>(at: usize, src: impl Fn(usize) -> &'a [f32]) -> [Lane; I] {
    let mut out = [[0f32; CHUNK]; I];
    for (k, o) in out.iter_mut().enumerate() {
        o.copy_from_slice(&src(k)[at..][..CHUNK]);
    }
    out
}

/// F(2×2)'s `Bᵀ d` of one column `d` (the rows of `F2_BT` written out).
#[inline(always)]
fn bt_f2([d0, d1, d2, d3]: [f32; 4]) -> [f32; 4] {
    [d0 - d2, d1 + d2, d2 - d1, d1 - d3]
}

/// F(4×4)'s `Bᵀ d` (`F4_BT`).
#[inline(always)]
fn bt_f4([d0, d1, d2, d3, d4, d5]: [f32; 6]) -> [f32; 6] {
    let (a, b) = (d4 - 4.0 * d2, d3 - 4.0 * d1);
    let (c, e) = (d4 - d2, 2.0 * (d3 - d1));
    [4.0 * d0 - 5.0 * d2 + d4, a + b, a - b, c + e, c - e, 4.0 * d1 - 5.0 * d3 + d5]
}

/// F(2×2)'s `Aᵀ m` (`F2_AT`).
#[inline(always)]
fn at_f2([m0, m1, m2, m3]: [f32; 4]) -> [f32; 2] {
    [m0 + m1 + m2, m1 - m2 - m3]
}

/// F(4×4)'s `Aᵀ m` (`F4_AT`).
#[inline(always)]
fn at_f4([m0, m1, m2, m3, m4, m5]: [f32; 6]) -> [f32; 4] {
    let (s12, d12, s34, d34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
    [m0 + s12 + s34, d12 + 2.0 * d34, s12 + 4.0 * s34, d12 + 8.0 * d34 + m5]
}

macro_rules! transforms {
    ($input:ident, $output:ident, $m:literal, $n:literal) => {
        super::multiversion! {
            /// [`input_tiles_body`] for one tile size, compiled for `isa`.
            fn $input(
                g: &Geometry,
                input: &[f32],
                cin: usize,
                tiles: (usize, usize),
                v: &mut [f32],
                xi_stride: usize,
                tp: usize,
                scratch: &mut Scratch,
            ) => input_tiles_body::<$m, $n>
        }
        super::multiversion! {
            /// [`output_tiles_body`] for one tile size, compiled for `isa`.
            fn $output(
                g: &Geometry,
                m: &[f32],
                m_stride: usize,
                tiles: (usize, usize),
                out: &mut [f32],
                epi: Epilogue<'_>,
                scratch: &mut Scratch,
            ) => output_tiles_body::<$m, $n>
        }
    };
}
transforms!(input_f2, output_f2, 2, 4);
transforms!(input_f4, output_f4, 4, 6);

/// Transforms tile rows `tiles.0..tiles.1` of `input` (`cin` planes of `h × w`) into
/// `v[ξ·xi_stride + ci·tp + t]`, `t = (ty - tiles.0)·tw + tx`.
///
/// `tp` is the row stride; the caller makes it at least `(tiles.1 - tiles.0)·tw + CHUNK - 1`
/// (and `xi_stride ≥ cin·tp`): each tile row writes whole chunks, up to `CHUNK - 1` values past
/// its last tile, which land on the next tile row's values (written afterwards) or past the
/// last. Values past `(tiles.1 - tiles.0)·tw` are not meaningful.
#[allow(clippy::too_many_arguments)]
pub fn input_tiles(
    isa: super::Isa,
    g: &Geometry,
    input: &[f32],
    cin: usize,
    tiles: (usize, usize),
    v: &mut [f32],
    xi_stride: usize,
    tp: usize,
    scratch: &mut Scratch,
) {
    let f = match g.tile {
        Tile::F2 => input_f2,
        Tile::F4 => input_f4,
    };
    f(isa, g, input, cin, tiles, v, xi_stride, tp, scratch)
}

/// Transforms the products `m[ξ·m_stride + t]` of one output channel for tile rows
/// `tiles.0..tiles.1` into `out` (the channel's output rows `m·tiles.0..min(m·tiles.1, oh)`),
/// applying `epi` (whose residual is the channel's whole `oh × ow` plane). Reads up to
/// `CHUNK - 1` values past the last tile of each row.
#[allow(clippy::too_many_arguments)]
pub fn output_tiles(
    isa: super::Isa,
    g: &Geometry,
    m: &[f32],
    m_stride: usize,
    tiles: (usize, usize),
    out: &mut [f32],
    epi: Epilogue<'_>,
    scratch: &mut Scratch,
) {
    let f = match g.tile {
        Tile::F2 => output_f2,
        Tile::F4 => output_f4,
    };
    f(isa, g, m, m_stride, tiles, out, epi, scratch)
}

/// The tile size's `Bᵀ` (on `N` values) and `Aᵀ` (to `M` values) written out.
trait Formulas<const M: usize, const N: usize> {
    fn bt(d: [f32; N]) -> [f32; N];
    fn at(m: [f32; N]) -> [f32; M];
}

/// Selects the formulas of a tile size by its `(M, N)`.
struct Winograd;

impl Formulas<2, 4> for Winograd {
    #[inline(always)]
    fn bt(d: [f32; 4]) -> [f32; 4] {
        bt_f2(d)
    }
    #[inline(always)]
    fn at(m: [f32; 4]) -> [f32; 2] {
        at_f2(m)
    }
}

impl Formulas<4, 6> for Winograd {
    #[inline(always)]
    fn bt(d: [f32; 6]) -> [f32; 6] {
        bt_f4(d)
    }
    #[inline(always)]
    fn at(m: [f32; 6]) -> [f32; 4] {
        at_f4(m)
    }
}

/// See [`input_tiles`]; `M × M` output tiles from `N × N` input tiles.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn input_tiles_body<const M: usize, const N: usize>(
    g: &Geometry,
    input: &[f32],
    cin: usize,
    (ty0, ty1): (usize, usize),
    v: &mut [f32],
    xi_stride: usize,
    tp: usize,
    scratch: &mut Scratch,
) where
    Winograd: Formulas<M, N>,
{
    let bt = <Winograd as Formulas<M, N>>::bt;
    let (tw, cw) = (g.tw, g.chunked());
    // A phase row is read at `x = tx + 1` for the last columns of a tile.
    let pw = cw + CHUNK;
    let wp = M * pw;
    let plane = g.h * g.w;
    let rows = M * (ty1 - ty0) + 2;
    let buf = scratch.take(wp + rows * M * pw + N * M * pw);
    let (padded, rest) = buf.split_at_mut(wp);
    let (split, combined) = rest.split_at_mut(rows * M * pw);
    // Only the columns `pad_left..pad_left + w` of `padded` are written below: the padding
    // around them stays zero.
    padded.fill(0.0);
    for ci in 0..cin {
        let src = &input[ci * plane..][..plane];
        for (k, phases) in split.chunks_exact_mut(M * pw).enumerate() {
            let y = (M * ty0 + k) as isize - g.pad_top as isize;
            if !(0..g.h as isize).contains(&y) {
                phases.fill(0.0);
                continue;
            }
            let len = g.w.min(wp - g.pad_left);
            copy_row(&mut padded[g.pad_left..][..len], &src[y as usize * g.w..][..len]);
            deinterleave(M, padded, phases, pw);
        }
        for ty in ty0..ty1 {
            let base = M * (ty - ty0);
            // Rows combined (Bᵀ d), per phase: combined[(i·M + p)·pw + x].
            for p in 0..M {
                for x in (0..pw).step_by(CHUNK) {
                    let d: [Lane; N] = gather(x, |k| &split[((base + k) * M + p) * pw..][..pw]);
                    for (i, r) in lanes(&d, bt).iter().enumerate() {
                        combined[(i * M + p) * pw + x..][..CHUNK].copy_from_slice(r);
                    }
                }
            }
            // Columns combined (· B): column c of tile tx is phase c mod M at tx + c div M.
            let t0 = (ty - ty0) * tw;
            for i in 0..N {
                for x in (0..cw).step_by(CHUNK) {
                    let d: [Lane; N] =
                        gather(x, |c| &combined[(i * M + c % M) * pw + c / M..][..cw]);
                    for (j, r) in lanes(&d, bt).iter().enumerate() {
                        v[(N * i + j) * xi_stride + ci * tp + t0 + x..][..CHUNK].copy_from_slice(r);
                    }
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

/// See [`output_tiles`]; `M × M` output tiles from `N × N` products.
#[inline(always)]
fn output_tiles_body<const M: usize, const N: usize>(
    g: &Geometry,
    m: &[f32],
    m_stride: usize,
    (ty0, ty1): (usize, usize),
    out: &mut [f32],
    epi: Epilogue,
    scratch: &mut Scratch,
) where
    Winograd: Formulas<M, N>,
{
    let at = <Winograd as Formulas<M, N>>::at;
    let (tw, cw) = (g.tw, g.chunked());
    let buf = scratch.take((M * N + 2 * M) * cw);
    let (partial, rest) = buf.split_at_mut(M * N * cw);
    let (phases, row) = rest.split_at_mut(M * cw);
    for ty in ty0..ty1 {
        let t0 = (ty - ty0) * tw;
        // Aᵀ M: partial[(a·N + j)·cw + x] = Σ_i Aᵀ[a][i] · M[N·i + j].
        for j in 0..N {
            for x in (0..cw).step_by(CHUNK) {
                let d: [Lane; N] = gather(t0 + x, |i| &m[(N * i + j) * m_stride..]);
                for (a, r) in lanes(&d, at).iter().enumerate() {
                    partial[(a * N + j) * cw + x..][..CHUNK].copy_from_slice(r);
                }
            }
        }
        for a in 0..M {
            let y = M * ty + a;
            if y >= g.oh {
                break;
            }
            // · A: phase b of output row a.
            for x in (0..cw).step_by(CHUNK) {
                let d: [Lane; N] = gather(x, |j| &partial[(a * N + j) * cw..][..cw]);
                for (b, r) in lanes(&d, at).iter().enumerate() {
                    phases[b * cw + x..][..CHUNK].copy_from_slice(r);
                }
            }
            interleave(M, phases, cw, tw, row);
            let dst = &mut out[(y - M * ty0) * g.ow..][..g.ow];
            let residual = epi.residual.map(|res| &res[y * g.ow..][..g.ow]);
            let act = if epi.relu { Activation::RELU } else { Activation::NONE };
            super::gemm::store_body(dst, &row[..g.ow], epi.bias, residual, false, act);
        }
    }
}

/// `phases[p·pw + x] = row[m·x + p]` for `x < pw` (`row` holds `m·pw` values).
#[inline(always)]
fn deinterleave(m: usize, row: &[f32], phases: &mut [f32], pw: usize) {
    match m {
        2 => {
            let (p0, p1) = phases.split_at_mut(pw);
            for ((pair, d0), d1) in row.chunks_exact(2).zip(p0).zip(p1) {
                *d0 = pair[0];
                *d1 = pair[1];
            }
        }
        4 => {
            let (p01, p23) = phases.split_at_mut(2 * pw);
            let (p0, p1) = p01.split_at_mut(pw);
            let (p2, p3) = p23.split_at_mut(pw);
            let dsts = p0.iter_mut().zip(p1.iter_mut()).zip(p2.iter_mut()).zip(p3.iter_mut());
            for (quad, (((d0, d1), d2), d3)) in row.chunks_exact(4).zip(dsts) {
                (*d0, *d1, *d2, *d3) = (quad[0], quad[1], quad[2], quad[3]);
            }
        }
        _ => {
            for (x, group) in row.chunks_exact(m).enumerate() {
                for (p, &v) in group.iter().enumerate() {
                    phases[p * pw + x] = v;
                }
            }
        }
    }
}

/// `row[m·tx + b] = phases[b·cw + tx]` for `tx < tw`.
#[inline(always)]
fn interleave(m: usize, phases: &[f32], cw: usize, tw: usize, row: &mut [f32]) {
    let phase = |b: usize| &phases[b * cw..][..tw];
    match m {
        2 => {
            for ((d, &x0), &x1) in row.chunks_exact_mut(2).zip(phase(0)).zip(phase(1)) {
                d[0] = x0;
                d[1] = x1;
            }
        }
        4 => {
            let zipped = phase(0).iter().zip(phase(1)).zip(phase(2)).zip(phase(3));
            for (d, (((&x0, &x1), &x2), &x3)) in row.chunks_exact_mut(4).zip(zipped) {
                d.copy_from_slice(&[x0, x1, x2, x3]);
            }
        }
        _ => {
            for tx in 0..tw {
                for b in 0..m {
                    row[m * tx + b] = phases[b * cw + tx];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each algorithm's transforms reproduce a 1-D correlation exactly (up to f64 rounding):
    /// `Aᵀ ((G g) ⊙ (Bᵀ d)) = g ⋆ d`.
    #[test]
    fn matrices_compute_a_correlation() {
        for tile in [Tile::F2, Tile::F4] {
            let (m, n) = (tile.m(), tile.n());
            let g = [0.3f64, -1.7, 0.9];
            let d: Vec<f64> = (0..n).map(|i| (i as f64 * 0.77).sin()).collect();
            let gg: Vec<f64> =
                (0..n).map(|i| (0..3).map(|k| tile.g()[i * 3 + k] * g[k]).sum()).collect();
            let bd: Vec<f64> =
                (0..n).map(|i| (0..n).map(|k| tile.bt()[i * n + k] as f64 * d[k]).sum()).collect();
            for y in 0..m {
                let ours: f64 = (0..n).map(|i| tile.at()[y * n + i] as f64 * gg[i] * bd[i]).sum();
                let direct: f64 = (0..3).map(|k| g[k] * d[y + k]).sum();
                assert!((ours - direct).abs() < 1e-12, "{tile:?} output {y}: {ours} vs {direct}");
            }
        }
    }

    /// The written-out formulas equal the matrices.
    #[test]
    fn formulas_equal_the_matrices() {
        let x: [f32; 6] = std::array::from_fn(|i| 0.37 + (i as f32 * 1.3).sin());
        let product = |a: &[f32], rows: usize, n: usize| -> Vec<f32> {
            (0..rows).map(|r| (0..n).map(|k| a[r * n + k] * x[k]).sum()).collect()
        };
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(p, q)| (p - q).abs() < 1e-5);
        let x4: [f32; 4] = x[..4].try_into().unwrap();
        assert!(close(&bt_f2(x4), &product(&F2_BT, 4, 4)));
        assert!(close(&at_f2(x4), &product(&F2_AT, 2, 4)));
        assert!(close(&bt_f4(x), &product(&F4_BT, 6, 6)));
        assert!(close(&at_f4(x), &product(&F4_AT, 4, 6)));
    }

    #[test]
    fn deinterleave_and_interleave_are_inverse() {
        for m in [2, 3, 4] {
            let pw = CHUNK;
            let row: Vec<f32> = (0..m * pw).map(|i| i as f32).collect();
            let mut phases = vec![0.0; m * pw];
            deinterleave(m, &row, &mut phases, pw);
            assert_eq!(phases[pw + 2], row[2 * m + 1], "m = {m}");
            let mut back = vec![0.0; m * pw];
            interleave(m, &phases, pw, pw, &mut back);
            assert_eq!(back, row, "m = {m}");
        }
    }
}
