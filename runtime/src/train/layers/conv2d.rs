//! `Conv2d`: 2-D convolution of NCHW input (PyTorch `nn.Conv2d`), W `[out, in/groups, k, k]`.
//!
//! The whole batch is unfolded once, image by image (im2col, `[N, in·k·k, Ho·Wo]`), so that
//! the forward pass and the input gradient are one matrix product per image and group, read
//! and written in NCHW order with no reordering, and the weight gradient is one sum over the
//! images. In f32 with one group, the forward product runs on hydrant's packed-panel kernel
//! ([`PointwiseConv`]) and the weight gradient on row dot products over the pixel axis
//! ([`add_products`]), which sums every image in registers before reducing; other cases (f64
//! gradient checks, grouped convolutions) use the general [`matmul`].

use super::{grad_shape, no_forward, shape_error, Layer, Param, Pass};
use crate::backend::cpu_ops::copy::copy_row;
use crate::backend::cpu_ops::parallel::{self, SharedOut};
use crate::backend::cpu_ops::pointwise::PointwiseConv;
use crate::backend::cpu_ops::{Activation, Isa};
use crate::error::{Error, Result};
use crate::train::array::Array;
use crate::train::dot::{add_products, Rows};
use crate::train::real::{matmul, sum, Op, Real};
use rayon::prelude::*;

/// Sizes of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Square kernel size.
    pub kernel_size: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
    /// Spacing between kernel taps.
    pub dilation: usize,
    /// Channel groups (1, or `in_channels` for depthwise).
    pub groups: usize,
}

impl Geometry {
    /// Output size along a spatial axis of size `n`, if the kernel fits.
    fn out_len(&self, n: usize) -> Option<usize> {
        let span = self.dilation * (self.kernel_size - 1) + 1;
        (n + 2 * self.padding).checked_sub(span).map(|r| r / self.stride + 1)
    }

    /// Input position along an axis for output position `o` and tap `t`, if inside the input.
    #[inline]
    fn source(&self, o: usize, t: usize, n: usize) -> Option<usize> {
        (o * self.stride + t * self.dilation).checked_sub(self.padding).filter(|&i| i < n)
    }

    /// For tap `t` along an axis of input size `n` and output size `len`: the output positions
    /// `lo..hi` whose source lies inside the input, and the source of `lo` (sources then step
    /// by the stride).
    #[inline]
    fn valid(&self, t: usize, n: usize, len: usize) -> (usize, usize, usize) {
        let (s, shift) = (self.stride, t * self.dilation);
        // Source of o is o·s + shift − padding: inside when padding ≤ o·s + shift < n + padding.
        let lo = self.padding.saturating_sub(shift).div_ceil(s);
        let hi = match (n + self.padding).checked_sub(shift + 1) {
            Some(last) => (last / s + 1).min(len),
            None => 0,
        };
        if lo >= hi {
            return (0, 0, 0);
        }
        (lo, hi, lo * s + shift - self.padding)
    }
}

/// A convolution layer.
#[derive(Debug, Clone)]
pub struct Conv2d<T> {
    geometry: Geometry,
    /// `[out, in/groups, k, k]`.
    pub weight: Param<T>,
    /// `[out]`, when the layer has a bias.
    pub bias: Option<Param<T>>,
    /// Input shape and unfolded input of the last training pass.
    saved: Option<(Vec<usize>, Vec<T>)>,
}

/// Batch, input channels, input and output plane sizes of a pass.
#[derive(Debug, Clone, Copy)]
struct Dims {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
}

impl Dims {
    /// Values per input image.
    fn plane_in(&self) -> usize {
        self.c * self.h * self.w
    }
}

impl<T: Real> Conv2d<T> {
    /// A layer with zero weights.
    pub fn new(g: Geometry, bias: bool) -> Result<Conv2d<T>> {
        if g.groups == 0
            || !g.in_channels.is_multiple_of(g.groups)
            || !g.out_channels.is_multiple_of(g.groups)
            || g.kernel_size == 0
            || g.stride == 0
            || g.dilation == 0
        {
            return Err(Error::InvalidArgument(format!("conv2d: invalid geometry {g:?}")));
        }
        let shape = [g.out_channels, g.in_channels / g.groups, g.kernel_size, g.kernel_size];
        Ok(Conv2d {
            geometry: g,
            weight: Param::new(Array::zeros(&shape)?),
            bias: bias.then(|| Array::zeros(&[g.out_channels]).map(Param::new)).transpose()?,
            saved: None,
        })
    }

    /// The sizes of a pass over an input shape.
    fn dims(&self, input: &[usize]) -> Result<Dims> {
        let g = &self.geometry;
        let bad = || shape_error("conv2d", &format!("[N, {}, H, W]", g.in_channels), input);
        let &[n, c, h, w] = input else { return Err(bad()) };
        if c != g.in_channels {
            return Err(bad());
        }
        match (g.out_len(h), g.out_len(w)) {
            (Some(ho), Some(wo)) if ho > 0 && wo > 0 => Ok(Dims { n, c, h, w, ho, wo }),
            _ => Err(bad()),
        }
    }

