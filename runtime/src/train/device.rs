//! Choosing the trainer of a job: the CPU [`Trainer`] or, with the `cuda` feature, the GPU
//! trainer (`GpuTrainer`), from the device asked for, what this build and machine offer
//! ([`Probe`]) and what the job needs ([`TrainJob`]). [`choose_trainer`] is plain Rust, built
//! and tested in every build; [`DeviceTrainer`] runs the chosen one behind one interface.

use super::{EpochReport, Head, Labels, TaskMetrics, TrainOptions, Trainer};
use crate::backend::cuda::train_plan;
use crate::backend::device::{self, Probe};
use crate::error::{Error, Result};
use crate::heads::HeadSet;
use crate::model::Device;
use crate::tensor::Tensor;
use std::ops::ControlFlow;

/// What a training job needs, as far as the choice of trainer goes.
#[derive(Debug, Clone, Copy)]
pub struct TrainJob<'a> {
    /// The training options.
    pub options: &'a TrainOptions,
    /// How many heads train together.
    pub heads: usize,
    /// Whether the optimizer state is saved with the heads.
    pub optimizer_state: bool,
}

impl TrainJob<'_> {
    /// Why the GPU trainer cannot run this job, or `None` when it can.
    pub fn gpu_refusal(&self) -> Option<String> {
        train_plan::unsupported_options(self.options, self.heads).or_else(|| {
            self.optimizer_state
                .then(|| "saving the optimizer state runs on the CPU trainer".to_string())
        })
    }
}

/// The trainer a job runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainerKind {
    /// The CPU [`Trainer`].
    Cpu,
    /// The GPU trainer on CUDA device `N`.
    Gpu(usize),
}

impl std::fmt::Display for TrainerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrainerKind::Cpu => write!(f, "cpu"),
            TrainerKind::Gpu(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// The trainer chosen for a job and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainerChoice {
    /// Where the job trains.
    pub kind: TrainerKind,
    /// Why, in words.
    pub reason: String,
    /// True when a usable CUDA device was there (`auto`) but the GPU trainer refused the job.
    pub fell_back: bool,
}

/// Decides where a job asked to train on `requested` trains, given what `probe` found. `Cpu`
/// is always the CPU trainer; `Auto` takes the GPU trainer when a device is usable and the job
/// is one it runs, else the CPU trainer with the reason; an explicit CUDA device that is not
/// usable, or a job the GPU trainer refuses, is an error naming why.
pub fn choose_trainer(requested: Device, probe: &Probe, job: &TrainJob) -> Result<TrainerChoice> {
    let choice = device::choose(requested, probe)?;
    let ordinal = match choice.device {
        Device::Cuda(i) => i,
        _ => {
            return Ok(TrainerChoice {
                kind: TrainerKind::Cpu,
                reason: choice.reason,
                fell_back: false,
            })
        }
    };
    match (job.gpu_refusal(), requested) {
        (None, _) => Ok(TrainerChoice {
            kind: TrainerKind::Gpu(ordinal),
            reason: choice.reason,
            fell_back: false,
        }),
        (Some(why), Device::Auto) => Ok(TrainerChoice {
            kind: TrainerKind::Cpu,
            reason: format!("auto: {why}"),
            fell_back: true,
        }),
        (Some(why), _) => {
            Err(Error::InvalidArgument(format!("training on device cuda:{ordinal}: {why}")))
        }
    }
}

/// [`choose_trainer`] for the device asked for (`explicit`, else the `HYDRANT_DEVICE` value
/// `env`, else auto, as [`device::requested`]) on this build and machine.
pub fn choose_trainer_here(
    explicit: Option<Device>,
    env: Option<&str>,
    job: &TrainJob,
) -> Result<TrainerChoice> {
    choose_trainer(device::requested(explicit, env)?, &Probe::detect(), job)
}

/// The trainer a [`TrainerChoice`] names, behind one interface.
#[derive(Debug)]
pub enum DeviceTrainer {
    /// The CPU trainer.
    Cpu(Box<Trainer>),
    /// The GPU trainer.
    #[cfg(feature = "cuda")]
    Gpu(Box<gpu::Pending>),
}

