//! `hydrant_train_params`: how a trainer trains, and its conversion to [`TrainOptions`].

use crate::error::{guard_value, Failure, FfiResult};
use crate::ptr;
use hydrant::train::{Alternation, EarlyStopping, OptimizerSpec, Schedule, Weighting};
use hydrant::TrainOptions;

/// An optimizer: one of the HYDRANT_OPTIMIZER_* values.
pub type hydrant_optimizer = i32;
/// SGD (PyTorch `torch.optim.SGD`): `momentum`, `dampening`, `nesterov`, `weight_decay`.
pub const HYDRANT_OPTIMIZER_SGD: hydrant_optimizer = 0;
/// AdamW (PyTorch `torch.optim.AdamW`): `beta1`, `beta2`, `eps`, `weight_decay`.
pub const HYDRANT_OPTIMIZER_ADAMW: hydrant_optimizer = 1;

/// A learning-rate schedule: one of the HYDRANT_SCHEDULE_* values.
pub type hydrant_schedule = i32;
/// The base rate throughout.
pub const HYDRANT_SCHEDULE_CONSTANT: hydrant_schedule = 0;
/// The rate times `step_gamma` every `step_every_epochs` epochs (PyTorch `StepLR`).
pub const HYDRANT_SCHEDULE_STEP: hydrant_schedule = 1;
/// Cosine annealing from the base rate to `min_lr` over the steps after warm-up.
pub const HYDRANT_SCHEDULE_COSINE: hydrant_schedule = 2;

/// How the losses of several heads trained together combine: one of the HYDRANT_WEIGHTING_*
/// values.
pub type hydrant_weighting = i32;
/// Fixed weights: `static_weights` (or 1 for every head).
pub const HYDRANT_WEIGHTING_STATIC: hydrant_weighting = 0;
/// Homoscedastic-uncertainty weighting (a learned log-variance per head).
pub const HYDRANT_WEIGHTING_UNCERTAINTY: hydrant_weighting = 1;
/// Dynamic weight averaging with temperature `dwa_temperature`.
pub const HYDRANT_WEIGHTING_DWA: hydrant_weighting = 2;
/// GradNorm with `gradnorm_alpha` and weight learning rate `gradnorm_lr`.
pub const HYDRANT_WEIGHTING_GRADNORM: hydrant_weighting = 3;
/// One head per step, heads in turn.
pub const HYDRANT_WEIGHTING_ROUND_ROBIN: hydrant_weighting = 4;
/// One head per step, drawn in proportion to its remaining batches.
pub const HYDRANT_WEIGHTING_PROPORTIONAL: hydrant_weighting = 5;

