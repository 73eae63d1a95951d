//! `BatchNorm2d`: per-channel normalisation of `[N, C, …]` (PyTorch `nn.BatchNorm2d`, also
//! taking `[N, C]` as `nn.BatchNorm1d` does).
//!
//! In training the batch statistics normalise (biased variance) and the running statistics are
//! updated with PyTorch's momentum rule (unbiased variance); with frozen statistics, or at
//! inference, the running statistics normalise.

use super::{grad_shape, no_forward, shape_error, Layer, Param, Pass};
use crate::error::{Error, Result};
use crate::train::array::Array;
use crate::train::real::{sum, sum_by, Real};

/// A batch-normalisation layer.
#[derive(Debug, Clone)]
pub struct BatchNorm2d<T> {
    eps: T,
    momentum: T,
    /// Scale γ `[C]`.
    pub weight: Param<T>,
    /// Shift β `[C]`.
    pub bias: Param<T>,
    /// Running mean `[C]`.
    pub running_mean: Array<T>,
    /// Running (unbiased) variance `[C]`.
    pub running_var: Array<T>,
    /// Training batches seen (PyTorch's `num_batches_tracked`).
    pub batches: i64,
    /// Normalised input and per-channel 1/σ of the last training pass, and whether batch
    /// statistics were used.
    saved: Option<(Array<T>, Vec<T>, bool)>,
}

impl<T: Real> BatchNorm2d<T> {
    /// γ = 1, β = 0, running mean 0 and variance 1 (PyTorch's initial state).
    pub fn new(channels: usize, eps: f32, momentum: f32) -> Result<BatchNorm2d<T>> {
        if !(eps > 0.0 && (0.0..=1.0).contains(&momentum)) {
            return Err(Error::InvalidArgument(format!(
                "batch_norm: eps {eps} must be > 0 and momentum {momentum} in [0, 1]"
            )));
        }
        let ones = Array::new(&[channels], vec![T::one(); channels])?;
        Ok(BatchNorm2d {
            eps: T::of_f32(eps),
            momentum: T::of_f32(momentum),
            weight: Param::new(ones.clone()),
            bias: Param::new(Array::zeros(&[channels])?),
            running_mean: Array::zeros(&[channels])?,
            running_var: ones,
            batches: 0,
            saved: None,
        })
    }

    fn channels(&self) -> usize {
        self.weight.value.len()
    }

    /// `(N, C, spatial)` of an input shape.
    fn dims(&self, shape: &[usize]) -> Result<(usize, usize, usize)> {
        let c = self.channels();
        match shape {
            [n, ch, rest @ ..] if *ch == c && rest.len() <= 2 => Ok((*n, c, rest.iter().product())),
            _ => Err(shape_error("batch_norm", &format!("[N, {c}, H, W] or [N, {c}]"), shape)),
        }
    }
}

