//! Multi-task loss weighting: how the per-task losses `L_i` combine into the loss a step
//! minimises.
//!
//! - **Static**: `Σ w_i L_i`.
//! - **Uncertainty** (Kendall et al. 2018): learned `s_i = log σ_i²`, loss `Σ ½e^(−s_i) L_i + ½s_i`;
//!   the `s_i` are optimised with the heads.
//! - **DWA** (Liu et al. 2019): `λ_i(t) = K·exp(r_i/T) / Σ_j exp(r_j/T)`, `r_i = L_i(t−1)/L_i(t−2)`
//!   from the mean training losses of the two previous epochs; `λ = 1` for the first two epochs.
//! - **GradNorm** (Chen et al. 2018), on the gradient with respect to each head's trunk features
//!   (the trunk is frozen): `G_i = ‖∂(w_i L_i)/∂f‖`, target `Ḡ·(L̃_i/mean L̃)^α` with
//!   `L̃_i = L_i/L_i(0)`; `w` follows the gradient of `Σ |G_i − target_i|` and is renormalised
//!   to sum to K.
//! - **Alternating**: one task per step, round-robin or in proportion to each task's data.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Which task an alternating schedule trains at each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Alternation {
    /// Tasks in turn.
    #[default]
    RoundRobin,
    /// Tasks drawn at random in proportion to their remaining batches.
    Proportional,
}

/// A multi-task weighting strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Weighting {
    /// Fixed weights, one per head (empty: all 1).
    Static {
        /// The weights.
        #[serde(default)]
        weights: Vec<f32>,
    },
    /// Homoscedastic-uncertainty weighting.
    Uncertainty,
    /// Dynamic weight averaging.
    Dwa {
        /// Temperature T.
        #[serde(default = "two")]
        temperature: f32,
    },
    /// Gradient normalisation.
    GradNorm {
        /// Restoring-force exponent α.
        #[serde(default = "alpha")]
        alpha: f32,
        /// Learning rate of the weights.
        #[serde(default = "weight_lr")]
        lr: f32,
    },
    /// One task per step.
    Alternating {
        /// How the task is chosen.
        #[serde(default)]
        order: Alternation,
    },
}

impl Default for Weighting {
    fn default() -> Weighting {
        Weighting::Static { weights: Vec::new() }
    }
}

fn two() -> f32 {
    2.0
}
fn alpha() -> f32 {
    1.5
}
fn weight_lr() -> f32 {
    0.025
}

impl Weighting {
    /// Checks the parameters against the number of tasks.
    pub fn validate(&self, tasks: usize) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(format!("weighting: {m}")));
        match self {
            Weighting::Static { weights } if !weights.is_empty() && weights.len() != tasks => {
                bad(format!("{} static weights for {tasks} heads", weights.len()))
            }
            Weighting::Static { weights }
                if weights.iter().any(|w| !(w.is_finite() && *w >= 0.0)) =>
            {
                bad("static weights must be finite and ≥ 0".into())
            }
            Weighting::Dwa { temperature } if !crate::train::spec::is_positive(*temperature) => {
                bad(format!("DWA temperature {temperature} must be > 0"))
            }
            Weighting::GradNorm { alpha, lr } if !(alpha.is_finite() && *lr > 0.0) => {
                bad(format!("GradNorm alpha {alpha} and lr {lr}"))
            }
            _ => Ok(()),
        }
    }

    /// Whether the strategy needs the gradient with respect to the trunk features.
    pub fn needs_feature_grads(&self) -> bool {
        matches!(self, Weighting::GradNorm { .. })
    }
}

/// The evolving state of a weighting strategy (saved in checkpoints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightState {
    /// The strategy.
    pub kind: Weighting,
    /// Current loss multipliers (static, DWA, GradNorm), one per task.
    pub weights: Vec<f32>,
    /// Uncertainty weighting's `s_i = log σ_i²`.
    pub log_vars: Vec<f32>,
    /// Mean training loss per task of every finished epoch.
    pub history: Vec<Vec<f64>>,
    /// GradNorm's first-step losses `L_i(0)`.
    pub initial: Option<Vec<f64>>,
}

impl WeightState {
    /// The initial state for `tasks` tasks.
    pub fn new(kind: Weighting, tasks: usize) -> Result<WeightState> {
        kind.validate(tasks)?;
        let weights = match &kind {
            Weighting::Static { weights } if !weights.is_empty() => weights.clone(),
            _ => vec![1.0; tasks],
        };
        let log_vars = if kind == Weighting::Uncertainty { vec![0.0; tasks] } else { Vec::new() };
        Ok(WeightState { kind, weights, log_vars, history: Vec::new(), initial: None })
    }

    /// Called before each epoch: DWA recomputes its weights from the loss history.
    pub fn start_epoch(&mut self) {
        if let Weighting::Dwa { temperature } = self.kind {
            let k = self.weights.len();
            if let [.., prev, last] = self.history.as_slice() {
                let r: Vec<f64> =
                    (0..k).map(|i| last[i] / prev[i].max(f64::MIN_POSITIVE)).collect();
                let e: Vec<f64> = r.iter().map(|ri| (ri / temperature as f64).exp()).collect();
                let sum: f64 = e.iter().sum();
                self.weights = e.iter().map(|ei| (k as f64 * ei / sum) as f32).collect();
            } else {
                self.weights = vec![1.0; k];
            }
        }
    }

