//! `Linear`: `y = x Wᵀ + b` on the last dimension (PyTorch `nn.Linear`), W `[out, in]`.
//!
//! In f32 the three products run on hydrant's own kernels, each reading its larger operand in
//! place: the forward pass as row dot products of `x` and `W` ([`add_products`]), the weight
//! and input gradients on the packed-panel kernel (`dyᵀ · x` and `dy · W`). f64 (the gradient
//! checks) uses the general [`matmul`].

use super::{grad_shape, no_forward, shape_error, Layer, Param, Pass};
use crate::backend::cpu_ops::pointwise::PointwiseConv;
use crate::backend::cpu_ops::{Activation, Isa};
use crate::error::{Error, Result};
use crate::train::array::Array;
use crate::train::dot::{add_products, Rows};
use crate::train::real::{matmul, Op, Real, PARALLEL_MIN_FMA};
use tract_linalg::multithread::{multithread_tract_scope, Executor};

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
        match (T::as_f32s(x.data()), T::as_f32s(w), T::as_f32s_mut(y.data_mut())) {
            // y[n][o] += x[n] · W[o]: both run along the input features, read in place.
            (Some(a), Some(b), Some(y)) => {
                let products = Rows { a, a_rows: rows, b, b_rows: out, len: inf, segments: 1 };
                add_products(Isa::best(), products, y);
            }
            _ => matmul(rows, out, inf, x.data(), Op::N, w, Op::T, y.data_mut(), true),
        }
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
        match (T::as_f32s(dy.data()), T::as_f32s(w), T::as_f32s_mut(dx.data_mut())) {
            // dx[rows × in] = dy[rows × out] · W[out × in], W's rows read in place.
            (Some(dy), Some(w), Some(dx)) => product(rows, out, dy, w, inf, dx)?,
            _ => matmul(rows, inf, out, dy.data(), Op::N, w, Op::N, dx.data_mut(), false),
        }
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
        match (T::as_f32s(dy.data()), T::as_f32s(x.data()), T::as_f32s_mut(grad)) {
            // dW[out × in] += dyᵀ[out × rows] · x[rows × in], x's rows read in place.
            (Some(dy), Some(x), Some(grad)) => {
                let mut dyt = vec![0f32; out * rows];
                for (r, row) in dy.chunks_exact(out).enumerate() {
                    row.iter().enumerate().for_each(|(o, &v)| dyt[o * rows + r] = v);
                }
                let mut dw = vec![0f32; out * inf];
                product(out, rows, &dyt, x, inf, &mut dw)?;
                grad.iter_mut().zip(dw).for_each(|(g, d)| *g += d);
            }
            _ => matmul(out, inf, rows, dy.data(), Op::T, x.data(), Op::N, grad, true),
        }
        if let Some(b) = &mut self.bias {
            let g = b.grad.data_mut();
            for row in dy.data().chunks_exact(out) {
                g.iter_mut().zip(row).for_each(|(a, &d)| *a += d);
            }
        }
        Ok(x)
    }
}

/// `c[m × n] = a[m × k] · b[k × n]` (row-major) on hydrant's packed-panel kernel, which reads
/// `b`'s rows in place: `a` is packed as a 1×1 convolution's weights and `b` is its input of
/// `n` pixels. Threaded on the current rayon pool.
fn product(m: usize, k: usize, a: &[f32], b: &[f32], n: usize, c: &mut [f32]) -> Result<()> {
    let conv = PointwiseConv::new(k, m, a, None, false, Activation::NONE, Isa::best())
        .map_err(|e| Error::InvalidArgument(format!("linear: {e}")))?;
    let executor = match rayon::current_num_threads() > 1 && m * k * n >= PARALLEL_MIN_FMA {
        false => Executor::SingleThread,
        true => Executor::RayonGlobal,
    };
    multithread_tract_scope(executor, || conv.run_image(n, b, None, c));
    Ok(())
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
