//! Optimizers (SGD with momentum/Nesterov/weight decay, AdamW), learning-rate schedules and
//! gradient-norm clipping, with PyTorch's update rules so that runs are comparable step by step.

use crate::backend::cpu_ops::{multiversion, Isa};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// An optimizer and its hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerSpec {
    /// `torch.optim.SGD`.
    Sgd {
        /// Momentum factor (0 for plain SGD).
        #[serde(default)]
        momentum: f32,
        /// Dampening of the momentum.
        #[serde(default)]
        dampening: f32,
        /// Nesterov momentum.
        #[serde(default)]
        nesterov: bool,
        /// L2 penalty added to the gradient.
        #[serde(default)]
        weight_decay: f32,
    },
    /// `torch.optim.AdamW` (decoupled weight decay).
    AdamW {
        /// First-moment decay.
        #[serde(default = "beta1")]
        beta1: f32,
        /// Second-moment decay.
        #[serde(default = "beta2")]
        beta2: f32,
        /// Added to the denominator.
        #[serde(default = "adam_eps")]
        eps: f32,
        /// Decoupled weight decay.
        #[serde(default = "adamw_decay")]
        weight_decay: f32,
    },
}

fn beta1() -> f32 {
    0.9
}
fn beta2() -> f32 {
    0.999
}
fn adam_eps() -> f32 {
    1e-8
}
fn adamw_decay() -> f32 {
    0.01
}

impl OptimizerSpec {
    /// SGD with the given momentum and weight decay (no dampening, no Nesterov).
    pub fn sgd(momentum: f32, weight_decay: f32) -> OptimizerSpec {
        OptimizerSpec::Sgd { momentum, dampening: 0.0, nesterov: false, weight_decay }
    }

    /// AdamW with PyTorch's defaults and the given weight decay.
    pub fn adamw(weight_decay: f32) -> OptimizerSpec {
        OptimizerSpec::AdamW { beta1: beta1(), beta2: beta2(), eps: adam_eps(), weight_decay }
    }

    /// Checks the hyper-parameters.
    pub fn validate(&self) -> Result<()> {
        let ok = match *self {
            OptimizerSpec::Sgd { momentum, dampening, nesterov, weight_decay } => {
                (0.0..1.0).contains(&momentum)
                    && (0.0..=1.0).contains(&dampening)
                    && weight_decay >= 0.0
                    && weight_decay.is_finite()
                    && (!nesterov || (momentum > 0.0 && dampening == 0.0))
            }
            OptimizerSpec::AdamW { beta1, beta2, eps, weight_decay } => {
                (0.0..1.0).contains(&beta1)
                    && (0.0..1.0).contains(&beta2)
                    && eps > 0.0
                    && weight_decay >= 0.0
                    && weight_decay.is_finite()
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "optimizer {self:?}: momentum and betas must be in [0, 1), eps > 0, weight decay \
                 ≥ 0, and Nesterov needs momentum > 0 without dampening"
            )))
        }
    }
}

/// Per-parameter optimizer state (PyTorch's `momentum_buffer`, `exp_avg`, `exp_avg_sq`, `step`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SlotState {
    /// Updates this tensor has had (AdamW's bias correction counts per tensor, as PyTorch's).
    pub steps: u64,
    /// SGD momentum buffer, or AdamW's first moment.
    pub first: Vec<f32>,
    /// AdamW's second moment (empty for SGD).
    pub second: Vec<f32>,
}

/// One tensor to update: its slot in the optimizer, value, gradient, and weight decay flag.
#[derive(Debug)]
pub struct Update<'a> {
    /// Index of the tensor's state in [`Optimizer::slots`].
    pub slot: usize,
    /// The tensor's values, updated in place.
    pub value: &'a mut [f32],
    /// Its gradient.
    pub grad: &'a [f32],
    /// Whether weight decay applies.
    pub decay: bool,
}