impl DeviceTrainer {
    /// The trainer `choice` names for `heads` under `options`.
    pub fn new(choice: &TrainerChoice, heads: Vec<Head>, options: TrainOptions) -> Result<Self> {
        match choice.kind {
            TrainerKind::Cpu => Ok(DeviceTrainer::Cpu(Box::new(Trainer::new(heads, options)?))),
            #[cfg(feature = "cuda")]
            TrainerKind::Gpu(ordinal) => {
                Ok(DeviceTrainer::Gpu(Box::new(gpu::Pending::new(ordinal, heads, options)?)))
            }
            #[cfg(not(feature = "cuda"))]
            TrainerKind::Gpu(i) => Err(Error::InvalidArgument(format!(
                "training on device cuda:{i}: hydrant was built without the `cuda` feature"
            ))),
        }
    }

    /// Moves the heads and options to the trainer `choice` names; only before any sample is
    /// added or epoch run (a resumed trainer stays where it is). On failure nothing changes.
    pub fn move_to(&mut self, choice: &TrainerChoice) -> Result<()> {
        if self.kind() == choice.kind {
            return Ok(());
        }
        if self.samples() > 0 || !self.history().is_empty() {
            return Err(Error::InvalidArgument(format!(
                "the trainer moves to {} only before samples are added and epochs run",
                choice.kind
            )));
        }
        let options = self.options().clone();
        let heads = self.heads()?;
        *self = DeviceTrainer::new(choice, heads, options)?;
        Ok(())
    }

    /// The training options.
    pub fn options(&self) -> &TrainOptions {
        match self {
            DeviceTrainer::Cpu(t) => t.options(),
            #[cfg(feature = "cuda")]
            DeviceTrainer::Gpu(g) => &g.options,
        }
    }

    /// Where this trainer trains.
    pub fn kind(&self) -> TrainerKind {
        match self {
            DeviceTrainer::Cpu(_) => TrainerKind::Cpu,
            #[cfg(feature = "cuda")]
            DeviceTrainer::Gpu(g) => TrainerKind::Gpu(g.ordinal),
        }
    }

    /// The heads' names, in trainer order.
    pub fn head_names(&self) -> Vec<&str> {
        match self {
            DeviceTrainer::Cpu(t) => t.head_names(),
            #[cfg(feature = "cuda")]
            DeviceTrainer::Gpu(g) => vec![g.head.name()],
        }
    }

    /// The trunk tensors the heads read.
    pub fn inputs(&self) -> Vec<&str> {
        match self {
            DeviceTrainer::Cpu(t) => t.inputs(),
            #[cfg(feature = "cuda")]
            DeviceTrainer::Gpu(g) => vec![g.head.spec().input()],
        }
    }

    /// Samples added so far.
    pub fn samples(&self) -> usize {
        match self {
            DeviceTrainer::Cpu(t) => t.samples(),
            #[cfg(feature = "cuda")]
            DeviceTrainer::Gpu(g) => g.samples(),
        }
    }

