//! Pooling over the spatial axes of NCHW: `GlobalAvgPool` (mean over H and W) and `MaxPool2d`.

use super::{grad_shape, no_forward, shape_error, Layer, Pass};
use crate::error::{Error, Result};
use crate::train::array::Array;
use crate::train::real::{sum, Real};

/// Mean over H and W: `[N, C, H, W]` → `[N, C]` (or `[N, C, 1, 1]` keeping dimensions, as ONNX
/// `GlobalAveragePool` and `nn.AdaptiveAvgPool2d(1)` give).
#[derive(Debug, Clone)]
pub struct GlobalAvgPool {
    keep_dims: bool,
    input_shape: Option<Vec<usize>>,
}

impl GlobalAvgPool {
    /// Pooling that keeps (`[N, C, 1, 1]`) or drops (`[N, C]`) the spatial axes.
    pub fn new(keep_dims: bool) -> GlobalAvgPool {
        GlobalAvgPool { keep_dims, input_shape: None }
    }
}

impl<T: Real> Layer<T> for GlobalAvgPool {
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match *input {
            [n, c, _, _] if self.keep_dims => Ok(vec![n, c, 1, 1]),
            [n, c, _, _] => Ok(vec![n, c]),
            _ => Err(shape_error("global_avg_pool", "[N, C, H, W]", input)),
        }
    }

    fn forward(&mut self, x: Array<T>, pass: &mut Pass) -> Result<Array<T>> {
        let shape = <Self as Layer<T>>::output_shape(self, x.shape())?;
        let s = x.shape()[2] * x.shape()[3];
        let scale = T::one() / T::of(s.max(1) as f64);
        let data: Vec<T> = x.data().chunks_exact(s.max(1)).map(|p| sum(p) * scale).collect();
        if pass.training {
            self.input_shape = Some(x.shape().to_vec());
        }
        Array::new(&shape, if s == 0 { vec![T::zero(); shape.iter().product()] } else { data })
    }

    fn backward(&mut self, dy: Array<T>) -> Result<Array<T>> {
        let shape = self.input_shape.take().ok_or_else(|| no_forward("global_avg_pool"))?;
        let expected = <Self as Layer<T>>::output_shape(self, &shape)?;
        if dy.shape() != expected {
            return Err(grad_shape("global_avg_pool", &expected, dy.shape()));
        }
        let s = shape[2] * shape[3];
        let scale = T::one() / T::of(s.max(1) as f64);
        let data = dy.data().iter().flat_map(|&g| std::iter::repeat_n(g * scale, s)).collect();
        Array::new(&shape, data)
    }
}

/// Max pooling with a square window, stride and zero-free padding (padded cells never win).
#[derive(Debug, Clone)]
pub struct MaxPool2d {
    kernel: usize,
    stride: usize,
    padding: usize,
    /// Input shape and, per output element, the flat input index of its maximum.
    saved: Option<(Vec<usize>, Vec<usize>)>,
}

impl MaxPool2d {
    /// A `kernel`×`kernel` window moved by `stride`, with `padding` on each side.
    pub fn new(kernel: usize, stride: usize, padding: usize) -> MaxPool2d {
        MaxPool2d { kernel, stride, padding, saved: None }
    }

    fn out_len(&self, n: usize) -> Option<usize> {
        (n + 2 * self.padding).checked_sub(self.kernel).map(|r| r / self.stride + 1)
    }
}

impl<T: Real> Layer<T> for MaxPool2d {
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let bad = || {
            shape_error("max_pool2d", &format!("[N, C, H, W] with H, W ≥ {}", self.kernel), input)
        };
        match *input {
            [n, c, h, w] => match (self.out_len(h), self.out_len(w)) {
                (Some(ho), Some(wo)) if ho > 0 && wo > 0 => Ok(vec![n, c, ho, wo]),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }

    fn forward(&mut self, x: Array<T>, pass: &mut Pass) -> Result<Array<T>> {
        let shape = <Self as Layer<T>>::output_shape(self, x.shape())?;
        let (h, w, ho, wo) = (x.shape()[2], x.shape()[3], shape[2], shape[3]);
        let mut y = Vec::with_capacity(shape.iter().product());
        let mut arg = Vec::with_capacity(y.capacity());
        for (p, plane) in x.data().chunks_exact(h * w).enumerate() {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut best: Option<(usize, T)> = None;
                    for ky in 0..self.kernel {
                        let Some(iy) = (oy * self.stride + ky).checked_sub(self.padding) else {
                            continue;
                        };
                        if iy >= h {
                            continue;
                        }
                        for kx in 0..self.kernel {
                            let Some(ix) = (ox * self.stride + kx).checked_sub(self.padding) else {
                                continue;
                            };
                            if ix >= w {
                                continue;
                            }
                            let v = plane[iy * w + ix];
                            if best.is_none_or(|(_, b)| v > b || v.is_nan()) {
                                best = Some((iy * w + ix, v));
                            }
                        }
                    }
                    let (i, v) = best.ok_or_else(|| {
                        Error::BadTensor("max_pool2d: a window lies entirely in the padding".into())
                    })?;
                    y.push(v);
                    arg.push(p * h * w + i);
                }
            }
        }
        if pass.training {
            self.saved = Some((x.shape().to_vec(), arg));
        }
        Array::new(&shape, y)
    }

    fn backward(&mut self, dy: Array<T>) -> Result<Array<T>> {
        let (shape, arg) = self.saved.take().ok_or_else(|| no_forward("max_pool2d"))?;
        if dy.len() != arg.len() {
            let expected = <Self as Layer<T>>::output_shape(self, &shape)?;
            return Err(grad_shape("max_pool2d", &expected, dy.shape()));
        }
        let mut dx = Array::zeros(&shape)?;
        let d = dx.data_mut();
        for (&i, &g) in arg.iter().zip(dy.data()) {
            d[i] += g;
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
        check_layer(Box::new(GlobalAvgPool::new(false)), &[2, 3, 4, 5]);
        check_layer(Box::new(GlobalAvgPool::new(true)), &[2, 2, 3, 3]);
        check_layer(Box::new(MaxPool2d::new(2, 2, 0)), &[2, 2, 4, 6]);
        check_layer(Box::new(MaxPool2d::new(3, 2, 1)), &[1, 2, 5, 5]);
    }
}
