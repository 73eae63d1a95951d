//! What `train-head` and `finetune` share: optimizer and schedule flags, the progress bar, the
//! per-epoch metric lines and the optional curve plot.

use hydrant::train::{
    DeviceTrainer, EarlyStopping, EpochReport, OptimizerSpec, Schedule, TaskMetrics,
};
use hydrant::{Error, Result, TrainOptions};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::ops::ControlFlow;
use std::path::PathBuf;

/// Optimizer, schedule and loop flags.
#[derive(clap::Args, Clone, Debug)]
pub struct TrainFlags {
    /// sgd or adamw.
    #[arg(long, default_value = "sgd")]
    pub optimizer: String,
    /// Base learning rate.
    #[arg(long, default_value_t = 0.01)]
    pub lr: f32,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
    /// SGD with Nesterov momentum.
    #[arg(long)]
    pub nesterov: bool,
    /// Weight decay (SGD: L2 penalty; AdamW: decoupled, default 0.01).
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// Epochs.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Samples per step.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Take batches in file order (no shuffling).
    #[arg(long)]
    pub no_shuffle: bool,
    /// Seed for shuffling, the validation split, dropout and new weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Learning-rate schedule: constant, step (×0.1 every --step-epochs) or cosine (to 0).
    #[arg(long, default_value = "constant")]
    pub schedule: String,
    /// Epochs between decays of the step schedule.
    #[arg(long, default_value_t = 10)]
    pub step_epochs: usize,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    /// Clip the joint gradient norm to this.
    #[arg(long)]
    pub clip: Option<f32>,
    /// Fraction of samples held out for validation.
    #[arg(long, default_value_t = 0.0)]
    pub val_fraction: f32,
    /// Stop after this many epochs without a better validation loss (best weights kept).
    #[arg(long)]
    pub early_stop: Option<usize>,
    /// Keep BatchNorm running statistics fixed while training.
    #[arg(long)]
    pub frozen_batchnorm: bool,
    /// Save the optimizer state with the heads (to resume training from the file later).
    #[arg(long)]
    pub with_optimizer: bool,
    /// Draw loss and metric curves per task into this PNG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl TrainFlags {
    /// The trainer options these flags describe, on `threads` threads (all cores when `None`;
    /// weighting left at its default).
    pub fn options(&self, threads: Option<usize>) -> Result<TrainOptions> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        let optimizer = match self.optimizer.as_str() {
            "sgd" => OptimizerSpec::Sgd {
                momentum: self.momentum,
                dampening: 0.0,
                nesterov: self.nesterov,
                weight_decay: self.weight_decay.unwrap_or(0.0),
            },
            "adamw" | "adam_w" => OptimizerSpec::adamw(self.weight_decay.unwrap_or(0.01)),
            o => return bad(format!("--optimizer {o}: expected sgd or adamw")),
        };
        let schedule = match self.schedule.as_str() {
            "constant" => Schedule::Constant,
            "step" => Schedule::Step { every_epochs: self.step_epochs, gamma: 0.1 },
            "cosine" => Schedule::Cosine { min_lr: 0.0 },
            s => return bad(format!("--schedule {s}: expected constant, step or cosine")),
        };
        if self.epochs == 0 {
            return bad("--epochs must be ≥ 1".into());
        }
        Ok(TrainOptions {
            epochs: self.epochs,
            batch_size: self.batch,
            shuffle: !self.no_shuffle,
            seed: self.seed,
            lr: self.lr,
            optimizer,
            schedule,
            warmup_steps: self.warmup,
            clip_grad_norm: self.clip,
            validation_fraction: self.val_fraction,
            early_stopping: self.early_stop.map(|patience| EarlyStopping {
                patience,
                min_delta: 0.0,
                restore_best: true,
            }),
            frozen_batchnorm: self.frozen_batchnorm,
            threads: threads.unwrap_or(0),
            ..TrainOptions::default()
        })
    }
}