/// How a trainer trains. Start from hydrant_train_params_default() and change the fields needed;
/// fields may be added at the end when HYDRANT_ABI_VERSION changes. Pointers in it are read only
/// while the call that takes the parameters runs.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hydrant_train_params {
    /// Epochs that hydrant_trainer_fit() runs when asked for 0 (default 10); the learning-rate
    /// schedule spans this many epochs.
    pub epochs: u32,
    /// Samples per optimizer step (default 32).
    pub batch_size: u32,
    /// Non-zero (default 1): shuffle the samples every epoch; 0: batches follow sample order.
    pub shuffle: i32,
    /// Seed of the shuffling, the validation split and dropout (default 0).
    pub seed: u64,
    /// Base learning rate (default 0.01).
    pub lr: f32,
    /// HYDRANT_OPTIMIZER_SGD (default) or HYDRANT_OPTIMIZER_ADAMW.
    pub optimizer: hydrant_optimizer,
    /// SGD momentum in [0, 1) (default 0.9).
    pub momentum: f32,
    /// SGD dampening in [0, 1] (default 0).
    pub dampening: f32,
    /// Non-zero: Nesterov momentum (SGD; needs momentum > 0 and no dampening). Default 0.
    pub nesterov: i32,
    /// Weight decay (SGD: L2 added to the gradient; AdamW: decoupled). Negative (the default)
    /// means the optimizer's own default: 0 for SGD, 0.01 for AdamW.
    pub weight_decay: f32,
    /// AdamW first-moment decay in [0, 1) (default 0.9).
    pub beta1: f32,
    /// AdamW second-moment decay in [0, 1) (default 0.999).
    pub beta2: f32,
    /// AdamW denominator term, > 0 (default 1e-8).
    pub eps: f32,
    /// HYDRANT_SCHEDULE_CONSTANT (default), HYDRANT_SCHEDULE_STEP or HYDRANT_SCHEDULE_COSINE.
    pub schedule: hydrant_schedule,
    /// Step schedule: epochs between decays, ≥ 1 (default 10).
    pub step_every_epochs: u32,
    /// Step schedule: factor per decay (default 0.1).
    pub step_gamma: f32,
    /// Cosine schedule: final learning rate (default 0).
    pub min_lr: f32,
    /// Linear warm-up steps before the schedule (default 0).
    pub warmup_steps: u32,
    /// Clip the joint gradient norm of all heads to this; 0 (the default) does not clip.
    pub clip_grad_norm: f32,
    /// One of the HYDRANT_WEIGHTING_* values (default HYDRANT_WEIGHTING_STATIC).
    pub weighting: hydrant_weighting,
    /// Static weighting: one weight (finite, ≥ 0) per trainer head, in head order; NULL (the
    /// default) weighs every head 1.
    pub static_weights: *const f32,
    /// Number of values at `static_weights` (default 0).
    pub n_static_weights: usize,
    /// DWA temperature, > 0 (default 2).
    pub dwa_temperature: f32,
    /// GradNorm restoring-force exponent (default 1.5).
    pub gradnorm_alpha: f32,
    /// GradNorm learning rate of the weights, > 0 (default 0.025).
    pub gradnorm_lr: f32,
    /// Fraction of the samples held out for validation, in [0, 1) (default 0: none).
    pub validation_fraction: f32,
    /// Early stopping: stop after this many epochs without a lower validation loss; 0 (the
    /// default) never stops early. Needs a validation fraction.
    pub early_stopping_patience: u32,
    /// Early stopping: the smallest decrease that counts as lower (default 0).
    pub early_stopping_min_delta: f64,
    /// Early stopping: non-zero (default 1) puts back the weights of the best epoch at the end.
    pub early_stopping_restore_best: i32,
    /// Non-zero: BatchNorm layers keep their running statistics (and normalise with them) while
    /// training. Default 0.
    pub frozen_batchnorm: i32,
    /// Training threads; 0 (the default) means one per available core.
    pub threads: u32,
    /// Bytes of cached trunk features held in memory before the cache moves to a memory-mapped
    /// file; 0 (the default) means 1 GiB.
    pub memory_budget: u64,
    /// Folder for that file (NULL, the default: the system's temporary folder).
    pub cache_dir: *const std::ffi::c_char,
}

pub(crate) const DEFAULT_TRAIN_PARAMS: hydrant_train_params = hydrant_train_params {
    epochs: 10,
    batch_size: 32,
    shuffle: 1,
    seed: 0,
    lr: 0.01,
    optimizer: HYDRANT_OPTIMIZER_SGD,
    momentum: 0.9,
    dampening: 0.0,
    nesterov: 0,
    weight_decay: -1.0,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    schedule: HYDRANT_SCHEDULE_CONSTANT,
    step_every_epochs: 10,
    step_gamma: 0.1,
    min_lr: 0.0,
    warmup_steps: 0,
    clip_grad_norm: 0.0,
    weighting: HYDRANT_WEIGHTING_STATIC,
    static_weights: std::ptr::null(),
    n_static_weights: 0,
    dwa_temperature: 2.0,
    gradnorm_alpha: 1.5,
    gradnorm_lr: 0.025,
    validation_fraction: 0.0,
    early_stopping_patience: 0,
    early_stopping_min_delta: 0.0,
    early_stopping_restore_best: 1,
    frozen_batchnorm: 0,
    threads: 0,
    memory_budget: 0,
    cache_dir: std::ptr::null(),
};