    /// The factor task `i`'s loss gradient is multiplied by.
    pub fn scale(&self, i: usize) -> f32 {
        match self.kind {
            Weighting::Uncertainty => 0.5 * (-self.log_vars[i]).exp(),
            Weighting::Alternating { .. } => 1.0,
            _ => self.weights[i],
        }
    }

    /// The combined loss of a step from the per-task losses (`None` for tasks not in the step).
    pub fn total(&self, losses: &[Option<f64>]) -> f64 {
        losses
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.map(|l| (i, l)))
            .map(|(i, l)| match self.kind {
                Weighting::Uncertainty => {
                    0.5 * (-self.log_vars[i] as f64).exp() * l + 0.5 * self.log_vars[i] as f64
                }
                _ => self.scale(i) as f64 * l,
            })
            .sum()
    }

    /// Gradients of the combined loss with respect to `log_vars` (uncertainty weighting).
    pub fn log_var_grads(&self, losses: &[Option<f64>]) -> Vec<f32> {
        self.log_vars
            .iter()
            .zip(losses)
            .map(|(&s, l)| l.map_or(0.0, |l| (0.5 - 0.5 * (-s as f64).exp() * l) as f32))
            .collect()
    }

    /// GradNorm's update from this step's losses and feature-gradient norms `G_i` (of the
    /// weighted losses); tasks absent from the step are `None`.
    pub fn gradnorm_step(&mut self, losses: &[Option<f64>], norms: &[Option<f64>]) {
        let Weighting::GradNorm { alpha, lr } = self.kind else { return };
        let k = self.weights.len();
        if losses.iter().chain(norms).any(Option::is_none) {
            return;
        }
        let l: Vec<f64> = losses.iter().map(|x| x.unwrap_or(0.0)).collect();
        let g: Vec<f64> = norms.iter().map(|x| x.unwrap_or(0.0)).collect();
        let initial = self.initial.get_or_insert_with(|| l.clone()).clone();
        let ratio: Vec<f64> = (0..k).map(|i| l[i] / initial[i].max(f64::MIN_POSITIVE)).collect();
        let mean_ratio = ratio.iter().sum::<f64>() / k as f64;
        let mean_g = g.iter().sum::<f64>() / k as f64;
        for i in 0..k {
            let target = mean_g * (ratio[i] / mean_ratio.max(f64::MIN_POSITIVE)).powf(alpha as f64);
            let w = self.weights[i] as f64;
            // ∂|G_i − target|/∂w_i with G_i = w_i·‖∂L_i/∂f‖.
            let grad = (g[i] - target).signum() * g[i] / w.max(1e-12);
            self.weights[i] = (w - lr as f64 * grad).max(1e-3) as f32;
        }
        let sum: f32 = self.weights.iter().sum();
        self.weights.iter_mut().for_each(|w| *w *= k as f32 / sum);
    }

    /// Called after each epoch with the epoch's mean training loss per task.
    pub fn end_epoch(&mut self, mean_losses: Vec<f64>) {
        self.history.push(mean_losses);
    }

    /// The weights to report for the epoch (uncertainty: `½e^(−s_i)`).
    pub fn reported(&self) -> Vec<f32> {
        (0..self.weights.len()).map(|i| self.scale(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dwa_is_one_for_two_epochs_then_follows_the_loss_ratio() {
        let mut s = WeightState::new(Weighting::Dwa { temperature: 2.0 }, 2).unwrap();
        s.start_epoch();
        assert_eq!(s.weights, [1.0, 1.0]);
        s.end_epoch(vec![1.0, 1.0]);
        s.start_epoch();
        assert_eq!(s.weights, [1.0, 1.0]);
        s.end_epoch(vec![0.5, 1.0]);
        s.start_epoch();
        // r = (0.5, 1): λ = 2·e^(r/2)/Σ.
        let (a, b) = ((0.25f64).exp(), (0.5f64).exp());
        assert!((s.weights[0] as f64 - 2.0 * a / (a + b)).abs() < 1e-6);
        assert!((s.weights.iter().sum::<f32>() - 2.0).abs() < 1e-6);
    }

    #[test]
    fn gradnorm_raises_the_weight_of_the_task_with_the_smaller_gradient() {
        let mut s = WeightState::new(Weighting::GradNorm { alpha: 1.5, lr: 0.1 }, 2).unwrap();
        s.gradnorm_step(&[Some(1.0), Some(1.0)], &[Some(0.1), Some(1.0)]);
        assert!(s.weights[0] > s.weights[1], "{:?}", s.weights);
        assert!((s.weights.iter().sum::<f32>() - 2.0).abs() < 1e-6);
    }

    #[test]
    fn uncertainty_gradients() {
        let mut s = WeightState::new(Weighting::Uncertainty, 2).unwrap();
        s.log_vars = vec![0.0, 1.0];
        let g = s.log_var_grads(&[Some(2.0), None]);
        assert!((g[0] - (0.5 - 1.0)).abs() < 1e-6 && g[1] == 0.0);
        assert!(
            (s.total(&[Some(2.0), Some(1.0)]) - (1.0 + 0.5 * (-1f64).exp() + 0.5)).abs() < 1e-9
        );
    }
}