/// Runs the trainer for `epochs`, with a progress bar on stderr (a terminal, not `quiet`) and
/// one block of metric lines per epoch on stdout; draws the curves when `plot` is set.
pub fn fit(
    trainer: &mut DeviceTrainer,
    epochs: usize,
    quiet: bool,
    plot: Option<&std::path::Path>,
) -> Result<Vec<EpochReport>> {
    let bar = progress_bar(epochs, quiet, "{bar:30} epoch {pos}/{len} {msg} [{elapsed}]")?;
    let reports = trainer.fit(Some(epochs), |r| {
        bar.suspend(|| print!("{}", epoch_lines(r, epochs)));
        if let Some(m) = r.validation.first().or(r.train.first()) {
            bar.set_message(format!("loss {:.4}", m.loss));
        }
        bar.inc(1);
        ControlFlow::Continue(())
    });
    bar.finish_and_clear();
    let reports = reports?;
    if reports.len() < epochs {
        println!("early stop after epoch {} (best validation weights kept)", reports.len());
    }
    if let Some(path) = plot {
        crate::plot::curves(trainer.history(), path)?;
        println!("curves -> {}", path.display());
    }
    Ok(reports)
}

/// A progress bar of `len` steps drawn on stderr with `template`, hidden when stderr is not a
/// terminal or `quiet` is set.
pub fn progress_bar(len: usize, quiet: bool, template: &str) -> Result<ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return Ok(ProgressBar::hidden());
    }
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(template)
        .map_err(|e| Error::InvalidArgument(format!("progress bar: {e}")))?;
    bar.set_style(style);
    Ok(bar)
}

/// The metric lines of one epoch: a header, then per head its training and validation metrics.
pub fn epoch_lines(r: &EpochReport, epochs: usize) -> String {
    let mut out = format!(
        "epoch {}/{epochs}  lr {:.3e}  {} steps  {:.2} s",
        r.epoch, r.lr, r.steps, r.seconds
    );
    if r.weights.len() > 1 {
        let w: Vec<String> = r.weights.iter().map(|w| format!("{w:.3}")).collect();
        out += &format!("  weights [{}]", w.join(", "));
    }
    out += "\n";
    for (i, t) in r.train.iter().enumerate() {
        out += &format!("  {:<12} train {}", t.head, metrics(t));
        if let Some(v) = r.validation.get(i) {
            out += &format!("  | val {}", metrics(v));
        }
        out += "\n";
    }
    out
}

/// `loss … acc … f1 … miou … mae … rmse …`, whichever the task has.
pub fn metrics(m: &TaskMetrics) -> String {
    let mut s = format!("loss {:.4}", m.loss);
    for (name, v) in [
        ("acc", m.accuracy),
        ("f1", m.macro_f1),
        ("miou", m.miou),
        ("mae", m.mae),
        ("rmse", m.rmse),
    ] {
        if let Some(v) = v {
            s += &format!(" {name} {v:.4}");
        }
    }
    s
}

/// Reads a `.npy` file, naming the flag it came from in errors.
pub fn read_npy_flag(flag: &str, path: &std::path::Path) -> Result<hydrant::Tensor> {
    if !path.exists() {
        return Err(Error::InvalidArgument(format!("{flag} {}: no such file", path.display())));
    }
    hydrant::read_npy(path)
}

/// Loss flags: which loss, and its options.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TaskFlags {
    /// Loss: ce, bce, mse, l1, huber or smooth_l1 (default: the head's own task, else ce for
    /// int64 labels and mse for float labels). `finetune` also takes HEAD=LOSS pairs.
    #[arg(long, value_delimiter = ',')]
    pub loss: Vec<String>,
    /// Cross-entropy label smoothing ε.
    #[arg(long)]
    pub label_smoothing: Option<f32>,
    /// Cross-entropy: labels equal to this are ignored (default -100).
    #[arg(long, allow_hyphen_values = true)]
    pub ignore_index: Option<i64>,
    /// Cross-entropy class weights (comma-separated, one per class).
    #[arg(long, value_delimiter = ',')]
    pub class_weights: Vec<f32>,
}