/// An optimizer over a fixed list of parameter tensors (the list's order is the caller's).
#[derive(Debug, Clone, PartialEq)]
pub struct Optimizer {
    spec: OptimizerSpec,
    /// Steps taken (calls to [`Optimizer::step`]).
    pub steps: u64,
    /// One state per parameter tensor, created on its first update.
    pub slots: Vec<SlotState>,
}

impl Optimizer {
    /// A fresh optimizer for `params` parameter tensors.
    pub fn new(spec: OptimizerSpec, params: usize) -> Result<Optimizer> {
        spec.validate()?;
        Ok(Optimizer { spec, steps: 0, slots: vec![SlotState::default(); params] })
    }

    /// The hyper-parameters.
    pub fn spec(&self) -> &OptimizerSpec {
        &self.spec
    }

    /// One update with learning rate `lr` of the tensors in `params`: each entry is the slot
    /// index of the tensor, its value, its gradient, and whether it takes weight decay. Tensors
    /// not listed (no gradient this step) keep their value and state, as in PyTorch.
    pub fn step(&mut self, params: &mut [Update<'_>], lr: f32) -> Result<()> {
        self.steps += 1;
        for u in params.iter_mut() {
            let i = u.slot;
            let slots = self.slots.len();
            let slot = self.slots.get_mut(i).ok_or_else(|| {
                Error::InvalidArgument(format!("optimizer slot {i} out of range (holds {slots})"))
            })?;
            let (value, grad) = (&mut *u.value, u.grad);
            if value.len() != grad.len() {
                return Err(Error::BadTensor(format!(
                    "parameter {i}: value and gradient sizes differ"
                )));
            }
            slot.steps += 1;
            let t = slot.steps.min(i32::MAX as u64) as i32;
            match self.spec {
                OptimizerSpec::Sgd { momentum, dampening, nesterov, weight_decay } => {
                    let wd = if u.decay { weight_decay } else { 0.0 };
                    let fresh = slot.first.is_empty();
                    if momentum > 0.0 && fresh {
                        slot.first = vec![0.0; value.len()];
                    }
                    if momentum > 0.0 && slot.first.len() != value.len() {
                        return Err(Error::BadTensor(format!(
                            "parameter {i}: momentum buffer of {} values for {}",
                            slot.first.len(),
                            value.len()
                        )));
                    }
                    let sgd = Sgd { lr, momentum, dampening, nesterov, weight_decay: wd, fresh };
                    let buf = &mut slot.first[..];
                    sgd_update(Isa::best(), sgd, value, grad, buf);
                }
                OptimizerSpec::AdamW { beta1, beta2, eps, weight_decay } => {
                    if slot.first.is_empty() {
                        slot.first = vec![0.0; value.len()];
                        slot.second = vec![0.0; value.len()];
                    }
                    let wd = if u.decay { weight_decay } else { 0.0 };
                    let bc1 = 1.0 - beta1.powi(t);
                    let bc2_sqrt = (1.0 - beta2.powi(t)).sqrt();
                    let step_size = lr / bc1;
                    let n = value.len();
                    if slot.first.len() != n || slot.second.len() != n {
                        return Err(Error::BadTensor(format!(
                            "parameter {i}: moment buffers of {} and {} values for {n}",
                            slot.first.len(),
                            slot.second.len()
                        )));
                    }
                    let (first, second) = (&mut slot.first[..], &mut slot.second[..]);
                    let adam =
                        Adam { lr, weight_decay: wd, beta1, beta2, eps, bc2_sqrt, step_size };
                    adamw_update(Isa::best(), adam, value, grad, first, second);
                }
            }
        }
        Ok(())
    }
}

/// One SGD step's constants.
#[derive(Clone, Copy)]
struct Sgd {
    lr: f32,
    momentum: f32,
    dampening: f32,
    nesterov: bool,
    weight_decay: f32,
    /// The momentum buffer is new (PyTorch's first step copies the gradient into it).
    fresh: bool,
}

/// One SGD step over a parameter (`buf`: its momentum buffer, empty without momentum): one
/// loop per case, free of branches and bounds checks, so that it vectorises; the arithmetic
/// is PyTorch's, in its order.
#[inline(always)]
fn sgd_body(k: Sgd, value: &mut [f32], grad: &[f32], buf: &mut [f32]) {
    let Sgd { lr, momentum, dampening, nesterov, weight_decay: wd, fresh } = k;
    if momentum <= 0.0 {
        value.iter_mut().zip(grad).for_each(|(p, &g)| *p -= lr * (g + wd * *p));
        return;
    }
    let it = value.iter_mut().zip(grad).zip(buf.iter_mut());
    match (fresh, nesterov) {
        (true, true) => it.for_each(|((p, &g), b)| {
            let d = g + wd * *p;
            *b = d;
            *p -= lr * (d + momentum * *b);
        }),
        (true, false) => it.for_each(|((p, &g), b)| {
            let d = g + wd * *p;
            *b = d;
            *p -= lr * *b;
        }),
        (false, true) => it.for_each(|((p, &g), b)| {
            let d = g + wd * *p;
            *b = momentum * *b + (1.0 - dampening) * d;
            *p -= lr * (d + momentum * *b);
        }),
        (false, false) => it.for_each(|((p, &g), b)| {
            let d = g + wd * *p;
            *b = momentum * *b + (1.0 - dampening) * d;
            *p -= lr * *b;
        }),
    }
}

/// One AdamW step's constants.
#[derive(Clone, Copy)]
struct Adam {
    lr: f32,
    weight_decay: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    /// `√(1 − β₂ᵗ)`.
    bc2_sqrt: f32,
    /// `lr / (1 − β₁ᵗ)`.
    step_size: f32,
}

/// One AdamW step over a parameter and its two moment buffers (PyTorch's arithmetic, in its
/// order; square root and division are exact in every vector width).
#[inline(always)]
fn adamw_body(k: Adam, value: &mut [f32], grad: &[f32], first: &mut [f32], second: &mut [f32]) {
    let it = value.iter_mut().zip(grad).zip(first.iter_mut().zip(second));
    it.for_each(|((p, &g), (m, v))| {
        *p *= 1.0 - k.lr * k.weight_decay;
        *m += (g - *m) * (1.0 - k.beta1);
        *v = *v * k.beta2 + (1.0 - k.beta2) * g * g;
        let denom = v.sqrt() / k.bc2_sqrt + k.eps;
        *p -= k.step_size * *m / denom;
    });
}

multiversion! {
    /// [`sgd_body`] compiled for `isa`.
    fn sgd_update(k: Sgd, value: &mut [f32], grad: &[f32], buf: &mut [f32]) => sgd_body
}

multiversion! {
    /// [`adamw_body`] compiled for `isa`.
    fn adamw_update(
        k: Adam,
        value: &mut [f32],
        grad: &[f32],
        first: &mut [f32],
        second: &mut [f32],
    ) => adamw_body
}

/// How the learning rate changes over training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// The base rate throughout.
    #[default]
    Constant,
    /// Multiplied by `gamma` every `every_epochs` epochs (PyTorch `StepLR`).
    Step {
        /// Epochs between decays.
        every_epochs: usize,
        /// Factor per decay.
        gamma: f32,
    },
    /// Cosine annealing from the base rate to `min_lr` over the steps after warm-up.
    Cosine {
        /// Final learning rate.
        #[serde(default)]
        min_lr: f32,
    },
}

