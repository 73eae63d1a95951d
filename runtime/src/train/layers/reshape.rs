//! Layers that move no numbers: `Flatten` (all dimensions after the first into one) and
//! `Softmax`, which applies only at inference (losses take logits, so training skips it).

use super::{no_forward, shape_error, Layer, Pass};
use crate::error::Result;
use crate::train::array::Array;
use crate::train::real::Real;

/// Flattens `[N, d1, d2, …]` into `[N, d1·d2·…]` (PyTorch `nn.Flatten()`).
#[derive(Debug, Clone, Default)]
pub struct Flatten {
    input_shape: Option<Vec<usize>>,
}

impl<T: Real> Layer<T> for Flatten {
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match input {
            [n, rest @ ..] => Ok(vec![*n, rest.iter().product()]),
            [] => Err(shape_error("flatten", "[N, …]", input)),
        }
    }

    fn forward(&mut self, x: Array<T>, pass: &mut Pass) -> Result<Array<T>> {
        let shape = <Self as Layer<T>>::output_shape(self, x.shape())?;
        if pass.training {
            self.input_shape = Some(x.shape().to_vec());
        }
        x.reshape(&shape)
    }

    fn backward(&mut self, dy: Array<T>) -> Result<Array<T>> {
        let shape = self.input_shape.take().ok_or_else(|| no_forward("flatten"))?;
        dy.reshape(&shape)
    }
}

/// Softmax over one dimension at inference; the identity while training.
#[derive(Debug, Clone)]
pub struct Softmax {
    dim: i64,
    trained: bool,
}

impl Softmax {
    /// Softmax over `dim` (negative counts from the end).
    pub fn new(dim: i64) -> Softmax {
        Softmax { dim, trained: false }
    }

    fn axis(&self, rank: usize) -> Option<usize> {
        let d = if self.dim < 0 { rank as i64 + self.dim } else { self.dim };
        (0..rank as i64).contains(&d).then_some(d as usize)
    }
}

/// Softmax of `x` along `axis`, in place.
pub(crate) fn softmax_in_place<T: Real>(x: &mut Array<T>, axis: usize) {
    let shape = x.shape().to_vec();
    let (len, inner) = (shape[axis], shape[axis + 1..].iter().product::<usize>());
    let data = x.data_mut();
    for block in data.chunks_exact_mut(len * inner) {
        for i in 0..inner {
            let max = (0..len).map(|k| block[k * inner + i]).fold(T::neg_infinity(), T::max);
            let mut sum = T::zero();
            for k in 0..len {
                let e = (block[k * inner + i] - max).exp();
                block[k * inner + i] = e;
                sum += e;
            }
            (0..len).for_each(|k| block[k * inner + i] /= sum);
        }
    }
}

impl<T: Real> Layer<T> for Softmax {
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        self.axis(input.len())
            .map(|_| input.to_vec())
            .ok_or_else(|| shape_error("softmax", &format!("a dimension {}", self.dim), input))
    }

    fn forward(&mut self, mut x: Array<T>, pass: &mut Pass) -> Result<Array<T>> {
        <Self as Layer<T>>::output_shape(self, x.shape())?;
        if pass.training {
            self.trained = true;
            return Ok(x);
        }
        if let Some(axis) = self.axis(x.shape().len()) {
            softmax_in_place(&mut x, axis);
        }
        Ok(x)
    }

    fn backward(&mut self, dy: Array<T>) -> Result<Array<T>> {
        if !std::mem::take(&mut self.trained) {
            return Err(no_forward("softmax"));
        }
        Ok(dy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn softmax_rows_sum_to_one_at_inference_and_pass_through_in_training() {
        let mut s = Softmax::new(1);
        let x = Array::new(&[2, 3, 2], (0..12).map(|i| i as f64 * 0.5).collect()).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut pass = Pass { training: false, frozen_batchnorm: false, rng: &mut rng };
        let y = s.forward(x.clone(), &mut pass).unwrap();
        for b in 0..2 {
            for i in 0..2 {
                let sum: f64 = (0..3).map(|k| y.data()[b * 6 + k * 2 + i]).sum();
                assert!((sum - 1.0).abs() < 1e-12);
            }
        }
        pass.training = true;
        assert_eq!(s.forward(x.clone(), &mut pass).unwrap(), x);
    }

    #[test]
    fn flatten_round_trips() {
        let mut f = Flatten::default();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut pass = Pass { training: true, frozen_batchnorm: false, rng: &mut rng };
        let x = Array::<f64>::zeros(&[2, 3, 4]).unwrap();
        let y = f.forward(x, &mut pass).unwrap();
        assert_eq!(y.shape(), &[2, 12]);
        assert_eq!(f.backward(y).unwrap().shape(), &[2, 3, 4]);
    }
}
