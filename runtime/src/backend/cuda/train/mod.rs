//! Head training on the GPU: [`GpuNetwork`] (a head's layers on the device, forward and
//! backward), [`GpuTrainer`] (training steps: forward, softmax + cross-entropy in one kernel —
//! other losses on the host with the CPU's formulas —, backward, gradient clipping, AdamW or SGD
//! in one kernel each), with the features on the device when they fit a budget, else gathered
//! per batch from a host [`FeatureCache`] and uploaded.
//!
//! The trainer reuses the CPU trainer's facts: [`TrainOptions`] (checked by
//! [`TrainOptions::validate`]), the learning-rate schedule ([`learning_rate`] over
//! [`schedule_steps`]), the clipping
//! rule ([`clip_coefficient`]), the losses ([`loss::compute`]), the metrics, and the same
//! sequence of random draws (one shuffle per epoch, one dropout seed per step), so that with the
//! same options it visits the same batches in the same order. It trains one head; what it leaves
//! to the CPU trainer is named by [`train_plan::unsupported_options`](super::train_plan).

pub mod network;
pub mod ops;

pub use network::{DeviceParam, GpuNetwork, Mode};
pub use ops::DeviceArray;

use super::context::GpuContext;
use super::train_plan as tp;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use crate::train::array::Array;
use crate::train::data::LabelStore;
use crate::train::loss::{self, Target};
use crate::train::metrics::MetricAccumulator;
use crate::train::optim::{clip_coefficient, learning_rate, schedule_steps};
use crate::train::{
    EpochReport, FeatureCache, Head, Labels, OptimizerSpec, TaskSpec, TrainOptions,
};
use ops::Buf;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// Where the features live.
enum Features {
    /// Every row on the device (`rows × row_len` f32).
    Device(Buf),
    /// On the host; batches are gathered and uploaded per step.
    Host(FeatureCache),
    /// Nothing added yet.
    Empty,
}

/// Optimizer state of one parameter tensor on the device.
#[derive(Default)]
struct Slot {
    steps: u64,
    first: Option<Buf>,
    second: Option<Buf>,
}

/// Trains one head on the GPU.
pub struct GpuTrainer {
    net: GpuNetwork,
    task: TaskSpec,
    options: TrainOptions,
    labels: LabelStore,
    features: Features,
    device_budget: usize,
    row_shape: Vec<usize>,
    samples: usize,
    slots: Vec<Slot>,
    rng: ChaCha8Rng,
    epoch: usize,
    step: usize,
}