/// Learning rate at optimizer step `step` (0-based) of `total` steps, in epoch `epoch`, for base
/// rate `base`, with `warmup` linear warm-up steps (rate `base·(step+1)/warmup` during warm-up).
pub fn learning_rate(
    schedule: &Schedule,
    base: f32,
    warmup: usize,
    step: usize,
    total: usize,
    epoch: usize,
) -> f32 {
    if step < warmup {
        return base * (step + 1) as f32 / warmup as f32;
    }
    match *schedule {
        Schedule::Constant => base,
        Schedule::Step { every_epochs, gamma } => {
            base * gamma.powi((epoch / every_epochs.max(1)) as i32)
        }
        Schedule::Cosine { min_lr } => {
            let span = total.saturating_sub(warmup).max(1) as f32;
            let t = (step - warmup) as f32 / span;
            min_lr + (base - min_lr) * 0.5 * (1.0 + (std::f32::consts::PI * t.min(1.0)).cos())
        }
    }
}

/// Optimizer steps a schedule spans: the planned epochs (so that a run resumed from a
/// checkpoint follows the same curve as an uninterrupted one), or more when `done + asked`
/// epochs are more, of `epoch_steps` steps each.
pub fn schedule_steps(epoch_steps: usize, planned: usize, done: usize, asked: usize) -> usize {
    epoch_steps * planned.max(done + asked)
}

