//! `Upsample2x`: ×2 spatial upsampling of NCHW, nearest or bilinear with `align_corners =
//! false` (PyTorch `nn.Upsample(scale_factor=2, mode=…)`).

use super::{grad_shape, no_forward, shape_error, Layer, Pass};
use crate::error::Result;
use crate::train::array::Array;
use crate::train::real::Real;
use crate::train::spec::UpsampleMode;

/// A ×2 upsampling layer.
#[derive(Debug, Clone)]
pub struct Upsample2x {
    mode: UpsampleMode,
    input_shape: Option<Vec<usize>>,
}

impl Upsample2x {
    /// Upsampling with the given interpolation.
    pub fn new(mode: UpsampleMode) -> Upsample2x {
        Upsample2x { mode, input_shape: None }
    }
}

/// For output index `o` of an axis upsampled ×2 from `n`: the two source indices and the weight
/// of the second (PyTorch's `align_corners = false` rule, clamped at the borders).
fn taps(o: usize, n: usize) -> (usize, usize, f64) {
    let src = ((o as f64 + 0.5) / 2.0 - 0.5).max(0.0);
    let i0 = (src.floor() as usize).min(n - 1);
    let i1 = (i0 + 1).min(n - 1);
    (i0, i1, src - i0 as f64)
}

impl Upsample2x {
    /// Calls `f(output index, input index, weight)` for every contribution of the plane.
    fn for_each_tap(&self, h: usize, w: usize, mut f: impl FnMut(usize, usize, f64)) {
        for oy in 0..2 * h {
            for ox in 0..2 * w {
                let o = oy * 2 * w + ox;
                match self.mode {
                    UpsampleMode::Nearest => f(o, (oy / 2) * w + ox / 2, 1.0),
                    UpsampleMode::Bilinear => {
                        let (y0, y1, ly) = taps(oy, h);
                        let (x0, x1, lx) = taps(ox, w);
                        f(o, y0 * w + x0, (1.0 - ly) * (1.0 - lx));
                        f(o, y0 * w + x1, (1.0 - ly) * lx);
                        f(o, y1 * w + x0, ly * (1.0 - lx));
                        f(o, y1 * w + x1, ly * lx);
                    }
                }
            }
        }
    }
}

impl<T: Real> Layer<T> for Upsample2x {
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match *input {
            [n, c, h, w] if h > 0 && w > 0 => Ok(vec![n, c, 2 * h, 2 * w]),
            _ => Err(shape_error("upsample2x", "[N, C, H, W]", input)),
        }
    }

    fn forward(&mut self, x: Array<T>, pass: &mut Pass) -> Result<Array<T>> {
        let shape = <Self as Layer<T>>::output_shape(self, x.shape())?;
        let (h, w) = (x.shape()[2], x.shape()[3]);
        let mut y = Array::zeros(&shape)?;
        for (src, dst) in x.data().chunks_exact(h * w).zip(y.data_mut().chunks_exact_mut(4 * h * w))
        {
            self.for_each_tap(h, w, |o, i, wt| dst[o] += src[i] * T::of(wt));
        }
        if pass.training {
            self.input_shape = Some(x.shape().to_vec());
        }
        Ok(y)
    }

    fn backward(&mut self, dy: Array<T>) -> Result<Array<T>> {
        let shape = self.input_shape.take().ok_or_else(|| no_forward("upsample2x"))?;
        let expected = <Self as Layer<T>>::output_shape(self, &shape)?;
        if dy.shape() != expected {
            return Err(grad_shape("upsample2x", &expected, dy.shape()));
        }
        let (h, w) = (shape[2], shape[3]);
        let mut dx = Array::zeros(&shape)?;
        for (g, dst) in dy.data().chunks_exact(4 * h * w).zip(dx.data_mut().chunks_exact_mut(h * w))
        {
            self.for_each_tap(h, w, |o, i, wt| dst[i] += g[o] * T::of(wt));
        }
        Ok(dx)
    }
}

#[cfg(test)]
mod tests {
    use super::super::gradcheck::check_layer;
    use super::*;

    #[test]
    fn gradients_match_finite_differences() {
        check_layer(Box::new(Upsample2x::new(UpsampleMode::Nearest)), &[2, 2, 3, 2]);
        check_layer(Box::new(Upsample2x::new(UpsampleMode::Bilinear)), &[1, 2, 3, 4]);
    }

    #[test]
    fn bilinear_matches_pytorch_on_a_ramp() {
        // torch.nn.functional.interpolate(torch.tensor([[[[0., 1., 2.]]]]), scale_factor=2,
        // mode="bilinear", align_corners=False) = [0, .25, .75, 1.25, 1.75, 2].
        let mut u = Upsample2x::new(UpsampleMode::Bilinear);
        let mut rng = rand::SeedableRng::seed_from_u64(0);
        let mut pass = Pass { training: false, frozen_batchnorm: false, rng: &mut rng };
        let y =
            u.forward(Array::new(&[1, 1, 1, 3], vec![0.0, 1.0, 2.0]).unwrap(), &mut pass).unwrap();
        assert_eq!(&y.data()[..6], &[0.0, 0.25, 0.75, 1.25, 1.75, 2.0]);
    }
}
