//! Element-wise activations: ReLU, LeakyReLU, GELU (exact), SiLU, Sigmoid, Tanh.

use super::{grad_shape, no_forward, Layer, Pass};
use crate::error::Result;
use crate::train::array::Array;
use crate::train::real::Real;

/// Which element-wise function an [`Activation`] applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ActivationKind {
    /// `max(x, 0)`.
    Relu,
    /// `x` when positive, else slope·`x`.
    LeakyRelu(f32),
    /// `x·Φ(x)` with the exact normal CDF.
    Gelu,
    /// `x·σ(x)`.
    Silu,
    /// `σ(x) = 1 / (1 + e^-x)`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
}

fn sigmoid<T: Real>(x: T) -> T {
    T::one() / (T::one() + (-x).exp())
}

impl ActivationKind {
    fn name(self) -> &'static str {
        match self {
            ActivationKind::Relu => "relu",
            ActivationKind::LeakyRelu(_) => "leaky_relu",
            ActivationKind::Gelu => "gelu",
            ActivationKind::Silu => "silu",
            ActivationKind::Sigmoid => "sigmoid",
            ActivationKind::Tanh => "tanh",
        }
    }

    /// The function at `x`.
    pub fn apply<T: Real>(self, x: T) -> T {
        match self {
            ActivationKind::Relu => x.max(T::zero()),
            ActivationKind::LeakyRelu(s) => {
                if x > T::zero() {
                    x
                } else {
                    x * T::of_f32(s)
                }
            }
            ActivationKind::Gelu => T::of(0.5) * x * (T::one() + (x * T::FRAC_1_SQRT_2()).erf()),
            ActivationKind::Silu => x * sigmoid(x),
            ActivationKind::Sigmoid => sigmoid(x),
            ActivationKind::Tanh => x.tanh(),
        }
    }

    /// The derivative, from the input `x` and the output `y`.
    fn derivative<T: Real>(self, x: T, y: T) -> T {
        match self {
            ActivationKind::Relu => {
                if x > T::zero() {
                    T::one()
                } else {
                    T::zero()
                }
            }
            ActivationKind::LeakyRelu(s) => {
                if x > T::zero() {
                    T::one()
                } else {
                    T::of_f32(s)
                }
            }
            ActivationKind::Gelu => {
                let cdf = T::of(0.5) * (T::one() + (x * T::FRAC_1_SQRT_2()).erf());
                let pdf = (-(x * x) * T::of(0.5)).exp() / (T::TAU()).sqrt();
                cdf + x * pdf
            }
            ActivationKind::Silu => {
                let s = sigmoid(x);
                s * (T::one() + x * (T::one() - s))
            }
            ActivationKind::Sigmoid => y * (T::one() - y),
            ActivationKind::Tanh => T::one() - y * y,
        }
    }

    /// Whether the derivative needs the input (otherwise the output suffices).
    fn needs_input(self) -> bool {
        !matches!(self, ActivationKind::Sigmoid | ActivationKind::Tanh)
    }
}

/// An element-wise activation layer.
#[derive(Debug, Clone)]
pub struct Activation<T> {
    kind: ActivationKind,
    /// The input (or, for Sigmoid/Tanh, the output) of the last training pass.
    saved: Option<Array<T>>,
}

impl<T: Real> Activation<T> {
    /// An activation layer of the given kind.
    pub fn new(kind: ActivationKind) -> Activation<T> {
        Activation { kind, saved: None }
    }
}

impl<T: Real> Layer<T> for Activation<T> {
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(input.to_vec())
    }

    fn forward(&mut self, x: Array<T>, pass: &mut Pass) -> Result<Array<T>> {
        let kind = self.kind;
        if pass.training && kind.needs_input() {
            self.saved = Some(x.clone());
        }
        let y = x.map(|v| kind.apply(v));
        if pass.training && !kind.needs_input() {
            self.saved = Some(y.clone());
        }
        Ok(y)
    }

    fn backward(&mut self, mut dy: Array<T>) -> Result<Array<T>> {
        let kind = self.kind;
        let saved = self.saved.take().ok_or_else(|| no_forward(kind.name()))?;
        if dy.shape() != saved.shape() {
            return Err(grad_shape(kind.name(), saved.shape(), dy.shape()));
        }
        let (x_or_y, needs_x) = (saved.data(), kind.needs_input());
        for (g, &s) in dy.data_mut().iter_mut().zip(x_or_y) {
            let d =
                if needs_x { kind.derivative(s, T::zero()) } else { kind.derivative(T::zero(), s) };
            *g *= d;
        }
        Ok(dy)
    }
}

#[cfg(test)]
mod tests {
    use super::super::gradcheck::check_layer;
    use super::*;

    #[test]
    fn gradients_match_finite_differences() {
        for kind in [
            ActivationKind::Relu,
            ActivationKind::LeakyRelu(0.1),
            ActivationKind::Gelu,
            ActivationKind::Silu,
            ActivationKind::Sigmoid,
            ActivationKind::Tanh,
        ] {
            check_layer(Box::new(Activation::<f64>::new(kind)), &[3, 7]);
        }
    }

    #[test]
    fn gelu_matches_known_values() {
        // Φ(1) = 0.841344746…, so GELU(1) = 0.841344746; GELU(-1) = -0.158655254.
        assert!((ActivationKind::Gelu.apply(1.0f64) - 0.841_344_746_068_543).abs() < 1e-12);
        assert!((ActivationKind::Gelu.apply(-1.0f64) + 0.158_655_253_931_457).abs() < 1e-12);
    }
}
