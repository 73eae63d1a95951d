//! [`Trainer`]: fine-tunes heads on cached trunk features.
//!
//! Features are computed once per sample (or given) and cached ([`FeatureCache`]); every epoch
//! then touches only the heads. Several heads train together under a [`Weighting`], each on the
//! samples that have its label.

use super::array::Array;
use super::cache::{FeatureCache, DEFAULT_BUDGET};
use super::data::{LabelStore, Labels};
use super::layers::Pass;
use super::loss;
use super::metrics::{MetricAccumulator, TaskMetrics};
use super::network::Network;
use super::optim::{
    clip_grad_norm, learning_rate, schedule_steps, Optimizer, OptimizerSpec, Schedule, Update,
};
use super::spec::TaskSpec;
use super::weighting::{Alternation, WeightState, Weighting};
use super::Head;
use crate::backend::cpu_ops::parallel::with_pool;
use crate::backend::cpu_ops::spin_pool::SpinPool;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

mod checkpoint;

/// Stop when the validation loss has not improved for `patience` epochs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EarlyStopping {
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// Smallest decrease that counts as an improvement.
    pub min_delta: f64,
    /// Put back the weights of the best epoch when training ends.
    pub restore_best: bool,
}

/// How training runs. `TrainOptions::default()` is SGD (momentum 0.9), lr 0.01, batch 32, 10
/// epochs, shuffled with seed 0, no validation split.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// Epochs for [`Trainer::fit`].
    pub epochs: usize,
    /// Samples per step.
    pub batch_size: usize,
    /// Shuffle the samples each epoch (else batches follow sample order).
    pub shuffle: bool,
    /// Seed for shuffling, the validation split and dropout.
    pub seed: u64,
    /// Base learning rate.
    pub lr: f32,
    /// The optimizer.
    pub optimizer: OptimizerSpec,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// Clip the joint gradient norm of all heads to this.
    pub clip_grad_norm: Option<f32>,
    /// How the tasks' losses combine.
    pub weighting: Weighting,
    /// Fraction of samples held out for validation (0 for none).
    pub validation_fraction: f32,
    /// Early stopping on the validation loss.
    pub early_stopping: Option<EarlyStopping>,
    /// Keep BatchNorm running statistics fixed (normalise with them) while training.
    pub frozen_batchnorm: bool,
    /// Worker threads (0: all cores).
    pub threads: usize,
    /// Bytes of features held in RAM before the cache moves to a memory-mapped file.
    pub memory_budget: usize,
    /// Folder for the cache file (default: the system's temporary folder).
    pub cache_dir: Option<PathBuf>,
}

impl Default for TrainOptions {
    fn default() -> TrainOptions {
        TrainOptions {
            epochs: 10,
            batch_size: 32,
            shuffle: true,
            seed: 0,
            lr: 0.01,
            optimizer: OptimizerSpec::sgd(0.9, 0.0),
            schedule: Schedule::Constant,
            warmup_steps: 0,
            clip_grad_norm: None,
            weighting: Weighting::default(),
            validation_fraction: 0.0,
            early_stopping: None,
            frozen_batchnorm: false,
            threads: 0,
            memory_budget: DEFAULT_BUDGET,
            cache_dir: None,
        }
    }
}

impl TrainOptions {
    /// Checks every option.
    pub fn validate(&self, tasks: usize) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if self.batch_size == 0 {
            return bad("batch size must be ≥ 1".into());
        }
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad(format!("learning rate {} must be finite and ≥ 0", self.lr));
        }
        if !(0.0..1.0).contains(&self.validation_fraction) {
            return bad(format!(
                "validation fraction {} must be in [0, 1)",
                self.validation_fraction
            ));
        }
        if self.clip_grad_norm.is_some_and(|c| !crate::train::spec::is_positive(c)) {
            return bad("gradient clipping norm must be > 0".into());
        }
        if self.early_stopping.is_some() && self.validation_fraction == 0.0 {
            return bad("early stopping needs a validation split (validation_fraction > 0)".into());
        }
        if let Schedule::Step { every_epochs: 0, .. } = self.schedule {
            return bad("step schedule: every_epochs must be ≥ 1".into());
        }
        self.optimizer.validate()?;
        self.weighting.validate(tasks)
    }
}

