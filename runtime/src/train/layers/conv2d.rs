//! `Conv2d`: 2-D convolution of NCHW input (PyTorch `nn.Conv2d`), W `[out, in/groups, k, k]`.
//!
//! The whole batch is unfolded once (im2col, `[in·k·k, N·Ho·Wo]`), so forward and both weight and
//! input gradients are one matrix product per group over the batch.

use super::{grad_shape, no_forward, shape_error, Layer, Param, Pass};
use crate::error::{Error, Result};
use crate::train::array::Array;
use crate::train::real::{matmul, Op, Real};
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

    /// `(N, H, W, Ho, Wo)` for an input shape.
    fn dims(&self, input: &[usize]) -> Result<(usize, usize, usize, usize, usize)> {
        let g = &self.geometry;
        let bad = || shape_error("conv2d", &format!("[N, {}, H, W]", g.in_channels), input);
        let &[n, c, h, w] = input else { return Err(bad()) };
        if c != g.in_channels {
            return Err(bad());
        }
        match (g.out_len(h), g.out_len(w)) {
            (Some(ho), Some(wo)) if ho > 0 && wo > 0 => Ok((n, h, w, ho, wo)),
            _ => Err(bad()),
        }
    }

    /// Adds the weight and bias gradients of the last training pass; returns the input shape,
    /// its dims and `dy` as `[out, N·Ho·Wo]`.
    #[allow(clippy::type_complexity)]
    fn param_grads(
        &mut self,
        dy: &Array<T>,
    ) -> Result<(Vec<usize>, (usize, usize, usize, usize, usize), Vec<T>)> {
        let (shape, col) = self.saved.take().ok_or_else(|| no_forward("conv2d"))?;
        let expected = self.output_shape(&shape)?;
        if dy.shape() != expected {
            return Err(grad_shape("conv2d", &expected, dy.shape()));
        }
        let d = self.dims(&shape)?;
        let (n, _, _, ho, wo) = d;
        let g = self.geometry;
        let (cols, spatial) = (n * ho * wo, ho * wo);
        let (og, kg) = (g.out_channels / g.groups, g.in_channels / g.groups * g.kernel_size.pow(2));
        let mut dyt = vec![T::zero(); g.out_channels * cols];
        dyt.par_chunks_mut(cols).enumerate().for_each(|(o, dst)| {
            for b in 0..n {
                let src = &dy.data()[(b * g.out_channels + o) * spatial..][..spatial];
                dst[b * spatial..][..spatial].copy_from_slice(src);
            }
        });
        if let Some(bias) = &mut self.bias {
            for (gb, row) in bias.grad.data_mut().iter_mut().zip(dyt.chunks_exact(cols)) {
                *gb += row.iter().copied().sum::<T>();
            }
        }
        let dw = self.weight.grad.data_mut();
        for grp in 0..g.groups {
            let dyg = &dyt[grp * og * cols..][..og * cols];
            let cg = &col[grp * kg * cols..][..kg * cols];
            matmul(og, kg, cols, dyg, Op::N, cg, Op::T, &mut dw[grp * og * kg..][..og * kg], true);
        }
        Ok((shape, d, dyt))
    }

    /// Unfolds `x` into `[C·k·k, N·Ho·Wo]`.
    fn im2col(&self, x: &[T], (n, h, w, ho, wo): (usize, usize, usize, usize, usize)) -> Vec<T> {
        let g = &self.geometry;
        let (k, c) = (g.kernel_size, g.in_channels);
        let cols = n * ho * wo;
        let mut col = vec![T::zero(); c * k * k * cols];
        let s = g.stride;
        col.par_chunks_mut(k * k * cols).enumerate().for_each(|(ch, rows)| {
            for (tap, row) in rows.chunks_mut(cols).enumerate() {
                let (ky, kx) = (tap / k, tap % k);
                let (lo, hi, first) = g.valid(kx, w, wo);
                for b in 0..n {
                    let plane = &x[(b * c + ch) * h * w..][..h * w];
                    for oy in 0..ho {
                        let Some(iy) = g.source(oy, ky, h) else { continue };
                        let out = &mut row[(b * ho + oy) * wo..][lo..hi];
                        let src = &plane[iy * w + first..];
                        if s == 1 {
                            out.copy_from_slice(&src[..hi - lo]);
                        } else {
                            out.iter_mut().zip(src.iter().step_by(s)).for_each(|(o, &v)| *o = v);
                        }
                    }
                }
            }
        });
        col
    }

    /// Folds `[C·k·k, N·Ho·Wo]` back onto an NCHW input gradient (adding overlapping taps).
    fn col2im(&self, col: &[T], (n, h, w, ho, wo): (usize, usize, usize, usize, usize)) -> Vec<T> {
        let g = &self.geometry;
        let (k, c) = (g.kernel_size, g.in_channels);
        let cols = n * ho * wo;
        let mut dx = vec![T::zero(); n * c * h * w];
        // Channel-major scratch so each worker owns one input channel for the whole batch.
        let mut by_channel = vec![T::zero(); c * n * h * w];
        let s = g.stride;
        by_channel.par_chunks_mut(n * h * w).enumerate().for_each(|(ch, planes)| {
            for tap in 0..k * k {
                let (ky, kx) = (tap / k, tap % k);
                let (lo, hi, first) = g.valid(kx, w, wo);
                let row = &col[(ch * k * k + tap) * cols..][..cols];
                for b in 0..n {
                    let plane = &mut planes[b * h * w..][..h * w];
                    for oy in 0..ho {
                        let Some(iy) = g.source(oy, ky, h) else { continue };
                        let src = &row[(b * ho + oy) * wo..][lo..hi];
                        let dst = &mut plane[iy * w + first..];
                        if s == 1 {
                            dst[..hi - lo].iter_mut().zip(src).for_each(|(d, &v)| *d += v);
                        } else {
                            dst.iter_mut().step_by(s).zip(src).for_each(|(d, &v)| *d += v);
                        }
                    }
                }
            }
        });
        for ch in 0..c {
            for b in 0..n {
                let src = &by_channel[(ch * n + b) * h * w..][..h * w];
                dx[(b * c + ch) * h * w..][..h * w].copy_from_slice(src);
            }
        }
        dx
    }
}