/// Scales the gradients so that their joint L2 norm is at most `max_norm` (PyTorch
/// `clip_grad_norm_`); returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [&mut [f32]], max_norm: f32) -> f32 {
    let norm =
        grads.iter().flat_map(|g| g.iter()).map(|&x| (x as f64) * (x as f64)).sum::<f64>().sqrt()
            as f32;
    if let Some(coef) = clip_coefficient(norm, max_norm) {
        grads.iter_mut().for_each(|g| g.iter_mut().for_each(|x| *x *= coef));
    }
    norm
}

/// The factor that brings gradients of joint L2 norm `norm` within `max_norm` (PyTorch's
/// `max_norm / (norm + 1e-6)`), or `None` when they are within it already.
pub fn clip_coefficient(norm: f32, max_norm: f32) -> Option<f32> {
    let coef = max_norm / (norm + 1e-6);
    (coef < 1.0).then_some(coef)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgd_momentum_follows_the_pytorch_recurrence() {
        // p=1, g=0.5 each step, μ=0.9, lr=0.1: b1=0.5, b2=0.95; p = 1 − 0.05 − 0.095.
        let mut opt = Optimizer::new(OptimizerSpec::sgd(0.9, 0.0), 1).unwrap();
        let mut p = [1.0f32];
        for _ in 0..2 {
            let mut u = [Update { slot: 0, value: &mut p[..], grad: &[0.5], decay: true }];
            opt.step(&mut u, 0.1).unwrap();
        }
        assert!((p[0] - (1.0 - 0.05 - 0.095)).abs() < 1e-6, "{}", p[0]);
    }

    #[test]
    fn adamw_first_step_moves_by_lr() {
        // After one step m̂ = g and v̂ = g², so p ← p(1 − lr·wd) − lr·g/(|g| + eps).
        let mut opt = Optimizer::new(OptimizerSpec::adamw(0.1), 1).unwrap();
        let mut p = [2.0f32];
        opt.step(&mut [Update { slot: 0, value: &mut p[..], grad: &[-3.0], decay: true }], 0.01)
            .unwrap();
        assert!((p[0] - (2.0 * (1.0 - 0.001) + 0.01)).abs() < 1e-6, "{}", p[0]);
    }

    #[test]
    fn schedules_and_clipping() {
        let cos = Schedule::Cosine { min_lr: 0.0 };
        assert_eq!(learning_rate(&cos, 1.0, 2, 0, 12, 0), 0.5);
        assert_eq!(learning_rate(&cos, 1.0, 2, 2, 12, 0), 1.0);
        assert!(learning_rate(&cos, 1.0, 2, 12, 12, 3).abs() < 1e-6);
        let step = Schedule::Step { every_epochs: 2, gamma: 0.5 };
        assert_eq!(learning_rate(&step, 1.0, 0, 40, 100, 5), 0.25);
        let (mut a, mut b) = (vec![3.0f32], vec![4.0f32]);
        let norm = clip_grad_norm(&mut [&mut a, &mut b], 1.0);
        assert_eq!(norm, 5.0);
        assert!(((a[0] * a[0] + b[0] * b[0]).sqrt() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn bad_hyper_parameters_are_refused() {
        assert!(Optimizer::new(OptimizerSpec::sgd(1.5, 0.0), 1).is_err());
        let nesterov =
            OptimizerSpec::Sgd { momentum: 0.0, dampening: 0.0, nesterov: true, weight_decay: 0.0 };
        assert!(nesterov.validate().is_err());
    }
}