    /// `(og, kg)`: output channels and unfolded rows (`in/groups · k²`) per group.
    fn group_sizes(&self) -> (usize, usize) {
        let g = &self.geometry;
        (g.out_channels / g.groups, g.in_channels / g.groups * g.kernel_size.pow(2))
    }

    /// Adds the weight and bias gradients of the last training pass; returns its input shape,
    /// dims and unfolded input (whose buffer the input gradient reuses).
    fn param_grads(&mut self, dy: &Array<T>) -> Result<(Vec<usize>, Dims, Vec<T>)> {
        let (shape, col) = self.saved.take().ok_or_else(|| no_forward("conv2d"))?;
        let expected = self.output_shape(&shape)?;
        if dy.shape() != expected {
            return Err(grad_shape("conv2d", &expected, dy.shape()));
        }
        let d = self.dims(&shape)?;
        let g = self.geometry;
        let (og, kg) = self.group_sizes();
        let spatial = d.ho * d.wo;
        let dy = dy.data();
        if let Some(bias) = &mut self.bias {
            for (o, gb) in bias.grad.data_mut().iter_mut().enumerate() {
                for b in 0..d.n {
                    *gb += sum(&dy[(b * g.out_channels + o) * spatial..][..spatial]);
                }
            }
        }
        let dw = self.weight.grad.data_mut();
        if let (Some(a), Some(b), Some(out), 1) =
            (T::as_f32s(dy), T::as_f32s(&col), T::as_f32s_mut(dw), g.groups)
        {
            let rows = Rows { a, a_rows: og, b, b_rows: kg, len: spatial, segments: d.n };
            add_products(Isa::best(), rows, out);
        } else {
            for b in 0..d.n {
                for grp in 0..g.groups {
                    let dyg = &dy[(b * g.out_channels + grp * og) * spatial..][..og * spatial];
                    let cg = &col[(b * g.groups + grp) * kg * spatial..][..kg * spatial];
                    let dwg = &mut dw[grp * og * kg..][..og * kg];
                    matmul(og, kg, spatial, dyg, Op::N, cg, Op::T, dwg, true);
                }
            }
        }
        Ok((shape, d, col))
    }

    /// Unfolds one input plane (`[H, W]`) into its `k²` rows of `Ho·Wo` values (zeroed
    /// beforehand) of the image's `[C·k·k, Ho·Wo]` unfolding, the input of a 1×1 product with
    /// the weights.
    fn im2col(&self, src_plane: &[T], d: Dims, rows: &mut [T]) {
        let g = &self.geometry;
        let (k, h, w, ho, wo) = (g.kernel_size, d.h, d.w, d.ho, d.wo);
        let s = g.stride;
        for (tap, row) in rows.chunks_mut(ho * wo).enumerate() {
            let (ky, kx) = (tap / k, tap % k);
            let (lo, hi, first) = g.valid(kx, w, wo);
            if s == 1 && w == wo {
                // Output and input rows are equally long: the tap's valid rows are one
                // contiguous copy, after which the padding columns between them (which it
                // filled with neighbouring values) are zeroed again.
                let (y0, y1, iy0) = g.valid(ky, h, ho);
                if y0 < y1 && lo < hi {
                    let (start, len) = (y0 * wo + lo, (y1 - y0 - 1) * wo + hi - lo);
                    row[start..][..len].copy_from_slice(&src_plane[iy0 * w + first..][..len]);
                    for oy in y0..y1 - 1 {
                        row[oy * wo + hi..(oy + 1) * wo + lo].fill(T::zero());
                    }
                }
                continue;
            }
            for oy in 0..ho {
                let Some(iy) = g.source(oy, ky, h) else { continue };
                let out = &mut row[oy * wo..][lo..hi];
                let src = &src_plane[iy * w + first..];
                if s == 1 {
                    copy_row(out, &src[..hi - lo]);
                } else {
                    out.iter_mut().zip(src.iter().step_by(s)).for_each(|(o, &v)| *o = v);
                }
            }
        }
    }

