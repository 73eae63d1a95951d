//! Sums of row dot products, `out[i][j] += Σ_s a_s[i] · b_s[j]`: the weight gradient of a
//! convolution (`dW[o][q] = Σ_images dy[o] · col[q]`), whose operands both run along the
//! pixel axis. Read in place, with no packing: blocks of `RA × RB` row pairs keep their sums
//! in vector registers over every segment (image) and are reduced once at the end, which
//! costs as much as a few hundred multiply-adds — so segments are not reduced one by one.
//!
//! Three variants compute it: AVX-512F (4 × 4 rows, 16 lanes) and AVX2+FMA (2 × 4 rows, 8
//! lanes) on x86_64, chosen at run time, and a portable one (2 × 4 rows, 8 lanes, fused
//! multiply-adds on aarch64) that compilers vectorise elsewhere.

use crate::backend::cpu_ops::parallel::{self, SharedOut};
use crate::backend::cpu_ops::Isa;
use crate::train::real::PARALLEL_MIN_FMA;

/// The operands: `segments` segments, each holding `a_rows` rows of `a` and `b_rows` rows of
/// `b`, every row `len` values long and contiguous (segment `s`, row `i` of `a` starts at
/// `(s·a_rows + i)·len`).
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    /// The first operand.
    pub a: &'a [f32],
    /// Rows of `a` per segment.
    pub a_rows: usize,
    /// The second operand.
    pub b: &'a [f32],
    /// Rows of `b` per segment.
    pub b_rows: usize,
    /// Values per row.
    pub len: usize,
    /// Segments.
    pub segments: usize,
}

impl Rows<'_> {
    /// Row `i` of `a` in segment `s`.
    #[inline(always)]
    fn a(&self, s: usize, i: usize) -> &[f32] {
        &self.a[(s * self.a_rows + i) * self.len..][..self.len]
    }

    /// Row `j` of `b` in segment `s`.
    #[inline(always)]
    fn b(&self, s: usize, j: usize) -> &[f32] {
        &self.b[(s * self.b_rows + j) * self.len..][..self.len]
    }
}

/// Rows of `b` one job takes (a multiple of every variant's `RB`).
const JOB_ROWS: usize = 16;

/// `out[i·b_rows + j] += Σ_s Σ_p a_s[i][p] · b_s[j][p]`, threaded over blocks of `b` rows on
/// the current pool ([`parallel::for_each`]) when the product is large enough to pay for it.
///
/// # Panics
/// When a slice is shorter than the shapes say (callers size them).
pub fn add_products(isa: Isa, rows: Rows<'_>, out: &mut [f32]) {
    let Rows { a_rows, b_rows, len, segments, .. } = rows;
    assert!(rows.a.len() >= segments * a_rows * len && rows.b.len() >= segments * b_rows * len);
    assert!(out.len() >= a_rows * b_rows, "product output");
    let serial = parallel::threads() == 1 || a_rows * b_rows * len * segments < PARALLEL_MIN_FMA;
    if serial {
        return columns(isa, &rows, (0, b_rows), out);
    }
    // Job `blk` sums b rows `cols` into its own `a_rows × (cols.1 − cols.0)` part of `parts`,
    // which starts at `a_rows · cols.0`: the parts are disjoint.
    let cols_of = |blk: usize| (blk * JOB_ROWS, ((blk + 1) * JOB_ROWS).min(b_rows));
    let mut parts = vec![0f32; a_rows * b_rows];
    let shared = SharedOut::new(&mut parts);
    parallel::for_each(b_rows.div_ceil(JOB_ROWS), |blk| {
        let cols = cols_of(blk);
        // SAFETY: job `blk` alone touches this range (above).
        let part = unsafe { shared.slice(a_rows * cols.0, a_rows * (cols.1 - cols.0)) };
        columns(isa, &rows, cols, part);
    });
    for blk in 0..b_rows.div_ceil(JOB_ROWS) {
        let (c0, c1) = cols_of(blk);
        let part = &parts[a_rows * c0..][..a_rows * (c1 - c0)];
        for (i, sums) in part.chunks_exact(c1 - c0).enumerate() {
            let dst = &mut out[i * b_rows + c0..][..c1 - c0];
            dst.iter_mut().zip(sums).for_each(|(d, &s)| *d += s);
        }
    }
}