    /// Where the features are held, in words.
    pub fn cache_place(&self) -> &'static str {
        match self {
            DeviceTrainer::Cpu(t) if t.cache_on_disk() => "a memory-mapped file",
            DeviceTrainer::Cpu(_) => "RAM",
            #[cfg(feature = "cuda")]
            DeviceTrainer::Gpu(_) => "RAM, then device memory when they fit the memory budget",
        }
    }

    /// Adds samples, as [`Trainer::add_features`].
    pub fn add_features(
        &mut self,
        features: &[(&str, &Tensor)],
        labels: &[(&str, Labels)],
    ) -> Result<()> {
        match self {
            DeviceTrainer::Cpu(t) => t.add_features(features, labels),
            #[cfg(feature = "cuda")]
            DeviceTrainer::Gpu(g) => g.add_features(features, labels),
        }
    }

    /// Adds samples from model inputs, as [`Trainer::add_samples`].
    pub fn add_samples(
        &mut self,
        model: &crate::Model,
        inputs: &[(&str, &Tensor)],
        labels: &[(&str, Labels)],
        chunk: usize,
    ) -> Result<()> {
        match self {
            DeviceTrainer::Cpu(t) => t.add_samples(model, inputs, labels, chunk),
            #[cfg(feature = "cuda")]
            DeviceTrainer::Gpu(g) => {
                let name = g.head.spec().input().to_string();
                let features = model.tensors(inputs, &[name.as_str()])?.get(&name)?;
                g.add_features(&[(name.as_str(), &features)], labels)
            }
        }
    }

    /// Runs `epochs` epochs (the options' count when `None`), calling `on_epoch` after each, as
    /// [`Trainer::fit`].
    pub fn fit(
        &mut self,
        epochs: Option<usize>,
        on_epoch: impl FnMut(&EpochReport) -> ControlFlow<()>,
    ) -> Result<Vec<EpochReport>> {
        match self {
            DeviceTrainer::Cpu(t) => t.fit(epochs, on_epoch),
            #[cfg(feature = "cuda")]
            DeviceTrainer::Gpu(g) => g.fit(epochs, on_epoch),
        }
    }

    /// Every epoch run so far.
    pub fn history(&self) -> &[EpochReport] {
        match self {
            DeviceTrainer::Cpu(t) => t.history(),
            #[cfg(feature = "cuda")]
            DeviceTrainer::Gpu(g) => &g.history,
        }
    }

    /// The heads with their current weights.
    pub fn heads(&mut self) -> Result<Vec<Head>> {
        match self {
            DeviceTrainer::Cpu(t) => t.heads(),
            #[cfg(feature = "cuda")]
            DeviceTrainer::Gpu(g) => Ok(vec![g.head()?]),
        }
    }

    /// Metrics of every head, as [`Trainer::evaluate`] (CPU trainer only).
    pub fn evaluate(&mut self) -> Result<Vec<TaskMetrics>> {
        match self {
            DeviceTrainer::Cpu(t) => t.evaluate(),
            #[cfg(feature = "cuda")]
            DeviceTrainer::Gpu(_) => Err(Error::InvalidArgument(
                "evaluating runs on the CPU trainer: save the trained head and evaluate it, or \
                 train on the cpu device"
                    .into(),
            )),
        }
    }

    /// Writes the whole training state to `path`, as [`Trainer::save_checkpoint`] (CPU
    /// trainer only).
    pub fn save_checkpoint(&mut self, path: impl AsRef<std::path::Path>) -> Result<()> {
        match self {
            DeviceTrainer::Cpu(t) => t.save_checkpoint(path),
            #[cfg(feature = "cuda")]
            DeviceTrainer::Gpu(_) => Err(Error::InvalidArgument(
                "checkpoints (the optimizer state) are written by the CPU trainer: train on the \
                 cpu device to resume later"
                    .into(),
            )),
        }
    }

    /// The trained heads, with the optimizer state when `with_optimizer` (CPU trainer only).
    pub fn head_set(&mut self, with_optimizer: bool) -> Result<HeadSet> {
        match self {
            DeviceTrainer::Cpu(t) => t.head_set(with_optimizer),
            #[cfg(feature = "cuda")]
            DeviceTrainer::Gpu(g) => {
                if with_optimizer {
                    return Err(Error::InvalidArgument(
                        "saving the optimizer state runs on the CPU trainer".into(),
                    ));
                }
                Ok(HeadSet::new(vec![g.head()?]))
            }
        }
    }
}

#[cfg(feature = "cuda")]
mod gpu {
    //! The GPU trainer with its samples gathered on the host until training starts (it takes
    //! them once).

    use super::*;
    use crate::backend::cuda::context::GpuContext;
    use crate::backend::cuda::train::GpuTrainer;

    /// The GPU trainer, made when training starts.
    #[derive(Debug)]
    pub struct Pending {
        pub(super) ordinal: usize,
        pub(super) head: Head,
        pub(super) history: Vec<EpochReport>,
        pub(super) options: TrainOptions,
        features: Vec<Tensor>,
        labels: Vec<Labels>,
        trainer: Option<GpuTrainer>,
    }

