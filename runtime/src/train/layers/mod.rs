//! The trainable layer vocabulary: one layer per file, `forward` and `backward` side by side.
//!
//! A layer caches what its backward needs during a training forward pass; `backward` takes the
//! gradient of the loss with respect to the layer's output, **adds** the gradients of its
//! parameters into their [`Param::grad`], and returns the gradient with respect to its input.

mod activation;
mod batchnorm;
mod conv2d;
mod dropout;
mod layernorm;
mod linear;
mod pool;
mod reshape;
mod upsample;

pub use activation::{Activation, ActivationKind};
pub use batchnorm::BatchNorm2d;
pub use conv2d::Conv2d;
pub use dropout::Dropout;
pub use layernorm::LayerNorm;
pub use linear::Linear;
pub use pool::{GlobalAvgPool, MaxPool2d};
pub use reshape::{Flatten, Softmax};
pub use upsample::Upsample2x;

use super::array::Array;
use super::real::Real;
use super::spec::LayerSpec;
use crate::error::{Error, Result};
use rand_chacha::ChaCha8Rng;

/// A learnable tensor and the gradient accumulated for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Param<T> {
    /// Current value.
    pub value: Array<T>,
    /// Accumulated gradient (same shape), zeroed by the trainer before each step.
    pub grad: Array<T>,
}

impl<T: Real> Param<T> {
    /// A parameter with a zero gradient.
    pub fn new(value: Array<T>) -> Param<T> {
        let grad = value.zeros_like();
        Param { value, grad }
    }
}

/// How a forward pass runs.
#[derive(Debug)]
pub struct Pass<'a> {
    /// Training (caches for backward, dropout active, batch statistics) or inference.
    pub training: bool,
    /// In training, keep BatchNorm's running statistics fixed and normalise with them.
    pub frozen_batchnorm: bool,
    /// Randomness for dropout.
    pub rng: &'a mut ChaCha8Rng,
}

/// One layer of a trainable head.
pub trait Layer<T: Real>: Send + Sync {
    /// The output shape for an input shape, or an error naming the mismatch.
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>>;
    /// Computes the output; in training, caches what [`Layer::backward`] needs.
    fn forward(&mut self, x: Array<T>, pass: &mut Pass) -> Result<Array<T>>;
    /// Adds parameter gradients and returns the gradient with respect to the input.
    fn backward(&mut self, dy: Array<T>) -> Result<Array<T>>;
    /// Adds parameter gradients only, for the lowest layer with weights, whose input gradient
    /// nobody needs (the trunk is frozen); layers skip computing it where they can.
    fn backward_params(&mut self, dy: Array<T>) -> Result<()> {
        self.backward(dy).map(drop)
    }
    /// Learnable tensors, by PyTorch `state_dict` name (`weight`, `bias`).
    fn params(&mut self) -> Vec<(&'static str, &mut Param<T>)> {
        Vec::new()
    }
    /// Non-learned state, by PyTorch name (`running_mean`, `running_var`).
    fn buffers(&mut self) -> Vec<(&'static str, &mut Array<T>)> {
        Vec::new()
    }
    /// Integer state, by PyTorch name (`num_batches_tracked`).
    fn counters(&mut self) -> Vec<(&'static str, &mut i64)> {
        Vec::new()
    }
}

/// Builds a layer from its description, with zero parameters (the caller loads or initialises
/// them).
pub fn build<T: Real>(spec: &LayerSpec) -> Result<Box<dyn Layer<T>>> {
    spec.validate()?;
    Ok(match *spec {
        LayerSpec::Linear { in_features, out_features, bias } => {
            Box::new(Linear::new(in_features, out_features, bias)?)
        }
        LayerSpec::Conv2d {
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
        } => Box::new(Conv2d::new(
            conv2d::Geometry {
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding,
                dilation,
                groups,
            },
            bias,
        )?),
        LayerSpec::BatchNorm2d { num_features, eps, momentum } => {
            Box::new(BatchNorm2d::new(num_features, eps, momentum)?)
        }
        LayerSpec::LayerNorm { normalized_shape, eps } => {
            Box::new(LayerNorm::new(normalized_shape, eps)?)
        }
        LayerSpec::Relu => Box::new(Activation::new(ActivationKind::Relu)),
        LayerSpec::LeakyRelu { negative_slope } => {
            Box::new(Activation::new(ActivationKind::LeakyRelu(negative_slope)))
        }
        LayerSpec::Gelu => Box::new(Activation::new(ActivationKind::Gelu)),
        LayerSpec::Silu => Box::new(Activation::new(ActivationKind::Silu)),
        LayerSpec::Sigmoid => Box::new(Activation::new(ActivationKind::Sigmoid)),
        LayerSpec::Tanh => Box::new(Activation::new(ActivationKind::Tanh)),
        LayerSpec::Dropout { p } => Box::new(Dropout::new(p)),
        LayerSpec::Flatten => Box::new(Flatten::default()),
        LayerSpec::GlobalAvgPool { keep_dims } => Box::new(GlobalAvgPool::new(keep_dims)),
        LayerSpec::MaxPool2d { kernel_size, stride, padding } => {
            Box::new(MaxPool2d::new(kernel_size, stride.unwrap_or(kernel_size), padding))
        }
        LayerSpec::Upsample2x { mode } => Box::new(Upsample2x::new(mode)),
        LayerSpec::Softmax { dim } => Box::new(Softmax::new(dim)),
    })
}

/// The error for an input whose shape a layer cannot take.
pub(crate) fn shape_error(layer: &str, expected: &str, got: &[usize]) -> Error {
    Error::BadTensor(format!("{layer}: expected input {expected}, got shape {got:?}"))
}

/// The error for `backward` called without a training forward pass before it.
pub(crate) fn no_forward(layer: &str) -> Error {
    Error::InvalidArgument(format!("{layer}: backward called without a training forward pass"))
}

/// The error for a gradient whose shape is not the layer's output shape.
pub(crate) fn grad_shape(layer: &str, expected: &[usize], got: &[usize]) -> Error {
    Error::BadTensor(format!("{layer}: output gradient has shape {got:?}, expected {expected:?}"))
}

#[cfg(test)]
pub(crate) mod gradcheck;