/// The sums of `b` rows `cols` added into `out` (`a_rows × (cols.1 − cols.0)`), for `isa`.
fn columns(isa: Isa, rows: &Rows<'_>, cols: (usize, usize), out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn avx512(rows: &Rows<'_>, cols: (usize, usize), out: &mut [f32]) {
            // SAFETY: this function runs only where AVX-512F is there.
            let full = |rows: &Rows<'_>, i0, j0| unsafe { x86::block_4x4(rows, i0, j0) };
            blocks::<4, 4, 16, true>(rows, cols, out, full)
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(rows: &Rows<'_>, cols: (usize, usize), out: &mut [f32]) {
            blocks::<2, 4, 8, true>(rows, cols, out, block::<2, 4, 8, true>)
        }
        match isa {
            // SAFETY: `Isa::Avx512` and `Isa::Avx2` are only handed out where the CPU has
            // those features (`Isa::available`).
            Isa::Avx512 => return unsafe { avx512(rows, cols, out) },
            // SAFETY: as above.
            Isa::Avx2 => return unsafe { avx2(rows, cols, out) },
            Isa::Portable => {}
        }
    }
    let _ = isa;
    const FUSED: bool = cfg!(target_arch = "aarch64");
    blocks::<2, 4, 8, FUSED>(rows, cols, out, block::<2, 4, 8, FUSED>)
}