    impl Pending {
        pub(super) fn new(ordinal: usize, heads: Vec<Head>, options: TrainOptions) -> Result<Self> {
            let job = TrainJob { options: &options, heads: heads.len(), optimizer_state: false };
            if let Some(why) = job.gpu_refusal() {
                return Err(Error::InvalidArgument(format!(
                    "training on device cuda:{ordinal}: {why}"
                )));
            }
            options.validate(1)?;
            let head = heads
                .into_iter()
                .next()
                .ok_or_else(|| Error::InvalidArgument("the GPU trainer needs one head".into()))?;
            Ok(Pending {
                ordinal,
                head,
                history: Vec::new(),
                options,
                features: Vec::new(),
                labels: Vec::new(),
                trainer: None,
            })
        }

        pub(super) fn samples(&self) -> usize {
            self.features.iter().map(|f| f.shape().first().copied().unwrap_or(0)).sum()
        }

        pub(super) fn add_features(
            &mut self,
            features: &[(&str, &Tensor)],
            labels: &[(&str, Labels)],
        ) -> Result<()> {
            if self.trainer.is_some() {
                return Err(Error::InvalidArgument(
                    "samples cannot be added once training has started".into(),
                ));
            }
            let input = self.head.spec().input();
            let name = self.head.name();
            let f = features
                .iter()
                .find(|(n, _)| *n == input)
                .map(|(_, t)| *t)
                .ok_or_else(|| Error::MissingFeature(input.to_string()))?;
            let n = f.shape().first().copied().unwrap_or(0);
            let mut mine = None;
            for (h, l) in labels {
                if *h != name {
                    return Err(Error::UnknownHead { name: h.to_string(), available: name.into() });
                }
                mine = Some(l.clone());
            }
            let l = mine.ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "the GPU trainer needs labels for head `{name}` with every batch of samples"
                ))
            })?;
            if l.rows() != n {
                return Err(Error::BadTensor(format!(
                    "labels of head `{name}` have {} rows for {n} samples",
                    l.rows()
                )));
            }
            self.features.push(f.to_f32());
            self.labels.push(l);
            Ok(())
        }

        /// The trainer, made (and given every sample) on first use.
        fn trainer(&mut self) -> Result<&mut GpuTrainer> {
            if self.trainer.is_none() {
                let gpu = GpuContext::shared(self.ordinal)?;
                let mut t = GpuTrainer::new(
                    gpu,
                    &self.head,
                    self.options.clone(),
                    self.options.memory_budget,
                )?;
                let features = Tensor::concat_rows(&std::mem::take(&mut self.features))?;
                t.add_features(&features, concat_labels(&std::mem::take(&mut self.labels))?)?;
                self.trainer = Some(t);
            }
            self.trainer.as_mut().ok_or_else(|| Error::InvalidArgument("no GPU trainer".into()))
        }

        pub(super) fn fit(
            &mut self,
            epochs: Option<usize>,
            mut on_epoch: impl FnMut(&EpochReport) -> ControlFlow<()>,
        ) -> Result<Vec<EpochReport>> {
            let epochs = epochs.unwrap_or(self.options.epochs);
            let mut reports = Vec::with_capacity(epochs);
            for _ in 0..epochs {
                let report =
                    self.trainer()?.fit(Some(1))?.into_iter().next().ok_or_else(|| {
                        Error::InvalidArgument("the GPU trainer ran no epoch".into())
                    })?;
                self.history.push(report.clone());
                let stop = on_epoch(&report).is_break();
                reports.push(report);
                if stop {
                    break;
                }
            }
            Ok(reports)
        }

        pub(super) fn head(&mut self) -> Result<Head> {
            match &self.trainer {
                Some(t) => t.head(),
                None => Ok(self.head.clone()),
            }
        }
    }
}