    /// Folds one image's `[C·k·k, Ho·Wo]` gradient back onto its `[C, H, W]` input gradient
    /// `dx` (adding overlapping taps).
    fn col2im(&self, col: &[T], d: Dims, dx: &mut [T]) {
        let g = &self.geometry;
        let (k, h, w, ho, wo) = (g.kernel_size, d.h, d.w, d.ho, d.wo);
        let spatial = ho * wo;
        let s = g.stride;
        for (plane, rows) in dx.chunks_mut(h * w).zip(col.chunks(k * k * spatial)) {
            for (tap, row) in rows.chunks(spatial).enumerate() {
                let (ky, kx) = (tap / k, tap % k);
                let (lo, hi, first) = g.valid(kx, w, wo);
                for oy in 0..ho {
                    let Some(iy) = g.source(oy, ky, h) else { continue };
                    let src = &row[oy * wo..][lo..hi];
                    let dst = &mut plane[iy * w + first..];
                    if s == 1 {
                        dst[..hi - lo].iter_mut().zip(src).for_each(|(d, &v)| *d += v);
                    } else {
                        dst.iter_mut().step_by(s).zip(src).for_each(|(d, &v)| *d += v);
                    }
                }
            }
        }
    }

    /// `y = W · col (+ bias)` for one image's unfolded input, into its `[out, Ho·Wo]` output.
    fn multiply(&self, col: &[T], spatial: usize, y: &mut [T]) {
        let (og, kg) = self.group_sizes();
        let w = self.weight.value.data();
        for grp in 0..self.geometry.groups {
            let (wg, cg) = (&w[grp * og * kg..][..og * kg], &col[grp * kg * spatial..]);
            let yg = &mut y[grp * og * spatial..][..og * spatial];
            matmul(og, spatial, kg, wg, Op::N, &cg[..kg * spatial], Op::N, yg, false);
        }
        if let Some(bias) = &self.bias {
            for (plane, &b) in y.chunks_exact_mut(spatial).zip(bias.value.data()) {
                plane.iter_mut().for_each(|v| *v += b);
            }
        }
    }

    /// The weights as hydrant's packed-panel 1×1 kernel, which reads an image's unfolded rows
    /// in place and adds the bias as it stores (f32, one group).
    fn packed(&self) -> Result<Option<PointwiseConv>> {
        let (og, kg) = self.group_sizes();
        let bias = self.bias.as_ref().map(|b| T::as_f32s(b.value.data()));
        match (T::as_f32s(self.weight.value.data()), bias, self.geometry.groups) {
            (Some(w), bias, 1) => {
                PointwiseConv::new(kg, og, w, bias.flatten(), false, Activation::NONE, Isa::best())
                    .map(Some)
                    .map_err(|e| Error::InvalidArgument(format!("conv2d: {e}")))
            }
            _ => Ok(None),
        }
    }
}