/// What one epoch did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    /// Epoch number (1-based, counting every epoch this trainer ran).
    pub epoch: usize,
    /// Learning rate of the epoch's last step.
    pub lr: f32,
    /// Optimizer steps in the epoch.
    pub steps: usize,
    /// Task weights used (uncertainty: ½e^(−s_i) at the end of the epoch).
    pub weights: Vec<f32>,
    /// Training metrics per head (from the training passes).
    pub train: Vec<TaskMetrics>,
    /// Validation metrics per head (empty without a validation split).
    pub validation: Vec<TaskMetrics>,
    /// Per head, its loss at each step of the epoch (NaN where the step did not train it).
    pub step_losses: Vec<Vec<f32>>,
    /// Wall time of the epoch in seconds.
    pub seconds: f64,
}

struct TaskState {
    network: Network<f32>,
    task: TaskSpec,
    labels: LabelStore,
    /// Output shape per sample, `[C, …]`, once features are known.
    out_row: Option<Vec<usize>>,
}

/// Trains heads on cached trunk features.
pub struct Trainer {
    tasks: Vec<TaskState>,
    cache: FeatureCache,
    options: TrainOptions,
    optimizer: Optimizer,
    weighting: WeightState,
    rng: ChaCha8Rng,
    pool: rayon::ThreadPool,
    /// The spinning pool hydrant's own product kernels share during a step (`threads > 1`).
    spin: Option<Arc<SpinPool>>,
    epoch: usize,
    step: usize,
    split: Option<(Vec<usize>, Vec<usize>)>,
    best: Option<(f64, Vec<Head>)>,
    stale_epochs: usize,
    history: Vec<EpochReport>,
    /// Samples a restored checkpoint was taken with (checked when training resumes).
    resumed_samples: Option<usize>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("heads", &self.head_names())
            .field("samples", &self.cache.rows())
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Trainer {
    /// A trainer for `heads`; each head needs a task (its spec's `task`).
    pub fn new(heads: Vec<Head>, options: TrainOptions) -> Result<Trainer> {
        if heads.is_empty() {
            return Err(Error::InvalidArgument("a trainer needs at least one head".into()));
        }
        options.validate(heads.len())?;
        let mut tasks = Vec::with_capacity(heads.len());
        for h in &heads {
            if tasks.iter().any(|t: &TaskState| t.network.spec().name == h.name()) {
                return Err(Error::InvalidArgument(format!("head `{}` given twice", h.name())));
            }
            let task = h.spec().task.clone().ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "head `{}` has no task: give it one (loss and classes or outputs) before training",
                    h.name()
                ))
            })?;
            tasks.push(TaskState {
                network: Network::new(h)?,
                labels: LabelStore::new(&task),
                task,
                out_row: None,
            });
        }
        let params: usize = tasks.iter_mut().map(|t| t.network.params().len()).sum::<usize>()
            + usize::from(options.weighting == Weighting::Uncertainty);
        let optimizer = Optimizer::new(options.optimizer, params)?;
        let weighting = WeightState::new(options.weighting.clone(), tasks.len())?;
        let threads = if options.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            options.threads
        };
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(|e| {
            Error::InvalidArgument(format!("cannot start {threads} training threads: {e}"))
        })?;
        let spin = (threads > 1).then(|| SpinPool::new(threads).map(Arc::new)).flatten();
        Ok(Trainer {
            spin,
            cache: FeatureCache::new(options.memory_budget, options.cache_dir.clone()),
            rng: ChaCha8Rng::seed_from_u64(options.seed),
            tasks,
            options,
            optimizer,
            weighting,
            pool,
            epoch: 0,
            step: 0,
            split: None,
            best: None,
            stale_epochs: 0,
            history: Vec::new(),
            resumed_samples: None,
        })
    }

    /// The heads' names, in order.
    pub fn head_names(&self) -> Vec<&str> {
        self.tasks.iter().map(|t| t.network.spec().name.as_str()).collect()
    }

    /// The trunk tensors the heads read (what [`Trainer::add_features`] needs).
    pub fn inputs(&self) -> Vec<&str> {
        let mut v: Vec<&str> = Vec::new();
        for t in &self.tasks {
            let i = t.network.spec().input();
            if !v.contains(&i) {
                v.push(i);
            }
        }
        v
    }

    /// Samples held.
    pub fn samples(&self) -> usize {
        self.cache.rows()
    }

    /// Whether the cached features live in a memory-mapped file.
    pub fn cache_on_disk(&self) -> bool {
        self.cache.on_disk()
    }

    /// Adds samples: their trunk features (every tensor of [`Trainer::inputs`], axis 0 the
    /// samples) and labels for some or all heads (heads not named have no label for these
    /// samples).
    pub fn add_features(
        &mut self,
        features: &[(&str, &Tensor)],
        labels: &[(&str, Labels)],
    ) -> Result<()> {
        if self.split.is_some() {
            return Err(Error::InvalidArgument(
                "samples cannot be added once training has started".into(),
            ));
        }
        let needed = self.inputs().into_iter().map(String::from).collect::<Vec<_>>();
        let mut batch = Vec::with_capacity(needed.len());
        for name in &needed {
            let t = features
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| *t)
                .ok_or_else(|| Error::MissingFeature(name.clone()))?;
            batch.push((name.as_str(), t));
        }
        let n = batch[0].1.shape().first().copied().unwrap_or(0);
        for (head, l) in labels {
            if !self.tasks.iter().any(|t| t.network.spec().name == *head) {
                return Err(Error::UnknownHead {
                    name: head.to_string(),
                    available: self.head_names().join(", "),
                });
            }
            if l.rows() != n {
                return Err(Error::BadTensor(format!(
                    "labels of head `{head}` have {} rows for {n} samples",
                    l.rows()
                )));
            }
        }
        // Output shapes per head (checks that each head accepts its features).
        for t in &mut self.tasks {
            let input = t.network.spec().input().to_string();
            let f = batch
                .iter()
                .find(|(n, _)| *n == input)
                .map(|(_, f)| *f)
                .ok_or_else(|| Error::MissingFeature(input.clone()))?;
            let mut shape = f.shape().to_vec();
            if let Some(first) = shape.first_mut() {
                *first = 1;
            }
            let out = t.network.output_shape(&shape)?;
            let c = t.task.channels();
            if out.get(1) != Some(&c) {
                return Err(Error::InvalidArgument(format!(
                    "head `{}` outputs shape {out:?} per sample, but its {} task has {c} channels",
                    t.network.spec().name,
                    t.task.loss_name()
                )));
            }
            t.out_row = Some(out[1..].to_vec());
        }
        for t in &mut self.tasks {
            let name = t.network.spec().name.clone();
            match labels.iter().find(|(h, _)| *h == name) {
                Some((_, l)) => {
                    t.labels.push(&name, &t.task, l, t.out_row.as_deref().unwrap_or(&[]))?
                }
                None => t.labels.push_missing(n),
            }
        }
        self.cache.append(&batch)
    }

    /// Adds samples from model inputs: the trunk tensors the heads read are computed by `model`
    /// (in chunks of `chunk` samples, once per sample) and cached with the labels.
    pub fn add_samples(
        &mut self,
        model: &crate::Model,
        inputs: &[(&str, &Tensor)],
        labels: &[(&str, Labels)],
        chunk: usize,
    ) -> Result<()> {
        let n = inputs.first().and_then(|(_, t)| t.shape().first().copied()).ok_or_else(|| {
            Error::InvalidArgument("add_samples needs at least one input tensor".into())
        })?;
        for (name, t) in inputs {
            if t.shape().first() != Some(&n) {
                return Err(Error::BadInput {
                    name: name.to_string(),
                    reason: format!(
                        "{} samples, other inputs have {n}",
                        t.shape().first().unwrap_or(&0)
                    ),
                });
            }
        }
        let needed: Vec<String> = self.inputs().into_iter().map(String::from).collect();
        let names: Vec<&str> = needed.iter().map(String::as_str).collect();
        let chunk = chunk.max(1);
        for start in (0..n).step_by(chunk) {
            let end = (start + chunk).min(n);
            let part: Vec<(String, Tensor)> = inputs
                .iter()
                .map(|(k, t)| Ok((k.to_string(), t.slice_rows(start, end)?)))
                .collect::<Result<_>>()?;
            let refs: Vec<(&str, &Tensor)> = part.iter().map(|(k, t)| (k.as_str(), t)).collect();
            let features = model.tensors(&refs, &names)?;
            let owned: Vec<(String, Tensor)> = names
                .iter()
                .map(|k| Ok((k.to_string(), features.get(k)?)))
                .collect::<Result<_>>()?;
            let frefs: Vec<(&str, &Tensor)> = owned.iter().map(|(k, t)| (k.as_str(), t)).collect();
            let mut part_labels = Vec::with_capacity(labels.len());
            for (h, l) in labels {
                let values = l.values().slice_rows(start, end)?;
                let lab = match l.mask() {
                    Some(m) => Labels::masked(values, m[start..end].to_vec())?,
                    None => Labels::new(values),
                };
                part_labels.push((*h, lab));
            }
            self.add_features(&frefs, &part_labels)?;
        }
        Ok(())
    }

    /// Runs `epochs` epochs (default: the options' count when `None`), calling `on_epoch` after
    /// each; returning `ControlFlow::Break` from it stops training.
    pub fn fit(
        &mut self,
        epochs: Option<usize>,
        mut on_epoch: impl FnMut(&EpochReport) -> ControlFlow<()>,
    ) -> Result<Vec<EpochReport>> {
        let epochs = epochs.unwrap_or(self.options.epochs);
        self.check_resumed()?;
        if self.cache.rows() == 0 {
            return Err(Error::InvalidArgument(
                "no samples to train on: add features and labels first".into(),
            ));
        }
        for t in &self.tasks {
            if t.labels.labelled() == 0 {
                return Err(Error::InvalidArgument(format!(
                    "head `{}` has no labelled samples",
                    t.network.spec().name
                )));
            }
        }
        self.make_split();
        let total_steps =
            schedule_steps(self.epoch_steps(), self.options.epochs, self.epoch, epochs);
        let mut reports = Vec::new();
        let pool = std::mem::replace(
            &mut self.pool,
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .map_err(|e| Error::InvalidArgument(e.to_string()))?,
        );
        let mut result = Ok(());
        for _ in 0..epochs {
            let spin = self.spin.clone();
            let epoch = || with_pool(spin.as_ref(), || self.run_epoch(total_steps));
            let report = match pool.install(epoch) {
                Ok(r) => r,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let stop = match self.early_stop(&report) {
                Ok(s) => s,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            reports.push(report.clone());
            self.history.push(report);
            if stop || on_epoch(reports.last().expect("pushed")).is_break() {
                break;
            }
        }
        self.pool = pool;
        result?;
        if let (Some(es), Some((_, best))) = (self.options.early_stopping, &self.best) {
            if es.restore_best {
                let best = best.clone();
                for (t, h) in self.tasks.iter_mut().zip(&best) {
                    t.network = Network::new(h)?;
                }
            }
        }
        Ok(reports)
    }

    /// The training options.
    pub fn options(&self) -> &TrainOptions {
        &self.options
    }

    /// Every epoch run so far.
    pub fn history(&self) -> &[EpochReport] {
        &self.history
    }

    /// The heads with their current weights.
    pub fn heads(&mut self) -> Result<Vec<Head>> {
        self.tasks.iter_mut().map(|t| t.network.to_head()).collect()
    }

    /// The optimizer (state included).
    pub fn optimizer(&self) -> &Optimizer {
        &self.optimizer
    }

    /// The heads with their optimizer state, ready to save.
    pub fn head_set(&mut self, with_optimizer: bool) -> Result<crate::heads::HeadSet> {
        let heads = self.heads()?;
        let mut set = crate::heads::HeadSet::new(heads);
        if with_optimizer {
            let params: Vec<(String, Vec<String>)> = self
                .tasks
                .iter_mut()
                .map(|t| (t.network.spec().name.clone(), t.network.param_names()))
                .collect();
            let mut optimizer = self.optimizer.clone();
            let n: usize = params.iter().map(|(_, p)| p.len()).sum();
            optimizer.slots.truncate(n);
            set.optimizer = Some(crate::heads::SavedOptimizer { optimizer, params });
        }
        Ok(set)
    }

    /// Metrics of every head, in inference mode, on the validation samples (all samples when
    /// there is no validation split).
    pub fn evaluate(&mut self) -> Result<Vec<TaskMetrics>> {
        self.make_split();
        let idx = match &self.split {
            Some((_, val)) if !val.is_empty() => val.clone(),
            _ => (0..self.cache.rows()).collect(),
        };
        let pool = std::mem::replace(
            &mut self.pool,
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .map_err(|e| Error::InvalidArgument(e.to_string()))?,
        );
        let spin = self.spin.clone();
        let r = pool.install(|| with_pool(spin.as_ref(), || self.measure(&idx)));
        self.pool = pool;
        r
    }

    fn make_split(&mut self) {
        if self.split.is_some() {
            return;
        }
        let n = self.cache.rows();
        let mut idx: Vec<usize> = (0..n).collect();
        let n_val = (n as f64 * self.options.validation_fraction as f64).round() as usize;
        if n_val > 0 {
            let mut split_rng = ChaCha8Rng::seed_from_u64(self.options.seed ^ 0x5EED_5A17);
            idx.shuffle(&mut split_rng);
            let val = idx.split_off(n - n_val);
            idx.sort_unstable();
            self.split = Some((idx, val));
        } else {
            self.split = Some((idx, Vec::new()));
        }
    }

    fn train_indices(&self) -> &[usize] {
        self.split.as_ref().map_or(&[], |(t, _)| t.as_slice())
    }

    /// Optimizer steps per epoch.
    fn epoch_steps(&self) -> usize {
        let b = self.options.batch_size;
        match self.options.weighting {
            Weighting::Alternating { .. } => (0..self.tasks.len())
                .map(|k| {
                    self.train_indices()
                        .iter()
                        .filter(|&&i| self.tasks[k].labels.has(i))
                        .count()
                        .div_ceil(b)
                })
                .sum(),
            _ => self.train_indices().len().div_ceil(b),
        }
    }

    /// The epoch's steps: for each, the samples and the tasks it trains.
    fn plan_epoch(&mut self) -> Vec<(Vec<usize>, Vec<usize>)> {
        let b = self.options.batch_size;
        let mut order = self.train_indices().to_vec();
        match self.options.weighting.clone() {
            Weighting::Alternating { order: how } => {
                let mut queues: Vec<std::collections::VecDeque<Vec<usize>>> = (0..self.tasks.len())
                    .map(|k| {
                        let mut mine: Vec<usize> = order
                            .iter()
                            .copied()
                            .filter(|&i| self.tasks[k].labels.has(i))
                            .collect();
                        if self.options.shuffle {
                            mine.shuffle(&mut self.rng);
                        }
                        mine.chunks(b).map(<[usize]>::to_vec).collect()
                    })
                    .collect();
                let mut steps = Vec::new();
                let mut turn = 0;
                while queues.iter().any(|q| !q.is_empty()) {
                    let k = match how {
                        Alternation::RoundRobin => {
                            while queues[turn % queues.len()].is_empty() {
                                turn += 1;
                            }
                            turn += 1;
                            (turn - 1) % queues.len()
                        }
                        Alternation::Proportional => {
                            let total: usize = queues.iter().map(|q| q.len()).sum();
                            let mut pick = self.rng.random_range(0..total);
                            let mut k = 0;
                            while pick >= queues[k].len() {
                                pick -= queues[k].len();
                                k += 1;
                            }
                            k
                        }
                    };
                    if let Some(batch) = queues[k].pop_front() {
                        steps.push((batch, vec![k]));
                    }
                }
                steps
            }
            _ => {
                if self.options.shuffle {
                    order.shuffle(&mut self.rng);
                }
                let all: Vec<usize> = (0..self.tasks.len()).collect();
                order.chunks(b).map(|c| (c.to_vec(), all.clone())).collect()
            }
        }
    }

    fn run_epoch(&mut self, total_steps: usize) -> Result<EpochReport> {
        let start = std::time::Instant::now();
        self.weighting.start_epoch();
        let plan = self.plan_epoch();
        let k = self.tasks.len();
        let mut metrics: Vec<MetricAccumulator> = self
            .tasks
            .iter()
            .map(|t| MetricAccumulator::new(&t.network.spec().name, &t.task))
            .collect();
        let mut step_losses = vec![Vec::with_capacity(plan.len()); k];
        let (mut sums, mut dens) = (vec![0.0f64; k], vec![0.0f64; k]);
        let mut lr = self.options.lr;
        for (batch, tasks) in &plan {
            lr = learning_rate(
                &self.options.schedule,
                self.options.lr,
                self.options.warmup_steps,
                self.step,
                total_steps,
                self.epoch,
            );
            let losses = self.train_step(batch, tasks, lr, &mut metrics, &mut dens, &mut sums)?;
            for (i, l) in losses.iter().enumerate() {
                step_losses[i].push(l.map_or(f32::NAN, |l| l as f32));
            }
            self.step += 1;
        }
        let means: Vec<f64> =
            sums.iter().zip(&dens).map(|(s, d)| if *d > 0.0 { s / d } else { 0.0 }).collect();
        self.weighting.end_epoch(means);
        self.epoch += 1;
        let val = match &self.split {
            Some((_, v)) if !v.is_empty() => {
                let v = v.clone();
                self.measure(&v)?
            }
            _ => Vec::new(),
        };
        Ok(EpochReport {
            epoch: self.epoch,
            lr,
            steps: plan.len(),
            weights: self.weighting.reported(),
            train: metrics.iter().map(MetricAccumulator::finish).collect(),
            validation: val,
            step_losses,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// One optimizer step on `batch` for `tasks`; returns each task's loss (None if absent).
    fn train_step(
        &mut self,
        batch: &[usize],
        tasks: &[usize],
        lr: f32,
        metrics: &mut [MetricAccumulator],
        dens: &mut [f64],
        sums: &mut [f64],
    ) -> Result<Vec<Option<f64>>> {
        let k = self.tasks.len();
        let mut losses: Vec<Option<f64>> = vec![None; k];
        let mut norms: Vec<Option<f64>> = vec![None; k];
        let frozen = self.options.frozen_batchnorm;
        let needs_norms = self.options.weighting.needs_feature_grads();
        let mut dropout_rng = ChaCha8Rng::seed_from_u64(self.rng.random());
        for &t in tasks {
            let rows: Vec<usize> =
                batch.iter().copied().filter(|&i| self.tasks[t].labels.has(i)).collect();
            if rows.is_empty() {
                continue;
            }
            let input = self.tasks[t].network.spec().input().to_string();
            let x = self.cache.gather(&input, &rows)?;
            let scale = self.weighting.scale(t);
            let state = &mut self.tasks[t];
            state.network.zero_grad();
            let mut pass = Pass { training: true, frozen_batchnorm: frozen, rng: &mut dropout_rng };
            let y = state.network.forward(x, &mut pass)?;
            let labels = state.labels.gather(&rows);
            let out = loss::compute(&state.task, &y, labels.target(), None)?;
            if !out.loss.is_finite() {
                return Err(Error::InvalidArgument(format!(
                    "head `{}`: the loss became {} (lower the learning rate or clip gradients)",
                    state.network.spec().name,
                    out.loss
                )));
            }
            metrics[t].add(&y, labels.target(), None, out.loss as f64, out.denominator);
            sums[t] += out.loss as f64 * out.denominator;
            dens[t] += out.denominator;
            losses[t] = Some(out.loss as f64);
            let grad = out.grad.map(|g| g * scale);
            if needs_norms {
                let dx: Array<f32> = state.network.backward(grad)?;
                norms[t] =
                    Some(dx.data().iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>().sqrt());
            } else {
                state.network.backward_params(grad)?;
            }
        }
        if needs_norms {
            self.weighting.gradnorm_step(&losses, &norms);
        }
        let mut log_var_grads = self.weighting.log_var_grads(&losses);
        let trained: Vec<bool> =
            (0..k).map(|i| tasks.contains(&i) && losses[i].is_some()).collect();
        if let Some(max) = self.options.clip_grad_norm {
            let mut grads: Vec<&mut [f32]> = Vec::new();
            for (t, _) in self.tasks.iter_mut().zip(&trained).filter(|(_, on)| **on) {
                grads.extend(t.network.params().into_iter().map(|p| p.grad.data_mut()));
            }
            grads.push(&mut log_var_grads);
            clip_grad_norm(&mut grads, max);
        }
        let mut lv = std::mem::take(&mut self.weighting.log_vars);
        let mut updates: Vec<Update> = Vec::new();
        let mut slot = 0;
        for (t, on) in self.tasks.iter_mut().zip(&trained) {
            let decay = t.network.decay_mask();
            let params = t.network.params();
            let first = slot;
            slot += params.len();
            if !*on {
                continue;
            }
            for (j, p) in params.into_iter().enumerate() {
                let super::layers::Param { value, grad } = p;
                updates.push(Update {
                    slot: first + j,
                    value: value.data_mut(),
                    grad: grad.data(),
                    decay: decay[j],
                });
            }
        }
        if !lv.is_empty() {
            updates.push(Update { slot, value: &mut lv, grad: &log_var_grads, decay: false });
        }
        let stepped = self.optimizer.step(&mut updates, lr);
        drop(updates);
        self.weighting.log_vars = lv;
        stepped?;
        Ok(losses)
    }

    /// Inference-mode metrics over samples `idx`.
    fn measure(&mut self, idx: &[usize]) -> Result<Vec<TaskMetrics>> {
        let b = self.options.batch_size.max(1);
        let mut out = Vec::with_capacity(self.tasks.len());
        for t in 0..self.tasks.len() {
            let mut acc =
                MetricAccumulator::new(&self.tasks[t].network.spec().name, &self.tasks[t].task);
            let mine: Vec<usize> =
                idx.iter().copied().filter(|&i| self.tasks[t].labels.has(i)).collect();
            for rows in mine.chunks(b) {
                let input = self.tasks[t].network.spec().input().to_string();
                let x = self.cache.gather(&input, rows)?;
                let state = &mut self.tasks[t];
                let mut rng = ChaCha8Rng::seed_from_u64(0);
                let y = state.network.forward(
                    x,
                    &mut Pass { training: false, frozen_batchnorm: true, rng: &mut rng },
                )?;
                let labels = state.labels.gather(rows);
                // Softmax at inference is for callers; losses and metrics take logits.
                let logits = if matches!(
                    state.network.spec().layers.last(),
                    Some(super::spec::LayerSpec::Softmax { .. })
                ) {
                    return Err(Error::InvalidArgument(format!(
                        "head `{}` ends in Softmax: evaluate its logits (remove the final Softmax) or use the model's outputs",
                        state.network.spec().name
                    )));
                } else {
                    y
                };
                let l = loss::compute(&state.task, &logits, labels.target(), None)?;
                acc.add(&logits, labels.target(), None, l.loss as f64, l.denominator);
            }
            out.push(acc.finish());
        }
        Ok(out)
    }

    fn early_stop(&mut self, report: &EpochReport) -> Result<bool> {
        let Some(es) = self.options.early_stopping else { return Ok(false) };
        let loss: f64 = report.validation.iter().map(|m| m.loss).sum();
        let improved = self.best.as_ref().is_none_or(|(b, _)| loss < b - es.min_delta);
        if improved {
            let heads = self.heads()?;
            self.best = Some((loss, heads));
            self.stale_epochs = 0;
        } else {
            self.stale_epochs += 1;
        }
        Ok(self.stale_epochs >= es.patience.max(1))
    }
}