/// The labels of several sample batches as one (unmasked batches count as all labelled); the
/// GPU trainer takes its samples once.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn concat_labels(parts: &[Labels]) -> Result<Labels> {
    if parts.is_empty() {
        return Err(Error::InvalidArgument(
            "no samples to train on: add features and labels first".into(),
        ));
    }
    let values: Vec<Tensor> = parts.iter().map(|l| l.values().clone()).collect();
    let values = Tensor::concat_rows(&values)?;
    if parts.iter().all(|l| l.mask().is_none()) {
        return Ok(Labels::new(values));
    }
    let mask = parts
        .iter()
        .flat_map(|l| match l.mask() {
            Some(m) => m.to_vec(),
            None => vec![true; l.rows()],
        })
        .collect();
    Labels::masked(values, mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::{EarlyStopping, Weighting};

    fn job(options: &TrainOptions, heads: usize) -> TrainJob<'_> {
        TrainJob { options, heads, optimizer_state: false }
    }

    #[test]
    fn cpu_is_the_cpu_trainer_whatever_the_machine_or_job() {
        let o = TrainOptions { validation_fraction: 0.2, ..TrainOptions::default() };
        for probe in [Probe::NotBuilt, Probe::NoDriver, Probe::Devices(2)] {
            let c = choose_trainer(Device::Cpu, &probe, &job(&o, 3)).unwrap();
            assert_eq!((c.kind, c.fell_back), (TrainerKind::Cpu, false), "{probe:?}");
        }
    }

    #[test]
    fn auto_takes_the_gpu_for_a_job_it_runs() {
        let o = TrainOptions::default();
        let c = choose_trainer(Device::Auto, &Probe::Devices(1), &job(&o, 1)).unwrap();
        assert_eq!((c.kind, c.fell_back), (TrainerKind::Gpu(0), false));
        let c = choose_trainer(Device::Cuda(1), &Probe::Devices(2), &job(&o, 1)).unwrap();
        assert_eq!(c.kind, TrainerKind::Gpu(1));
        assert_eq!(c.kind.to_string(), "cuda:1");
    }

    #[test]
    fn auto_without_a_device_trains_on_the_cpu_and_says_why() {
        let o = TrainOptions::default();
        for (probe, words) in [
            (Probe::NotBuilt, "without the `cuda` feature"),
            (Probe::NoDriver, "no CUDA driver"),
            (Probe::Devices(0), "no device"),
        ] {
            let c = choose_trainer(Device::Auto, &probe, &job(&o, 1)).unwrap();
            assert_eq!((c.kind, c.fell_back), (TrainerKind::Cpu, false), "{probe:?}");
            assert!(c.reason.contains(words), "{}", c.reason);
        }
    }

    #[test]
    fn a_job_the_gpu_refuses_falls_back_under_auto_and_fails_under_cuda() {
        let plain = TrainOptions::default();
        let validated = TrainOptions { validation_fraction: 0.1, ..TrainOptions::default() };
        let stopping = TrainOptions {
            early_stopping: Some(EarlyStopping { patience: 2, min_delta: 0.0, restore_best: true }),
            ..TrainOptions::default()
        };
        let weighted =
            TrainOptions { weighting: Weighting::Uncertainty, ..TrainOptions::default() };
        let saving = TrainJob { options: &plain, heads: 1, optimizer_state: true };
        for (j, words) in [
            (job(&plain, 2), "one head at a time"),
            (job(&validated, 1), "validation"),
            (job(&stopping, 1), "early stopping"),
            (job(&weighted, 1), "weighting"),
            (saving, "optimizer state"),
        ] {
            let c = choose_trainer(Device::Auto, &Probe::Devices(1), &j).unwrap();
            assert_eq!((c.kind, c.fell_back), (TrainerKind::Cpu, true), "{words}");
            assert!(c.reason.starts_with("auto: ") && c.reason.contains(words), "{}", c.reason);
            let e = choose_trainer(Device::Cuda(0), &Probe::Devices(1), &j).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
            assert!(e.to_string().contains("cuda:0") && e.to_string().contains(words), "{e}");
        }
    }

    #[test]
    fn explicit_cuda_without_a_device_is_an_error_naming_why() {
        let o = TrainOptions::default();
        for (probe, words) in [
            (Probe::NotBuilt, "without the `cuda` feature"),
            (Probe::NoDriver, "no CUDA driver"),
            (Probe::Devices(1), "sees 1 device(s)"),
        ] {
            let e = choose_trainer(Device::Cuda(1), &probe, &job(&o, 1)).unwrap_err();
            assert!(e.to_string().contains("cuda:1") && e.to_string().contains(words), "{e}");
        }
    }

    #[test]
    fn the_environment_is_read_when_no_device_is_given() {
        let o = TrainOptions::default();
        let c = choose_trainer_here(None, Some("cpu"), &job(&o, 1)).unwrap();
        assert_eq!(c.kind, TrainerKind::Cpu);
        let e = choose_trainer_here(None, Some("gpu"), &job(&o, 1)).unwrap_err();
        assert!(e.to_string().contains("HYDRANT_DEVICE"), "{e}");
        if cfg!(not(feature = "cuda")) {
            assert!(choose_trainer_here(Some(Device::Cuda(0)), None, &job(&o, 1)).is_err());
            let c = choose_trainer_here(Some(Device::Auto), None, &job(&o, 1)).unwrap();
            assert_eq!(c.kind, TrainerKind::Cpu);
        }
    }

    #[test]
    fn label_batches_join_with_their_masks() {
        let t = |v: Vec<i64>| Tensor::new::<i64>(&[v.len()], v).unwrap();
        let plain = concat_labels(&[Labels::new(t(vec![1, 2])), Labels::new(t(vec![3]))]).unwrap();
        assert!(plain.mask().is_none());
        assert_eq!(plain.values().as_slice::<i64>().unwrap(), &[1, 2, 3]);
        let parts =
            [Labels::new(t(vec![1, 2])), Labels::masked(t(vec![3, 4]), vec![false, true]).unwrap()];
        let joined = concat_labels(&parts).unwrap();
        assert_eq!(joined.mask().unwrap(), &[true, true, false, true]);
        assert_eq!(joined.values().as_slice::<i64>().unwrap(), &[1, 2, 3, 4]);
        assert!(concat_labels(&[]).is_err());
        let f = Tensor::new::<f32>(&[1], vec![0.5]).unwrap();
        assert!(concat_labels(&[Labels::new(t(vec![1])), Labels::new(f)]).is_err(), "types differ");
    }

    #[test]
    fn a_trainer_moves_only_before_it_has_samples() {
        let spec = crate::train::HeadSpec {
            name: "h".into(),
            inputs: vec!["x".into()],
            outputs: Vec::new(),
            layers: vec![crate::train::LayerSpec::Linear {
                in_features: 3,
                out_features: 2,
                bias: true,
            }],
            task: Some(crate::train::TaskSpec::from_loss_name("ce", 2).unwrap()),
        };
        let head = Head::init(spec, crate::train::Init::KaimingNormal, 1).unwrap();
        let cpu = TrainerChoice { kind: TrainerKind::Cpu, reason: "r".into(), fell_back: false };
        let gpu = TrainerChoice { kind: TrainerKind::Gpu(0), ..cpu.clone() };
        let t = DeviceTrainer::new(&cpu, vec![head], TrainOptions::default()).unwrap();
        let mut t = t;
        t.move_to(&cpu).unwrap();
        let x = Tensor::new::<f32>(&[2, 3], vec![0.0; 6]).unwrap();
        let y = Tensor::new::<i64>(&[2], vec![0, 1]).unwrap();
        t.add_features(&[("x", &x)], &[("h", Labels::new(y))]).unwrap();
        let e = t.move_to(&gpu).unwrap_err();
        assert!(e.to_string().contains("before samples are added"), "{e}");
        assert_eq!((t.kind(), t.samples()), (TrainerKind::Cpu, 2), "unchanged by the refusal");
    }

    #[test]
    fn a_gpu_choice_without_the_feature_is_an_error_not_a_panic() {
        let choice =
            TrainerChoice { kind: TrainerKind::Gpu(0), reason: "made up".into(), fell_back: false };
        if cfg!(not(feature = "cuda")) {
            let e = DeviceTrainer::new(&choice, Vec::new(), TrainOptions::default()).unwrap_err();
            assert!(e.to_string().contains("`cuda` feature"), "{e}");
        }
    }
}