impl<T: Real> Layer<T> for Conv2d<T> {
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let d = self.dims(input)?;
        Ok(vec![d.n, self.geometry.out_channels, d.ho, d.wo])
    }

    fn forward(&mut self, x: Array<T>, pass: &mut Pass) -> Result<Array<T>> {
        let d = self.dims(x.shape())?;
        let (k, spatial) = (self.geometry.kernel_size, d.ho * d.wo);
        // The whole batch unfolded, image by image ([N, C·k·k, Ho·Wo]), one plane per job.
        let mut col = vec![T::zero(); d.n * d.c * k * k * spatial];
        let planes = col.par_chunks_mut(k * k * spatial).zip(x.data().par_chunks(d.h * d.w));
        planes.for_each(|(rows, plane)| self.im2col(plane, d, rows));
        let mut y = Array::zeros(&[d.n, self.geometry.out_channels, d.ho, d.wo])?;
        let packed = self.packed()?;
        let per_image = self.geometry.out_channels * spatial;
        let per_col = d.c * k * k * spatial;
        match (&packed, T::as_f32s(&col), T::as_f32s_mut(y.data_mut())) {
            // One image per job on hydrant's pool (the kernel inside runs on its thread).
            (Some(conv), Some(cols), Some(out)) => {
                let shared = SharedOut::new(out);
                parallel::for_each(d.n, |i| {
                    // SAFETY: image `i`'s output range is job `i`'s alone.
                    let yb = unsafe { shared.slice(i * per_image, per_image) };
                    conv.run_image(spatial, &cols[i * per_col..][..per_col], None, yb);
                });
            }
            _ => {
                let images = y.data_mut().par_chunks_mut(per_image).zip(col.par_chunks(per_col));
                images.for_each(|(yb, cb)| self.multiply(cb, spatial, yb));
            }
        }
        self.saved = pass.training.then(|| (x.shape().to_vec(), col));
        Ok(y)
    }

    fn backward(&mut self, dy: Array<T>) -> Result<Array<T>> {
        let (shape, d, mut dcol) = self.param_grads(&dy)?;
        let g = self.geometry;
        let spatial = d.ho * d.wo;
        let (og, kg) = self.group_sizes();
        let w = self.weight.value.data();
        let mut dx = Array::zeros(&shape)?;
        // The unfolded input is not needed any more: its buffer takes the unfolded gradient.
        let images = dx
            .data_mut()
            .par_chunks_mut(d.plane_in())
            .zip(dcol.par_chunks_mut(g.groups * kg * spatial))
            .zip(dy.data().par_chunks(g.out_channels * spatial));
        images.for_each(|((dxb, cb), dyb)| {
            for grp in 0..g.groups {
                let dyg = &dyb[grp * og * spatial..][..og * spatial];
                let wg = &w[grp * og * kg..][..og * kg];
                let cg = &mut cb[grp * kg * spatial..][..kg * spatial];
                matmul(kg, spatial, og, wg, Op::T, dyg, Op::N, cg, false);
            }
            self.col2im(cb, d, dxb);
        });
        Ok(dx)
    }

    fn backward_params(&mut self, dy: Array<T>) -> Result<()> {
        self.param_grads(&dy).map(drop)
    }

    fn params(&mut self) -> Vec<(&'static str, &mut Param<T>)> {
        let mut p = vec![("weight", &mut self.weight)];
        if let Some(b) = &mut self.bias {
            p.push(("bias", b));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::super::gradcheck::{check_f32_matches_f64, check_layer};
    use super::*;

    fn conv<T: Real>(
        c: usize,
        o: usize,
        k: usize,
        s: usize,
        p: usize,
        d: usize,
        g: usize,
    ) -> Conv2d<T> {
        let geometry = Geometry {
            in_channels: c,
            out_channels: o,
            kernel_size: k,
            stride: s,
            padding: p,
            dilation: d,
            groups: g,
        };
        Conv2d::new(geometry, true).unwrap()
    }

    #[test]
    fn gradients_match_finite_differences() {
        check_layer(Box::new(conv(3, 4, 3, 1, 1, 1, 1)), &[2, 3, 5, 5]);
        check_layer(Box::new(conv(2, 3, 3, 2, 0, 1, 1)), &[2, 2, 7, 6]);
        check_layer(Box::new(conv(4, 4, 3, 1, 1, 1, 4)), &[2, 4, 4, 4]); // depthwise
        check_layer(Box::new(conv(4, 6, 1, 1, 0, 1, 2)), &[1, 4, 3, 3]); // grouped 1×1
        check_layer(Box::new(conv(2, 2, 3, 1, 2, 2, 1)), &[1, 2, 5, 5]); // dilated
    }

    #[test]
    fn f32_kernels_match_the_f64_products() {
        // Full and partial 16-wide blocks, odd channel counts, strides, padding, dilation;
        // 3×3 with the same width in and out (the unfolding's contiguous-copy path).
        for (geometry, shape) in [
            ((32, 16, 3, 1, 1, 1, 1), [3, 32, 16, 16]),
            ((5, 7, 3, 1, 1, 1, 1), [2, 5, 9, 13]),
            ((6, 9, 3, 2, 1, 1, 1), [2, 6, 11, 10]),
            ((4, 3, 1, 1, 0, 1, 1), [3, 4, 5, 7]),
            ((3, 10, 5, 1, 2, 1, 1), [1, 3, 12, 12]),
            ((4, 5, 3, 1, 2, 2, 1), [2, 4, 8, 9]),
        ] {
            let (c, o, k, s, p, d, g) = geometry;
            let single = Box::new(conv::<f32>(c, o, k, s, p, d, g));
            check_f32_matches_f64(single, Box::new(conv::<f64>(c, o, k, s, p, d, g)), &shape);
        }
    }

    #[test]
    fn matches_a_direct_convolution() {
        let mut c = conv(2, 3, 3, 2, 1, 1, 1);
        let w: Vec<f64> = (0..c.weight.value.len()).map(|i| (i as f64 * 0.3).sin()).collect();
        c.weight.value = Array::new(&[3, 2, 3, 3], w.clone()).unwrap();
        let x: Vec<f64> = (0..2 * 5 * 4).map(|i| (i as f64 * 0.7).cos()).collect();
        let xa = Array::new(&[1, 2, 5, 4], x.clone()).unwrap();
        let mut rng = rand::SeedableRng::seed_from_u64(0);
        let mut pass = Pass { training: false, frozen_batchnorm: false, rng: &mut rng };
        let y = c.forward(xa, &mut pass).unwrap();
        assert_eq!(y.shape(), &[1, 3, 3, 2]);
        for o in 0..3 {
            for oy in 0..3 {
                for ox in 0..2 {
                    let mut s = 0.0;
                    for ch in 0..2 {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) = (oy * 2 + ky, ox * 2 + kx);
                                if iy >= 1 && ix >= 1 && iy - 1 < 5 && ix - 1 < 4 {
                                    s += w[((o * 2 + ch) * 3 + ky) * 3 + kx]
                                        * x[(ch * 5 + iy - 1) * 4 + ix - 1];
                                }
                            }
                        }
                    }
                    assert!((y.data()[(o * 3 + oy) * 2 + ox] - s).abs() < 1e-12);
                }
            }
        }
    }
}