impl<T: Real> Layer<T> for Conv2d<T> {
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let (n, _, _, ho, wo) = self.dims(input)?;
        Ok(vec![n, self.geometry.out_channels, ho, wo])
    }

    fn forward(&mut self, x: Array<T>, pass: &mut Pass) -> Result<Array<T>> {
        let d = self.dims(x.shape())?;
        let (n, _, _, ho, wo) = d;
        let g = self.geometry;
        let col = self.im2col(x.data(), d);
        let (cols, spatial) = (n * ho * wo, ho * wo);
        let (og, kg) = (g.out_channels / g.groups, g.in_channels / g.groups * g.kernel_size.pow(2));
        // y' [out, N·Ho·Wo], one product per group.
        let mut yt = vec![T::zero(); g.out_channels * cols];
        let w = self.weight.value.data();
        for grp in 0..g.groups {
            let (wg, cg) = (&w[grp * og * kg..][..og * kg], &col[grp * kg * cols..][..kg * cols]);
            matmul(
                og,
                cols,
                kg,
                wg,
                Op::N,
                cg,
                Op::N,
                &mut yt[grp * og * cols..][..og * cols],
                false,
            );
        }
        // Reorder to [N, out, Ho·Wo] and add the bias.
        let mut y = Array::zeros(&[n, g.out_channels, ho, wo])?;
        let bias = self.bias.as_ref().map(|b| b.value.data());
        y.data_mut().par_chunks_mut(spatial).enumerate().for_each(|(i, dst)| {
            let (b, o) = (i / g.out_channels, i % g.out_channels);
            dst.copy_from_slice(&yt[o * cols + b * spatial..][..spatial]);
            if let Some(bias) = bias {
                dst.iter_mut().for_each(|v| *v += bias[o]);
            }
        });
        self.saved = pass.training.then(|| (x.shape().to_vec(), col));
        Ok(y)
    }

    fn backward(&mut self, dy: Array<T>) -> Result<Array<T>> {
        let (shape, d, dyt) = self.param_grads(&dy)?;
        let (n, _, _, ho, wo) = d;
        let g = self.geometry;
        let cols = n * ho * wo;
        let (og, kg) = (g.out_channels / g.groups, g.in_channels / g.groups * g.kernel_size.pow(2));
        let mut dcol = vec![T::zero(); kg * g.groups * cols];
        let w = self.weight.value.data();
        for grp in 0..g.groups {
            let dyg = &dyt[grp * og * cols..][..og * cols];
            let wg = &w[grp * og * kg..][..og * kg];
            matmul(
                kg,
                cols,
                og,
                wg,
                Op::T,
                dyg,
                Op::N,
                &mut dcol[grp * kg * cols..][..kg * cols],
                false,
            );
        }
        Array::new(&shape, self.col2im(&dcol, d))
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
    use super::super::gradcheck::check_layer;
    use super::*;

    fn conv(c: usize, o: usize, k: usize, s: usize, p: usize, d: usize, g: usize) -> Conv2d<f64> {
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
