//! [`Network`]: a [`Head`] made runnable — its layers with parameters loaded, forward (training
//! or inference) and backward.

use super::array::Array;
use super::head::Head;
use super::layers::{self, Layer, Param, Pass};
use super::real::Real;
use super::spec::HeadSpec;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A head's layers, ready to run forward and backward in element type `T`.
pub struct Network<T: Real> {
    spec: HeadSpec,
    layers: Vec<Box<dyn Layer<T>>>,
}

impl<T: Real> std::fmt::Debug for Network<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network").field("head", &self.spec.name).finish_non_exhaustive()
    }
}

impl<T: Real> Network<T> {
    /// Builds the layers of `head` and loads its tensors into them.
    pub fn new(head: &Head) -> Result<Network<T>> {
        let spec = head.spec().clone();
        let mut layers: Vec<Box<dyn Layer<T>>> =
            spec.layers.iter().map(layers::build).collect::<Result<_>>()?;
        for (i, layer) in layers.iter_mut().enumerate() {
            let get = |name: &str| {
                head.tensor(&format!("{i}.{name}")).ok_or_else(|| {
                    Error::InvalidModel(format!("head `{}`: no tensor `{i}.{name}`", spec.name))
                })
            };
            for (name, p) in layer.params() {
                p.value = Array::from_tensor(get(name)?)?;
                p.grad = p.value.zeros_like();
            }
            for (name, b) in layer.buffers() {
                *b = Array::from_tensor(get(name)?)?;
            }
            for (name, c) in layer.counters() {
                *c = get(name)?.as_slice::<i64>().and_then(|v| v.first().copied()).unwrap_or(0);
            }
        }
        Ok(Network { spec, layers })
    }

    /// The architecture.
    pub fn spec(&self) -> &HeadSpec {
        &self.spec
    }