impl TaskFlags {
    /// The loss named for `head`: its `HEAD=LOSS` entry, else a bare entry.
    fn loss_for(&self, head: &str) -> Result<Option<&str>> {
        let mut bare = None;
        for l in &self.loss {
            match l.split_once('=') {
                Some((h, loss)) if h == head => return Ok(Some(loss)),
                Some(_) => {}
                None if bare.is_none() => bare = Some(l.as_str()),
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "--loss {}: give one loss, or HEAD=LOSS pairs",
                        self.loss.join(",")
                    )))
                }
            }
        }
        Ok(bare)
    }

    /// The task of `head`, whose output has `channels` channels and whose labels have type
    /// `labels`: the loss asked for (keeping the head's own options when it is the same loss),
    /// else the head's own task, else one chosen from the label type; then these flags' options.
    pub fn task(
        &self,
        head: &str,
        own: Option<&hydrant::TaskSpec>,
        channels: usize,
        labels: hydrant::DType,
    ) -> Result<hydrant::TaskSpec> {
        use hydrant::TaskSpec;
        let mut task = match (self.loss_for(head)?, own) {
            (Some(l), Some(own)) if canonical(l) == own.loss_name() => own.clone(),
            (Some(l), _) => TaskSpec::from_loss_name(canonical(l), channels)?,
            (None, Some(own)) => own.clone(),
            (None, None) if labels == hydrant::DType::I64 => {
                TaskSpec::from_loss_name("ce", channels)?
            }
            (None, None) => TaskSpec::from_loss_name("mse", channels)?,
        };
        if let TaskSpec::CrossEntropy { label_smoothing, ignore_index, class_weights, .. } =
            &mut task
        {
            if let Some(e) = self.label_smoothing {
                *label_smoothing = e;
            }
            if let Some(i) = self.ignore_index {
                *ignore_index = i;
            }
            if !self.class_weights.is_empty() {
                *class_weights = Some(self.class_weights.clone());
            }
        } else if self.label_smoothing.is_some() || !self.class_weights.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "head `{head}`: --label-smoothing and --class-weights apply to the ce loss, not {}",
                task.loss_name()
            )));
        }
        let wants_classes = task.is_classification();
        if wants_classes && labels != hydrant::DType::I64 {
            return Err(Error::InvalidArgument(format!(
                "head `{head}`: the ce loss needs int64 class ids as labels, got {labels}"
            )));
        }
        if !wants_classes && labels != hydrant::DType::F32 {
            return Err(Error::InvalidArgument(format!(
                "head `{head}`: the {} loss needs float32 labels, got {labels}",
                task.loss_name()
            )));
        }
        task.validate()?;
        Ok(task)
    }
}

/// The library's name of a command-line loss name.
fn canonical(loss: &str) -> &str {
    match loss {
        "cross_entropy" => "ce",
        "smooth-l1" => "smooth_l1",
        l => l,
    }
}

/// `head` with `task` as its task.
pub fn with_task(head: &hydrant::Head, task: hydrant::TaskSpec) -> Result<hydrant::Head> {
    let mut spec = head.spec().clone();
    spec.task = Some(task);
    hydrant::Head::new(spec, head.tensors().to_vec())
}

/// The per-sample output shape of `head` for features of per-sample shape `row`.
pub fn output_row(head: &hydrant::Head, row: &[usize]) -> Result<Vec<usize>> {
    let mut shape = vec![1];
    shape.extend_from_slice(row);
    let out = hydrant::train::Network::<f32>::new(head)?.output_shape(&shape)?;
    Ok(out[1..].to_vec())
}
