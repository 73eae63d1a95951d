//! `LayerNorm`: normalisation over the last dimension with a learned scale and shift (PyTorch
//! `nn.LayerNorm(normalized_shape)` with an integer shape).

use super::{grad_shape, no_forward, shape_error, Layer, Param, Pass};
use crate::error::{Error, Result};
use crate::train::array::Array;
use crate::train::real::{sum, sum_by, Real};

/// A layer-normalisation layer.
#[derive(Debug, Clone)]
pub struct LayerNorm<T> {
    eps: T,
    /// Scale `[D]`.
    pub weight: Param<T>,
    /// Shift `[D]`.
    pub bias: Param<T>,
    /// x̂ and per-row 1/σ of the last training pass.
    saved: Option<(Array<T>, Vec<T>)>,
}

impl<T: Real> LayerNorm<T> {
    /// Scale 1, shift 0.
    pub fn new(size: usize, eps: f32) -> Result<LayerNorm<T>> {
        if !crate::train::spec::is_positive(eps) || size == 0 {
            return Err(Error::InvalidArgument(format!(
                "layer_norm: size {size} must be > 0 and eps {eps} > 0"
            )));
        }
        Ok(LayerNorm {
            eps: T::of_f32(eps),
            weight: Param::new(Array::new(&[size], vec![T::one(); size])?),
            bias: Param::new(Array::zeros(&[size])?),
            saved: None,
        })
    }

    fn size(&self) -> usize {
        self.weight.value.len()
    }
}

impl<T: Real> Layer<T> for LayerNorm<T> {
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match input.last() {
            Some(&d) if d == self.size() => Ok(input.to_vec()),
            _ => Err(shape_error("layer_norm", &format!("[…, {}]", self.size()), input)),
        }
    }

    fn forward(&mut self, mut x: Array<T>, pass: &mut Pass) -> Result<Array<T>> {
        self.output_shape(x.shape())?;
        let d = self.size();
        let dn = T::of(d as f64);
        let mut inv = Vec::with_capacity(x.len() / d);
        for row in x.data_mut().chunks_exact_mut(d) {
            let m = sum(row) / dn;
            let var = sum_by(row, row, |v, _| (v - m) * (v - m)) / dn;
            let is = T::one() / (var + self.eps).sqrt();
            row.iter_mut().for_each(|v| *v = (*v - m) * is);
            inv.push(is);
        }
        let mut y = x.clone();
        let (g, b) = (self.weight.value.data(), self.bias.value.data());
        for row in y.data_mut().chunks_exact_mut(d) {
            row.iter_mut().zip(g.iter().zip(b)).for_each(|(v, (&g, &b))| *v = *v * g + b);
        }
        self.saved = pass.training.then_some((x, inv));
        Ok(y)
    }

    fn backward(&mut self, mut dy: Array<T>) -> Result<Array<T>> {
        let (xhat, inv) = self.saved.take().ok_or_else(|| no_forward("layer_norm"))?;
        if dy.shape() != xhat.shape() {
            return Err(grad_shape("layer_norm", xhat.shape(), dy.shape()));
        }
        let d = self.size();
        let dn = T::of(d as f64);
        let gamma = self.weight.value.data().to_vec();
        let (gw, gb) = (self.weight.grad.data_mut(), self.bias.grad.data_mut());
        for ((row, xh), &is) in
            dy.data_mut().chunks_exact_mut(d).zip(xhat.data().chunks_exact(d)).zip(&inv)
        {
            for j in 0..d {
                gw[j] += row[j] * xh[j];
                gb[j] += row[j];
            }
            // g = dy·γ; dx = (1/σ)(g − mean(g) − x̂·mean(g·x̂)).
            row.iter_mut().zip(&gamma).for_each(|(v, &g)| *v *= g);
            let m1 = sum(row) / dn;
            let m2 = sum_by(row, xh, |a, b| a * b) / dn;
            row.iter_mut().zip(xh).for_each(|(v, &h)| *v = is * (*v - m1 - h * m2));
        }
        Ok(dy)
    }

    fn params(&mut self) -> Vec<(&'static str, &mut Param<T>)> {
        vec![("weight", &mut self.weight), ("bias", &mut self.bias)]
    }
}

#[cfg(test)]
mod tests {
    use super::super::gradcheck::check_layer;
    use super::*;

    #[test]
    fn gradients_match_finite_differences() {
        check_layer(Box::new(LayerNorm::<f64>::new(6, 1e-5).unwrap()), &[3, 6]);
        check_layer(Box::new(LayerNorm::<f64>::new(4, 1e-5).unwrap()), &[2, 3, 4]);
    }
}