/// The default training parameters: SGD with momentum 0.9, learning rate 0.01, batches of 32,
/// 10 epochs, shuffled with seed 0, constant rate, static weights of 1, no validation split.
#[no_mangle]
pub extern "C" fn hydrant_train_params_default() -> hydrant_train_params {
    guard_value(DEFAULT_TRAIN_PARAMS, || Ok(DEFAULT_TRAIN_PARAMS))
}

fn optimizer(p: &hydrant_train_params) -> FfiResult<OptimizerSpec> {
    let decay = |default: f32| if p.weight_decay < 0.0 { default } else { p.weight_decay };
    Ok(match p.optimizer {
        HYDRANT_OPTIMIZER_SGD => OptimizerSpec::Sgd {
            momentum: p.momentum,
            dampening: p.dampening,
            nesterov: p.nesterov != 0,
            weight_decay: decay(0.0),
        },
        HYDRANT_OPTIMIZER_ADAMW => OptimizerSpec::AdamW {
            beta1: p.beta1,
            beta2: p.beta2,
            eps: p.eps,
            weight_decay: decay(0.01),
        },
        other => return Err(Failure::invalid(format!("params.optimizer = {other}: unknown"))),
    })
}

fn schedule(p: &hydrant_train_params) -> FfiResult<Schedule> {
    Ok(match p.schedule {
        HYDRANT_SCHEDULE_CONSTANT => Schedule::Constant,
        HYDRANT_SCHEDULE_STEP => {
            Schedule::Step { every_epochs: p.step_every_epochs as usize, gamma: p.step_gamma }
        }
        HYDRANT_SCHEDULE_COSINE => Schedule::Cosine { min_lr: p.min_lr },
        other => return Err(Failure::invalid(format!("params.schedule = {other}: unknown"))),
    })
}

/// # Safety
/// `p.static_weights` is NULL or `p.n_static_weights` floats.
unsafe fn weighting(p: &hydrant_train_params) -> FfiResult<Weighting> {
    Ok(match p.weighting {
        HYDRANT_WEIGHTING_STATIC => {
            // SAFETY: forwarded caller contract.
            let w = unsafe { ptr::slice(p.static_weights, p.n_static_weights, "static_weights")? };
            Weighting::Static { weights: w.to_vec() }
        }
        HYDRANT_WEIGHTING_UNCERTAINTY => Weighting::Uncertainty,
        HYDRANT_WEIGHTING_DWA => Weighting::Dwa { temperature: p.dwa_temperature },
        HYDRANT_WEIGHTING_GRADNORM => {
            Weighting::GradNorm { alpha: p.gradnorm_alpha, lr: p.gradnorm_lr }
        }
        HYDRANT_WEIGHTING_ROUND_ROBIN => Weighting::Alternating { order: Alternation::RoundRobin },
        HYDRANT_WEIGHTING_PROPORTIONAL => {
            Weighting::Alternating { order: Alternation::Proportional }
        }
        other => return Err(Failure::invalid(format!("params.weighting = {other}: unknown"))),
    })
}