    /// The output shape for an input shape, checked layer by layer (the error names the layer).
    pub fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let mut shape = input.to_vec();
        for (i, l) in self.layers.iter().enumerate() {
            shape = l.output_shape(&shape).map_err(|e| self.at(i, e))?;
        }
        Ok(shape)
    }

    /// Runs every layer; in training, caches for [`Network::backward`].
    pub fn forward(&mut self, x: Array<T>, pass: &mut Pass) -> Result<Array<T>> {
        self.output_shape(x.shape())?;
        let mut x = x;
        for i in 0..self.layers.len() {
            x = self.layers[i].forward(x, pass).map_err(|e| self.at(i, e))?;
        }
        Ok(x)
    }

    /// The inference output (dropout off, running statistics, softmax applied).
    pub fn infer(&mut self, x: Array<T>) -> Result<Array<T>> {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        self.forward(x, &mut Pass { training: false, frozen_batchnorm: true, rng: &mut rng })
    }

    /// Back-propagates `dy` (∂loss/∂output), adding into every parameter gradient; returns
    /// ∂loss/∂input.
    pub fn backward(&mut self, dy: Array<T>) -> Result<Array<T>> {
        let mut g = dy;
        for i in (0..self.layers.len()).rev() {
            g = self.layers[i].backward(g).map_err(|e| self.at(i, e))?;
        }
        Ok(g)
    }

    /// Back-propagates `dy` into the parameter gradients only: below the lowest layer with
    /// weights nothing runs, and that layer skips its input gradient (what training a head on a
    /// frozen trunk needs).
    pub fn backward_params(&mut self, dy: Array<T>) -> Result<()> {
        let Some(lowest) = self.layers.iter_mut().position(|l| !l.params().is_empty()) else {
            return Ok(());
        };
        let mut g = dy;
        for i in (lowest + 1..self.layers.len()).rev() {
            g = self.layers[i].backward(g).map_err(|e| self.at(i, e))?;
        }
        self.layers[lowest].backward_params(g).map_err(|e| self.at(lowest, e))
    }

    /// Every learnable tensor, in a stable order (layer, then `weight` before `bias`).
    pub fn params(&mut self) -> Vec<&mut Param<T>> {
        self.layers.iter_mut().flat_map(|l| l.params().into_iter().map(|(_, p)| p)).collect()
    }

    /// Names (`<layer>.<param>`) of [`Network::params`], in the same order.
    pub fn param_names(&mut self) -> Vec<String> {
        let mut names = Vec::new();
        for (i, l) in self.layers.iter_mut().enumerate() {
            names.extend(l.params().into_iter().map(|(n, _)| format!("{i}.{n}")));
        }
        names
    }

    /// Which of [`Network::params`] take weight decay (all do, as in PyTorch by default).
    pub fn decay_mask(&mut self) -> Vec<bool> {
        vec![true; self.params().len()]
    }

    /// Zeroes every parameter gradient.
    pub fn zero_grad(&mut self) {
        for p in self.params() {
            p.grad.data_mut().iter_mut().for_each(|g| *g = T::zero());
        }
    }

    /// The current weights as a [`Head`].
    pub fn to_head(&mut self) -> Result<Head> {
        let mut tensors = Vec::new();
        for (i, layer) in self.layers.iter_mut().enumerate() {
            for (name, p) in layer.params() {
                tensors.push((format!("{i}.{name}"), p.value.to_tensor()));
            }
            for (name, b) in layer.buffers() {
                tensors.push((format!("{i}.{name}"), b.to_tensor()));
            }
            for (name, c) in layer.counters() {
                tensors.push((format!("{i}.{name}"), Tensor::new::<i64>(&[], vec![*c])?));
            }
        }
        Head::new(self.spec.clone(), tensors)
    }

    fn at(&self, i: usize, e: Error) -> Error {
        let what = format!("head `{}`, layer {i} ({})", self.spec.name, self.spec.layers[i].kind());
        match e {
            Error::BadTensor(m) => Error::BadTensor(format!("{what}: {m}")),
            Error::InvalidArgument(m) => Error::InvalidArgument(format!("{what}: {m}")),
            e => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::head::Init;
    use crate::train::spec::LayerSpec;

    fn grads(net: &mut Network<f64>, x: &Array<f64>, params_only: bool) -> Vec<Vec<f64>> {
        net.zero_grad();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut pass = Pass { training: true, frozen_batchnorm: false, rng: &mut rng };
        let y = net.forward(x.clone(), &mut pass).unwrap();
        let dy = y.map(|v| v.sin() + 0.5);
        if params_only {
            net.backward_params(dy).unwrap();
        } else {
            net.backward(dy).unwrap();
        }
        net.params().iter().map(|p| p.grad.data().to_vec()).collect()
    }

    #[test]
    fn parameter_gradients_are_the_same_without_the_input_gradient() {
        let conv = |i, o, k, p| LayerSpec::Conv2d {
            in_channels: i,
            out_channels: o,
            kernel_size: k,
            stride: 1,
            padding: p,
            dilation: 1,
            groups: 1,
            bias: true,
        };
        let heads = [
            vec![
                LayerSpec::GlobalAvgPool { keep_dims: false },
                LayerSpec::Linear { in_features: 3, out_features: 4, bias: true },
                LayerSpec::Relu,
                LayerSpec::Linear { in_features: 4, out_features: 2, bias: true },
            ],
            vec![
                conv(3, 4, 3, 1),
                LayerSpec::BatchNorm2d { num_features: 4, eps: 1e-5, momentum: 0.1 },
                LayerSpec::Relu,
                conv(4, 2, 1, 0),
            ],
        ];
        let x: Vec<f64> = (0..2 * 3 * 5 * 5).map(|i| (i as f64 * 0.37).cos()).collect();
        let x = Array::new(&[2, 3, 5, 5], x).unwrap();
        for layers in heads {
            let spec = HeadSpec::new("h", "x", layers, None);
            let head = Head::init(spec, Init::KaimingUniform, 3).unwrap();
            let mut net = Network::<f64>::new(&head).unwrap();
            let full = grads(&mut net, &x, false);
            let only = grads(&mut net, &x, true);
            assert!(full.iter().all(|g| g.iter().any(|v| *v != 0.0)));
            assert_eq!(full, only);
        }
    }
}
