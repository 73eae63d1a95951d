//! `Dropout`: inverted dropout (PyTorch `nn.Dropout`); the identity at inference.

use super::{grad_shape, no_forward, Layer, Pass};
use crate::error::Result;
use crate::train::array::Array;
use crate::train::real::Real;
use rand::Rng;

/// A dropout layer.
#[derive(Debug, Clone)]
pub struct Dropout<T> {
    p: f32,
    /// Per element: 0 (dropped) or 1/(1−p) (kept), from the last training pass.
    mask: Option<Array<T>>,
}

impl<T: Real> Dropout<T> {
    /// Drops each element with probability `p` (validated by the layer spec: 0 ≤ p < 1).
    pub fn new(p: f32) -> Dropout<T> {
        Dropout { p, mask: None }
    }
}

impl<T: Real> Layer<T> for Dropout<T> {
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(input.to_vec())
    }

    fn forward(&mut self, mut x: Array<T>, pass: &mut Pass) -> Result<Array<T>> {
        if !pass.training || self.p == 0.0 {
            self.mask = pass.training.then(|| x.zeros_like().map(|_| T::one()));
            return Ok(x);
        }
        let keep = T::one() / T::of_f32(1.0 - self.p);
        let p = self.p as f64;
        let mut mask = x.zeros_like();
        for m in mask.data_mut() {
            *m = if pass.rng.random::<f64>() < p { T::zero() } else { keep };
        }
        x.data_mut().iter_mut().zip(mask.data()).for_each(|(v, &m)| *v *= m);
        self.mask = Some(mask);
        Ok(x)
    }

    fn backward(&mut self, mut dy: Array<T>) -> Result<Array<T>> {
        let mask = self.mask.take().ok_or_else(|| no_forward("dropout"))?;
        if dy.shape() != mask.shape() {
            return Err(grad_shape("dropout", mask.shape(), dy.shape()));
        }
        dy.data_mut().iter_mut().zip(mask.data()).for_each(|(v, &m)| *v *= m);
        Ok(dy)
    }
}

#[cfg(test)]
mod tests {
    use super::super::gradcheck::check_layer;
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn gradients_match_finite_differences() {
        check_layer(Box::new(Dropout::<f64>::new(0.3)), &[4, 5]);
    }

    #[test]
    fn drops_about_p_and_keeps_the_mean() {
        let mut d = Dropout::<f64>::new(0.25);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut pass = Pass { training: true, frozen_batchnorm: false, rng: &mut rng };
        let y = d.forward(Array::new(&[10_000], vec![1.0; 10_000]).unwrap(), &mut pass).unwrap();
        let dropped = y.data().iter().filter(|&&v| v == 0.0).count() as f64 / 10_000.0;
        let mean = y.data().iter().sum::<f64>() / 10_000.0;
        assert!((dropped - 0.25).abs() < 0.02, "dropped {dropped}");
        assert!((mean - 1.0).abs() < 0.03, "mean {mean}");
    }
}