/// Converts C training parameters (the trainer checks their ranges when it is made).
///
/// # Safety
/// The pointers in `p` are NULL or valid as documented on [`hydrant_train_params`].
pub(crate) unsafe fn train_options(p: &hydrant_train_params) -> FfiResult<TrainOptions> {
    if p.clip_grad_norm < 0.0 || p.clip_grad_norm.is_nan() {
        return Err(Failure::invalid(format!(
            "params.clip_grad_norm = {}: must be > 0, or 0 for no clipping",
            p.clip_grad_norm
        )));
    }
    let cache_dir = match p.cache_dir.is_null() {
        true => None,
        // SAFETY: a C string (caller contract).
        false => Some(unsafe { ptr::string(p.cache_dir, "cache_dir")? }.into()),
    };
    Ok(TrainOptions {
        epochs: p.epochs as usize,
        batch_size: p.batch_size as usize,
        shuffle: p.shuffle != 0,
        seed: p.seed,
        lr: p.lr,
        optimizer: optimizer(p)?,
        schedule: schedule(p)?,
        warmup_steps: p.warmup_steps as usize,
        clip_grad_norm: (p.clip_grad_norm > 0.0).then_some(p.clip_grad_norm),
        // SAFETY: forwarded caller contract.
        weighting: unsafe { weighting(p)? },
        validation_fraction: p.validation_fraction,
        early_stopping: (p.early_stopping_patience > 0).then_some(EarlyStopping {
            patience: p.early_stopping_patience as usize,
            min_delta: p.early_stopping_min_delta,
            restore_best: p.early_stopping_restore_best != 0,
        }),
        frozen_batchnorm: p.frozen_batchnorm != 0,
        threads: p.threads as usize,
        memory_budget: match p.memory_budget {
            0 => TrainOptions::default().memory_budget,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        },
        cache_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_runtime_defaults() {
        // SAFETY: the default parameters hold no pointers.
        let options = unsafe { train_options(&hydrant_train_params_default()) }.unwrap();
        assert_eq!(options, TrainOptions::default());
    }

    #[test]
    fn each_choice_converts() {
        let d = DEFAULT_TRAIN_PARAMS;
        let weights = [0.5f32, 2.0];
        let p = hydrant_train_params {
            optimizer: HYDRANT_OPTIMIZER_ADAMW,
            schedule: HYDRANT_SCHEDULE_STEP,
            step_every_epochs: 3,
            step_gamma: 0.5,
            static_weights: weights.as_ptr(),
            n_static_weights: 2,
            clip_grad_norm: 1.0,
            early_stopping_patience: 2,
            early_stopping_min_delta: 1e-3,
            validation_fraction: 0.2,
            memory_budget: 1234,
            cache_dir: c"/tmp".as_ptr(),
            ..d
        };
        // SAFETY: the pointers are live for the call.
        let o = unsafe { train_options(&p) }.unwrap();
        assert_eq!(o.optimizer, OptimizerSpec::adamw(0.01));
        assert_eq!(o.schedule, Schedule::Step { every_epochs: 3, gamma: 0.5 });
        assert_eq!(o.weighting, Weighting::Static { weights: weights.to_vec() });
        assert_eq!(o.clip_grad_norm, Some(1.0));
        assert_eq!(
            o.early_stopping,
            Some(EarlyStopping { patience: 2, min_delta: 1e-3, restore_best: true })
        );
        assert_eq!((o.memory_budget, o.cache_dir), (1234, Some("/tmp".into())));
        let sgd = hydrant_train_params { nesterov: 1, weight_decay: 0.1, ..d };
        // SAFETY: no pointers.
        let o = unsafe { train_options(&sgd) }.unwrap();
        let want =
            OptimizerSpec::Sgd { momentum: 0.9, dampening: 0.0, nesterov: true, weight_decay: 0.1 };
        assert_eq!(o.optimizer, want);
        for (w, want) in [
            (HYDRANT_WEIGHTING_UNCERTAINTY, Weighting::Uncertainty),
            (HYDRANT_WEIGHTING_DWA, Weighting::Dwa { temperature: 2.0 }),
            (HYDRANT_WEIGHTING_GRADNORM, Weighting::GradNorm { alpha: 1.5, lr: 0.025 }),
            (
                HYDRANT_WEIGHTING_PROPORTIONAL,
                Weighting::Alternating { order: Alternation::Proportional },
            ),
        ] {
            // SAFETY: no pointers.
            let o = unsafe { train_options(&hydrant_train_params { weighting: w, ..d }) };
            assert_eq!(o.unwrap().weighting, want);
        }
    }

    #[test]
    fn unknown_values_are_named() {
        let d = DEFAULT_TRAIN_PARAMS;
        for (p, what) in [
            (hydrant_train_params { optimizer: 7, ..d }, "params.optimizer = 7"),
            (hydrant_train_params { schedule: -1, ..d }, "params.schedule = -1"),
            (hydrant_train_params { weighting: 9, ..d }, "params.weighting = 9"),
            (hydrant_train_params { clip_grad_norm: -1.0, ..d }, "params.clip_grad_norm = -1"),
            (hydrant_train_params { n_static_weights: 2, ..d }, "static_weights is NULL"),
        ] {
            // SAFETY: no pointers but the NULL one checked.
            let e = unsafe { train_options(&p) }.unwrap_err();
            assert!(e.message.contains(what), "{}", e.message);
        }
    }
}