impl<T: Real> Layer<T> for BatchNorm2d<T> {
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        self.dims(input)?;
        Ok(input.to_vec())
    }

    fn forward(&mut self, mut x: Array<T>, pass: &mut Pass) -> Result<Array<T>> {
        let (n, c, s) = self.dims(x.shape())?;
        let batch_stats = pass.training && !pass.frozen_batchnorm;
        let count = n * s;
        if batch_stats && count < 2 {
            return Err(Error::BadTensor(format!(
                "batch_norm: training needs more than one value per channel, got shape {:?}",
                x.shape()
            )));
        }
        let mut inv_std = vec![T::zero(); c];
        let mut mean = vec![T::zero(); c];
        for ch in 0..c {
            if batch_stats {
                let plane = |b: usize| &x.data()[(b * c + ch) * s..][..s];
                let m = (0..n).map(|b| sum(plane(b))).sum::<T>() / T::of(count as f64);
                let dev = |b: usize| sum_by(plane(b), plane(b), |v, _| (v - m) * (v - m));
                let var = (0..n).map(dev).sum::<T>() / T::of(count as f64);
                let unbiased = var * T::of(count as f64 / (count - 1) as f64);
                let mo = self.momentum;
                let rm = &mut self.running_mean.data_mut()[ch];
                *rm = (T::one() - mo) * *rm + mo * m;
                let rv = &mut self.running_var.data_mut()[ch];
                *rv = (T::one() - mo) * *rv + mo * unbiased;
                mean[ch] = m;
                inv_std[ch] = T::one() / (var + self.eps).sqrt();
            } else {
                mean[ch] = self.running_mean.data()[ch];
                inv_std[ch] = T::one() / (self.running_var.data()[ch] + self.eps).sqrt();
            }
        }
        if batch_stats {
            self.batches += 1;
        }
        // x̂ in place; keep it for backward, then scale and shift into y.
        for (i, plane) in x.data_mut().chunks_exact_mut(s).enumerate() {
            let ch = i % c;
            plane.iter_mut().for_each(|v| *v = (*v - mean[ch]) * inv_std[ch]);
        }
        let mut y = x.clone();
        let (gamma, beta) = (self.weight.value.data(), self.bias.value.data());
        for (i, plane) in y.data_mut().chunks_exact_mut(s).enumerate() {
            let ch = i % c;
            plane.iter_mut().for_each(|v| *v = *v * gamma[ch] + beta[ch]);
        }
        self.saved = pass.training.then_some((x, inv_std, batch_stats));
        Ok(y)
    }

    fn backward(&mut self, mut dy: Array<T>) -> Result<Array<T>> {
        let (xhat, inv_std, batch_stats) =
            self.saved.take().ok_or_else(|| no_forward("batch_norm"))?;
        if dy.shape() != xhat.shape() {
            return Err(grad_shape("batch_norm", xhat.shape(), dy.shape()));
        }
        let (n, c, s) = self.dims(xhat.shape())?;
        let count = T::of((n * s) as f64);
        // Per channel: Σ dy and Σ dy·x̂.
        let mut sum_dy = vec![T::zero(); c];
        let mut sum_dy_xhat = vec![T::zero(); c];
        for (i, (g, xh)) in dy.data().chunks_exact(s).zip(xhat.data().chunks_exact(s)).enumerate() {
            let ch = i % c;
            sum_dy[ch] += sum(g);
            sum_dy_xhat[ch] += sum_by(g, xh, |a, b| a * b);
        }
        for ch in 0..c {
            self.weight.grad.data_mut()[ch] += sum_dy_xhat[ch];
            self.bias.grad.data_mut()[ch] += sum_dy[ch];
        }
        let gamma = self.weight.value.data();
        for (i, (g, xh)) in
            dy.data_mut().chunks_exact_mut(s).zip(xhat.data().chunks_exact(s)).enumerate()
        {
            let ch = i % c;
            let k = gamma[ch] * inv_std[ch];
            if batch_stats {
                let (m1, m2) = (sum_dy[ch] / count, sum_dy_xhat[ch] / count);
                g.iter_mut().zip(xh).for_each(|(v, &h)| *v = k * (*v - m1 - h * m2));
            } else {
                g.iter_mut().for_each(|v| *v *= k);
            }
        }
        Ok(dy)
    }

    fn params(&mut self) -> Vec<(&'static str, &mut Param<T>)> {
        vec![("weight", &mut self.weight), ("bias", &mut self.bias)]
    }

    fn buffers(&mut self) -> Vec<(&'static str, &mut Array<T>)> {
        vec![("running_mean", &mut self.running_mean), ("running_var", &mut self.running_var)]
    }

    fn counters(&mut self) -> Vec<(&'static str, &mut i64)> {
        vec![("num_batches_tracked", &mut self.batches)]
    }
}

#[cfg(test)]
mod tests {
    use super::super::gradcheck::{check_layer, check_layer_mode};
    use super::*;

    #[test]
    fn gradients_match_finite_differences_in_training_mode() {
        check_layer(Box::new(BatchNorm2d::<f64>::new(3, 1e-5, 0.1).unwrap()), &[2, 3, 3, 2]);
        check_layer(Box::new(BatchNorm2d::<f64>::new(4, 1e-5, 0.1).unwrap()), &[5, 4]);
    }

    #[test]
    fn gradients_match_finite_differences_with_frozen_statistics() {
        check_layer_mode(
            Box::new(BatchNorm2d::<f64>::new(3, 1e-5, 0.1).unwrap()),
            &[2, 3, 2, 2],
            true,
        );
    }

    #[test]
    fn running_statistics_follow_pytorch_momentum() {
        let mut bn = BatchNorm2d::<f64>::new(1, 1e-5, 0.1).unwrap();
        let x = Array::new(&[4, 1], vec![1.0, 2.0, 3.0, 6.0]).unwrap();
        let mut rng = rand::SeedableRng::seed_from_u64(0);
        let mut pass = Pass { training: true, frozen_batchnorm: false, rng: &mut rng };
        bn.forward(x, &mut pass).unwrap();
        // mean 3, unbiased variance 14/3 (momentum 0.1 is stored as f32).
        assert!((bn.running_mean.data()[0] - 0.3).abs() < 1e-7);
        assert!((bn.running_var.data()[0] - (0.9 + 0.1 * 14.0 / 3.0)).abs() < 1e-7);
        assert_eq!(bn.batches, 1);
    }
}