impl std::fmt::Debug for GpuTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuTrainer")
            .field("head", &self.net.spec().name)
            .field("samples", &self.samples)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl GpuTrainer {
    /// A trainer for `head` on `gpu`; features up to `device_budget` bytes are held on the device.
    pub fn new(
        gpu: Arc<GpuContext>,
        head: &Head,
        options: TrainOptions,
        device_budget: usize,
    ) -> Result<GpuTrainer> {
        options.validate(1)?;
        if let Some(why) = tp::unsupported_options(&options, 1) {
            return Err(Error::InvalidArgument(why));
        }
        let task = head.spec().task.clone().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "head `{}` has no task: give it one (loss and classes or outputs) before training",
                head.name()
            ))
        })?;
        let net = GpuNetwork::new(gpu, head)?;
        let slots = net.params().iter().map(|_| Slot::default()).collect();
        Ok(GpuTrainer {
            labels: LabelStore::new(&task),
            task,
            rng: ChaCha8Rng::seed_from_u64(options.seed),
            options,
            net,
            features: Features::Empty,
            device_budget,
            row_shape: Vec::new(),
            samples: 0,
            slots,
            epoch: 0,
            step: 0,
        })
    }

    /// Sets the samples: the trunk features the head reads (f32, axis 0 the samples) and their
    /// labels. Called once.
    pub fn add_features(&mut self, features: &Tensor, labels: Labels) -> Result<()> {
        if !matches!(self.features, Features::Empty) {
            return Err(Error::InvalidArgument("the GPU trainer takes its samples once".into()));
        }
        let values = features.as_slice::<f32>().ok_or_else(|| {
            Error::BadTensor(format!("features must be f32, got {}", features.dtype()))
        })?;
        let shape = features.shape();
        let n = shape.first().copied().unwrap_or(0);
        if n == 0 || labels.rows() != n {
            return Err(Error::BadTensor(format!(
                "{n} feature rows and {} label rows (both must be equal and > 0)",
                labels.rows()
            )));
        }
        let mut one = shape.to_vec();
        one[0] = 1;
        let plan = tp::plan(self.net.spec(), &one)?;
        let out_row = plan.last().map(|l| l.output[1..].to_vec()).unwrap_or_default();
        let c = self.task.channels();
        if out_row.first() != Some(&c) {
            return Err(Error::InvalidArgument(format!(
                "head `{}` outputs shape {out_row:?} per sample, but its {} task has {c} channels",
                self.net.spec().name,
                self.task.loss_name()
            )));
        }
        let name = self.net.spec().name.clone();
        self.labels.push(&name, &self.task, &labels, &out_row)?;
        let row_len = values.len() / n;
        self.features = if tp::cache_fits(n, row_len, self.device_budget) {
            Features::Device(ops::upload(self.net.gpu(), &[values.len()], values)?.buf)
        } else {
            let mut cache =
                FeatureCache::new(self.options.memory_budget, self.options.cache_dir.clone());
            cache.append(&[("features", features)])?;
            Features::Host(cache)
        };
        self.row_shape = shape[1..].to_vec();
        self.samples = n;
        Ok(())
    }

    /// Whether the features live in device memory (else in a host cache).
    pub fn features_on_device(&self) -> bool {
        matches!(self.features, Features::Device(_))
    }

    /// The network on the device.
    pub fn network(&mut self) -> &mut GpuNetwork {
        &mut self.net
    }

    /// The head with its current weights.
    pub fn head(&self) -> Result<Head> {
        self.net.to_head()
    }

    /// Runs `epochs` epochs (the options' count when `None`).
    pub fn fit(&mut self, epochs: Option<usize>) -> Result<Vec<EpochReport>> {
        let epochs = epochs.unwrap_or(self.options.epochs);
        if self.samples == 0 || self.labels.labelled() == 0 {
            return Err(Error::InvalidArgument(
                "no labelled samples to train on: add features and labels first".into(),
            ));
        }
        let steps = self.samples.div_ceil(self.options.batch_size);
        let total_steps = schedule_steps(steps, self.options.epochs, self.epoch, epochs);
        (0..epochs).map(|_| self.run_epoch(total_steps)).collect()
    }

    fn run_epoch(&mut self, total_steps: usize) -> Result<EpochReport> {
        let start = std::time::Instant::now();
        let mut order: Vec<usize> = (0..self.samples).collect();
        if self.options.shuffle {
            order.shuffle(&mut self.rng);
        }
        let mut metrics = MetricAccumulator::new(&self.net.spec().name, &self.task);
        let mut losses = Vec::new();
        let mut lr = self.options.lr;
        let batches: Vec<Vec<usize>> =
            order.chunks(self.options.batch_size).map(<[usize]>::to_vec).collect();
        for batch in &batches {
            let o = &self.options;
            lr = learning_rate(
                &o.schedule,
                o.lr,
                o.warmup_steps,
                self.step,
                total_steps,
                self.epoch,
            );
            let loss = self.train_step(batch, lr, &mut metrics)?;
            losses.push(loss.map_or(f32::NAN, |l| l as f32));
            self.step += 1;
        }
        self.epoch += 1;
        Ok(EpochReport {
            epoch: self.epoch,
            lr,
            steps: batches.len(),
            weights: vec![1.0],
            train: vec![metrics.finish()],
            validation: Vec::new(),
            step_losses: vec![losses],
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    fn batch(&mut self, rows: &[usize]) -> Result<DeviceArray> {
        let shape: Vec<usize> =
            std::iter::once(rows.len()).chain(self.row_shape.iter().copied()).collect();
        let len: usize = self.row_shape.iter().product();
        let gpu = self.net.gpu().clone();
        match &mut self.features {
            Features::Device(all) => {
                Ok(DeviceArray { shape, buf: ops::gather_rows(&gpu, all, rows, len)? })
            }
            Features::Host(cache) => {
                let x = cache.gather("features", rows)?;
                ops::upload(&gpu, x.shape(), x.data())
            }
            Features::Empty => Err(Error::InvalidArgument("no features added".into())),
        }
    }

    /// One optimizer step on the labelled samples of `batch`; the loss, or `None` when none
    /// has a label.
    fn train_step(
        &mut self,
        batch: &[usize],
        lr: f32,
        metrics: &mut MetricAccumulator,
    ) -> Result<Option<f64>> {
        let dropout_seed: u64 = self.rng.random();
        let rows: Vec<usize> = batch.iter().copied().filter(|&i| self.labels.has(i)).collect();
        if rows.is_empty() {
            return Ok(None);
        }
        let gpu = self.net.gpu().clone();
        let x = self.batch(&rows)?;
        let mode = Mode {
            training: true,
            frozen_batchnorm: self.options.frozen_batchnorm,
            seed: dropout_seed,
            step: self.step as u64,
        };
        let y = self.net.forward(x, mode)?;
        let y_host = Array::new(&y.shape, ops::download(&gpu, &y)?)?;
        let labels = self.labels.gather(&rows);
        let (value, denominator, grad) = match (&self.task, labels.target()) {
            (
                TaskSpec::CrossEntropy {
                    class_weights: None, label_smoothing, ignore_index, ..
                },
                Target::Classes(classes),
            ) if *label_smoothing == 0.0 => {
                let c = self.task.channels();
                let inner = y.len() / (y.shape[0] * c).max(1);
                let mut idx = Vec::with_capacity(classes.len());
                for &k in classes {
                    if k == *ignore_index {
                        idx.push(-1);
                    } else if (0..c as i64).contains(&k) {
                        idx.push(k as i32);
                    } else {
                        return Err(Error::BadTensor(format!(
                            "cross-entropy: label {k} is not a class in 0..{c}"
                        )));
                    }
                }
                let counted = idx.iter().filter(|&&k| k >= 0).count();
                let scale = if counted > 0 { 1.0 / counted as f32 } else { 0.0 };
                let (per_row, grad) = ops::softmax_xent(&gpu, &y.buf, &idx, (c, inner), scale)?;
                let sum: f64 = per_row.iter().map(|&l| l as f64).sum();
                let mean = if counted > 0 { (sum / counted as f64) as f32 } else { 0.0 };
                (mean, counted as f64, DeviceArray { shape: y.shape.clone(), buf: grad })
            }
            (task, target) => {
                let out = loss::compute(task, &y_host, target, None)?;
                let grad = ops::upload(&gpu, out.grad.shape(), out.grad.data())?;
                (out.loss, out.denominator, grad)
            }
        };
        if !value.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "head `{}`: the loss became {value} (lower the learning rate or clip gradients)",
                self.net.spec().name
            )));
        }
        metrics.add(&y_host, labels.target(), None, value as f64, denominator);
        self.net.backward(grad, false)?;
        if let Some(max) = self.options.clip_grad_norm {
            let mut sq = 0.0f64;
            for p in self.net.params() {
                sq += ops::sum_squares(&gpu, &p.grad, p.shape.iter().product())?;
            }
            if let Some(coef) = clip_coefficient(sq.sqrt() as f32, max) {
                for p in self.net.params_mut() {
                    let n = p.shape.iter().product();
                    ops::scale(&gpu, &mut p.grad, n, coef)?;
                }
            }
        }
        self.update(lr)?;
        Ok(Some(value as f64))
    }

    /// One optimizer update of every parameter (all take weight decay, as on the CPU).
    fn update(&mut self, lr: f32) -> Result<()> {
        let gpu = self.net.gpu().clone();
        let spec = self.options.optimizer;
        for (p, slot) in self.net.params_mut().iter_mut().zip(&mut self.slots) {
            let n: usize = p.shape.iter().product();
            slot.steps += 1;
            let fresh = slot.first.is_none();
            let first = match slot.first.take() {
                Some(b) => b,
                None => ops::alloc(&gpu, n)?,
            };
            let mut first = first;
            match spec {
                OptimizerSpec::AdamW { beta1, beta2, eps, weight_decay } => {
                    let mut second = match slot.second.take() {
                        Some(b) => b,
                        None => ops::alloc(&gpu, n)?,
                    };
                    let t = slot.steps.min(i32::MAX as u64) as i32;
                    gpu.adamw(
                        &mut p.value,
                        &p.grad,
                        &mut first,
                        &mut second,
                        lr,
                        (beta1, beta2),
                        eps,
                        weight_decay,
                        t,
                    )?;
                    slot.second = Some(second);
                }
                OptimizerSpec::Sgd { momentum, dampening, nesterov, weight_decay } => {
                    gpu.sgd(
                        &mut p.value,
                        &p.grad,
                        &mut first,
                        lr,
                        momentum,
                        dampening,
                        weight_decay,
                        nesterov,
                        fresh,
                    )?;
                }
            }
            slot.first = Some(first);
        }
        Ok(())
    }
}
