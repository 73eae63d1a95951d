//! `Linear`: `y = x Wᵀ + b` on the last dimension (PyTorch `nn.Linear`), W `[out, in]`.
//!
//! Its three products are [`matmul`]s, which in f32 run on hydrant's own kernels (row dot
//! products for `x · Wᵀ`, the packed-panel kernel for `dy · W` and `dyᵀ · x`).

use super::{grad_shape, no_forward, shape_error, Layer, Param, Pass};
use crate::error::Result;
use crate::train::array::Array;
use crate::train::real::{matmul, Op, Real};

/// A fully connected layer.
#[derive(Debug, Clone)]
pub struct Linear<T> {
    /// `[out, in]`.
    pub weight: Param<T>,
    /// `[out]`, when the layer has a bias.
    pub bias: Option<Param<T>>,
    input: Option<Array<T>>,
}

impl<T: Real> Linear<T> {
    /// A layer with zero weights.
    pub fn new(in_features: usize, out_features: usize, bias: bool) -> Result<Linear<T>> {
        Ok(Linear {
            weight: Param::new(Array::zeros(&[out_features, in_features])?),
            bias: bias.then(|| Array::zeros(&[out_features]).map(Param::new)).transpose()?,
            input: None,
        })
    }

    fn dims(&self) -> (usize, usize) {
        (self.weight.value.shape()[0], self.weight.value.shape()[1])
    }
}

impl<T: Real> Layer<T> for Linear<T> {
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let (out, inf) = self.dims();
        match input.split_last() {
            Some((&last, lead)) if last == inf && !lead.is_empty() => {
                Ok(lead.iter().copied().chain([out]).collect())
            }
            _ => Err(shape_error("linear", &format!("[N, …, {inf}]"), input)),
        }
    }

    fn forward(&mut self, x: Array<T>, pass: &mut Pass) -> Result<Array<T>> {
        let shape = self.output_shape(x.shape())?;
        let (out, inf) = self.dims();
        let rows = x.len() / inf;
        let mut y = Array::zeros(&shape)?;
        if let Some(b) = &self.bias {
            for row in y.data_mut().chunks_exact_mut(out) {
                row.copy_from_slice(b.value.data());
            }
        }
        let w = self.weight.value.data();
        matmul(rows, out, inf, x.data(), Op::N, w, Op::T, y.data_mut(), self.bias.is_some());
        self.input = pass.training.then_some(x);
        Ok(y)
    }

    fn backward(&mut self, dy: Array<T>) -> Result<Array<T>> {
        let x = self.param_grads(&dy)?;
        let (out, inf) = self.dims();
        let rows = x.len() / inf;
        // dx = dy W.
        let mut dx = x.zeros_like();
        let w = self.weight.value.data();
        matmul(rows, inf, out, dy.data(), Op::N, w, Op::N, dx.data_mut(), false);
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

impl<T: Real> Linear<T> {
    /// Adds `dW += dyᵀ x` and `db += Σ rows of dy`; returns the cached input.
    fn param_grads(&mut self, dy: &Array<T>) -> Result<Array<T>> {
        let x = self.input.take().ok_or_else(|| no_forward("linear"))?;
        let expected = self.output_shape(x.shape())?;
        if dy.shape() != expected {
            return Err(grad_shape("linear", &expected, dy.shape()));
        }
        let (out, inf) = self.dims();
        let rows = x.len() / inf;
        let grad = self.weight.grad.data_mut();
        matmul(out, inf, rows, dy.data(), Op::T, x.data(), Op::N, grad, true);
        if let Some(b) = &mut self.bias {
            let g = b.grad.data_mut();
            for row in dy.data().chunks_exact(out) {
                g.iter_mut().zip(row).for_each(|(a, &d)| *a += d);
            }
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::super::gradcheck::{check_f32_matches_f64, check_layer};
    use super::*;

    #[test]
    fn f32_kernels_match_the_f64_products() {
        // The benchmark's shapes, odd sizes (partial blocks and vectors), 3-D input, no bias.
        for (inf, out, shape, bias) in [
            (512, 128, vec![32, 512], true),
            (128, 10, vec![32, 128], true),
            (37, 13, vec![5, 37], true),
            (20, 6, vec![3, 4, 20], false),
            (1, 1, vec![2, 1], true),
        ] {
            let single = Box::new(Linear::<f32>::new(inf, out, bias).unwrap());
            let double = Box::new(Linear::<f64>::new(inf, out, bias).unwrap());
            check_f32_matches_f64(single, double, &shape);
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        check_layer(Box::new(Linear::<f64>::new(5, 3, true).unwrap()), &[4, 5]);
        check_layer(Box::new(Linear::<f64>::new(4, 2, false).unwrap()), &[2, 3, 4]);
    }

    #[test]
    fn wrong_width_is_an_error() {
        let l = Linear::<f32>::new(5, 3, true).unwrap();
        assert!(l.output_shape(&[2, 4]).unwrap_err().to_string().contains("[N, …, 5]"));
    }
}