/// Every `RA × RB` block of row pairs (computed by `full`), then single pairs for what is
/// left, of `b` rows `cols`, added into `out`.
#[inline(always)]
fn blocks<const RA: usize, const RB: usize, const W: usize, const FUSED: bool>(
    rows: &Rows<'_>,
    cols: (usize, usize),
    out: &mut [f32],
    full: impl Fn(&Rows<'_>, usize, usize) -> [[f32; RB]; RA],
) {
    let width = cols.1 - cols.0;
    let full_a = rows.a_rows / RA * RA;
    let full_b = cols.0 + width / RB * RB;
    // Blocks of `b` rows outermost: each is read from memory once and stays in cache while
    // every row of `a` (the smaller operand: a few output channels) meets it.
    for j0 in (cols.0..full_b).step_by(RB) {
        for i0 in (0..full_a).step_by(RA) {
            let sums = full(rows, i0, j0);
            for (r, row) in sums.iter().enumerate() {
                let dst = &mut out[(i0 + r) * width + j0 - cols.0..][..RB];
                dst.iter_mut().zip(row).for_each(|(d, &s)| *d += s);
            }
        }
    }
    // Left-over rows of `a` against every row of `b`, and every row against left-over ones.
    for i in 0..rows.a_rows {
        let js = if i < full_a { full_b..cols.1 } else { cols.0..cols.1 };
        for j in js {
            out[i * width + j - cols.0] += block::<1, 1, W, FUSED>(rows, i, j)[0][0];
        }
    }
}

/// `Σ_s a_s[i0 + r] · b_s[j0 + c]` for `r < RA`, `c < RB`.
#[inline(always)]
fn block<const RA: usize, const RB: usize, const W: usize, const FUSED: bool>(
    rows: &Rows<'_>,
    i0: usize,
    j0: usize,
) -> [[f32; RB]; RA] {
    let madd = |x: f32, y: f32, acc: f32| if FUSED { x.mul_add(y, acc) } else { x * y + acc };
    let mut acc = [[[0f32; W]; RB]; RA];
    let mut tail = [[0f32; RB]; RA];
    let body = rows.len / W * W;
    for s in 0..rows.segments {
        let a: [&[f32]; RA] = std::array::from_fn(|r| rows.a(s, i0 + r));
        let b: [&[f32]; RB] = std::array::from_fn(|c| rows.b(s, j0 + c));
        for p in (0..body).step_by(W) {
            // Infallible: `p + W ≤ body ≤ len`.
            let av: [&[f32; W]; RA] = std::array::from_fn(|r| a[r][p..p + W].try_into().unwrap());
            let bv: [&[f32; W]; RB] = std::array::from_fn(|c| b[c][p..p + W].try_into().unwrap());
            for r in 0..RA {
                for c in 0..RB {
                    for l in 0..W {
                        acc[r][c][l] = madd(av[r][l], bv[c][l], acc[r][c][l]);
                    }
                }
            }
        }
        for p in body..rows.len {
            for r in 0..RA {
                for c in 0..RB {
                    tail[r][c] = madd(a[r][p], b[c][p], tail[r][c]);
                }
            }
        }
    }
    let mut sums = tail;
    for r in 0..RA {
        for c in 0..RB {
            sums[r][c] += halving_sum(acc[r][c]);
        }
    }
    sums
}

/// The lanes of `v` summed by halving (`v[l] += v[l + w/2]`, log₂ W vector adds) rather than
/// one scalar chain of `W − 1` dependent adds.
#[inline(always)]
fn halving_sum<const W: usize>(mut v: [f32; W]) -> f32 {
    let mut w = W;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            v[l] += v[l + w];
        }
    }
    v[0]
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Rows;
    use std::arch::x86_64::*;

    /// [`super::block`] for 4 × 4 rows in AVX-512 registers: 16 accumulators and 8 operand
    /// registers, written out so that none spills to the stack (the generic form's did).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn block_4x4(rows: &Rows<'_>, i0: usize, j0: usize) -> [[f32; 4]; 4] {
        let mut acc = [[_mm512_setzero_ps(); 4]; 4];
        let mut sums = [[0f32; 4]; 4];
        let body = rows.len / 16 * 16;
        for s in 0..rows.segments {
            // Row starts as plain pointers: no bounds check (and no panic call, around which
            // the accumulators would be spilled) in the loop's reach.
            let (a0, b0) = ((s * rows.a_rows + i0) * rows.len, (s * rows.b_rows + j0) * rows.len);
            let mut ap = [rows.a.as_ptr(); 4];
            let mut bp = [rows.b.as_ptr(); 4];
            for r in 0..4 {
                // SAFETY: `add_products` checked that `a` and `b` hold every segment's rows,
                // and `blocks` passes only full blocks (`i0 + 3 < a_rows`, `j0 + 3 < b_rows`).
                unsafe {
                    ap[r] = ap[r].add(a0 + r * rows.len);
                    bp[r] = bp[r].add(b0 + r * rows.len);
                }
            }
            let mut p = 0;
            while p < body {
                let mut av = [_mm512_setzero_ps(); 4];
                for r in 0..4 {
                    // SAFETY: every row holds `len ≥ p + 16` values.
                    av[r] = unsafe { _mm512_loadu_ps(ap[r].add(p)) };
                }
                for c in 0..4 {
                    // SAFETY: as above.
                    let bv = unsafe { _mm512_loadu_ps(bp[c].add(p)) };
                    for r in 0..4 {
                        acc[r][c] = _mm512_fmadd_ps(av[r], bv, acc[r][c]);
                    }
                }
                p += 16;
            }
        }
        for r in 0..4 {
            for c in 0..4 {
                sums[r][c] = _mm512_reduce_add_ps(acc[r][c]);
            }
        }
        // The last `len mod 16` values of each row, in a pass of their own: with no call in
        // the vector loop's reach, its accumulators stay in registers.
        if body < rows.len {
            for s in 0..rows.segments {
                for (r, row) in sums.iter_mut().enumerate() {
                    let a = &rows.a(s, i0 + r)[body..];
                    for (c, sum) in row.iter_mut().enumerate() {
                        let b = &rows.b(s, j0 + c)[body..];
                        *sum += a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
                    }
                }
            }
        }
        sums
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu_ops::spin_pool::SpinPool;
    use std::sync::Arc;

    #[test]
    fn every_isa_matches_an_f64_reference() {
        // Shapes with full blocks, left-over rows and columns, short rows and vector tails.
        for (a_rows, b_rows, len, segments) in
            [(16, 288, 256, 3), (5, 7, 3, 2), (3, 37, 49, 1), (1, 1, 17, 4), (9, 40, 100, 2)]
        {
            let value = |i: usize, f: f64| ((i as f64 * f).sin() * 1.5) as f32;
            let a: Vec<f32> = (0..segments * a_rows * len).map(|i| value(i, 0.37)).collect();
            let b: Vec<f32> = (0..segments * b_rows * len).map(|i| value(i, 0.91)).collect();
            let rows = Rows { a: &a, a_rows, b: &b, b_rows, len, segments };
            let start: Vec<f32> = (0..a_rows * b_rows).map(|i| i as f32 * 0.25).collect();
            for isa in Isa::available() {
                let mut out = start.clone();
                add_products(isa, rows, &mut out);
                for i in 0..a_rows {
                    for j in 0..b_rows {
                        let mut want = start[i * b_rows + j] as f64;
                        let mut scale = want.abs();
                        for s in 0..segments {
                            for p in 0..len {
                                let x = a[(s * a_rows + i) * len + p] as f64;
                                let y = b[(s * b_rows + j) * len + p] as f64;
                                want += x * y;
                                scale += (x * y).abs();
                            }
                        }
                        let got = out[i * b_rows + j] as f64;
                        assert!(
                            (got - want).abs() <= 1e-6 * scale.max(1.0),
                            "{isa:?} {a_rows}×{b_rows}×{len}×{segments} [{i}][{j}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn threaded_sums_equal_serial_ones_bit_for_bit() {
        // Large enough for the threaded path (≥ PARALLEL_MIN_FMA), with a partial last job.
        let (a_rows, b_rows, len, segments) = (16, 290, 256, 4);
        assert!(a_rows * b_rows * len * segments >= PARALLEL_MIN_FMA);
        let a: Vec<f32> = (0..segments * a_rows * len).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..segments * b_rows * len).map(|i| (i as f32 * 0.91).cos()).collect();
        let rows = Rows { a: &a, a_rows, b: &b, b_rows, len, segments };
        let run = |threads: usize| {
            let pool = SpinPool::new(threads).map(Arc::new).expect("threads start");
            let mut out = vec![0.5f32; a_rows * b_rows];
            parallel::with_pool(Some(&pool), || add_products(Isa::best(), rows, &mut out));
            out
        };
        let (one, two) = (run(1), run(2));
        assert!(one.iter().zip(&two).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}
