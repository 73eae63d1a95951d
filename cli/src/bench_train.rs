//! `hydrant bench-train`: head training speed, optionally beside PyTorch in the same run.
//!
//! Three measurements, each on the same weights and data for both sides (hydrant writes the
//! heads, features and labels to a temporary folder and `bench/peer_torch.py` reads them):
//! one training step (forward, backward, optimizer update) of an MLP head and of a convolutional
//! segmentation head, with SGD-momentum and AdamW; and a whole fine-tune of the head of a
//! safetensors model — hydrant computes trunk features once and trains on the cache, PyTorch's
//! frozen-trunk recipe re-runs the trunk under `no_grad` every epoch.

use crate::bench::random_inputs;
use hydrant::backend::cpu_ops::probe::process_cpu_ms;
use hydrant::train::{Init, OptimizerSpec, UpsampleMode};
use hydrant::{
    Error, Head, HeadSet, HeadSpec, Labels, LayerSpec, LoadOptions, Model, TaskSpec, Tensor,
    TrainOptions, Trainer,
};
use serde_json::{json, Value};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `hydrant bench-train`.
#[derive(clap::Args)]
pub struct Args {
    /// Timed epochs per step measurement (after 2 warm-up epochs); the step time is an epoch's
    /// time divided by its steps.
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Optimizer steps per timed epoch.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Timed repetitions of the whole fine-tune (after 1 warm-up).
    #[arg(long, default_value_t = 3)]
    finetune_iters: usize,
    /// Epochs of the fine-tune.
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    /// Samples of the fine-tune.
    #[arg(long, default_value_t = 512)]
    samples: usize,
    /// Training threads (hydrant's trainer and trunk; PyTorch's `set_num_threads`).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// The whole model (trunk and heads in one safetensors file) for the fine-tune.
    #[arg(long, default_value = "tests/fixtures/train/whole.safetensors")]
    model: PathBuf,
    /// The model's head to fine-tune.
    #[arg(long, default_value = "cls")]
    head: String,
    /// Measure the process's on-CPU time (all threads) instead of wall time: robust when other
    /// processes share the cores. Needs --threads 1 (idle-spinning threads would count).
    /// Passed on to PyTorch's side (`time.process_time`).
    #[arg(long)]
    cpu_time: bool,
    /// Also time PyTorch on the same heads and data (runs bench/peer_torch.py).
    #[arg(long)]
    vs_torch: bool,
    /// Python interpreter with torch and safetensors (default: .venv/bin/python if present,
    /// else python3).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Run only the measurements whose name contains this text (`mlp_sgd`, `mlp_adamw`,
    /// `seg_sgd`, `seg_adamw`, `finetune`; `seg` selects both segmentation steps).
    #[arg(long)]
    only: Option<String>,
}

impl Args {
    /// Whether the measurement `name` runs.
    fn selected(&self, name: &str) -> bool {
        self.only.as_deref().is_none_or(|only| name.contains(only))
    }
}

/// One step measurement: a head, its data, its optimizer.
struct StepCase {
    name: &'static str,
    head: Head,
    features: Tensor,
    labels: Tensor,
    batch: usize,
    optimizer: OptimizerSpec,
    lr: f32,
}

/// Deterministic values in [-1, 1).
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ seed.wrapping_mul(0xD1B5_4A32_D192_ED03);
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// Deterministic class ids in `0..classes`.
fn classes(shape: &[usize], classes: usize, seed: u64) -> hydrant::Result<Tensor> {
    let n = hydrant::tensor::element_count(shape)?;
    let top = classes as i64 - 1;
    let ids = noise(n, seed)
        .iter()
        .map(|v| (((v + 1.0) * 0.5 * classes as f32) as i64).min(top))
        .collect();
    Tensor::new(shape, ids)
}

fn mlp_head() -> hydrant::Result<Head> {
    let layers = vec![
        LayerSpec::Linear { in_features: 512, out_features: 128, bias: true },
        LayerSpec::Relu,
        LayerSpec::Linear { in_features: 128, out_features: 10, bias: true },
    ];
    let task = TaskSpec::from_loss_name("ce", 10)?;
    Head::init(HeadSpec::new("mlp", "features", layers, Some(task)), Init::PyTorch, 1)
}

/// The segmentation head of the parity fixtures, widened to 32 input channels.
fn seg_head() -> hydrant::Result<Head> {
    let layers = vec![
        LayerSpec::Conv2d {
            in_channels: 32,
            out_channels: 16,
            kernel_size: 3,
            stride: 1,
            padding: 1,
            dilation: 1,
            groups: 1,
            bias: false,
        },
        LayerSpec::BatchNorm2d { num_features: 16, eps: 1e-5, momentum: 0.1 },
        LayerSpec::Relu,
        LayerSpec::Conv2d {
            in_channels: 16,
            out_channels: 3,
            kernel_size: 1,
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
            bias: true,
        },
        LayerSpec::Upsample2x { mode: UpsampleMode::Nearest },
    ];
    let task = TaskSpec::from_loss_name("ce", 3)?;
    Head::init(HeadSpec::new("seg", "features", layers, Some(task)), Init::PyTorch, 2)
}

fn step_cases(steps: usize) -> hydrant::Result<Vec<StepCase>> {
    let sgd = OptimizerSpec::sgd(0.9, 0.0);
    let adamw = OptimizerSpec::adamw(0.01);
    let (mlp_n, seg_n) = (32 * steps, 8 * steps);
    let mlp_x = Tensor::new(&[mlp_n, 512], noise(mlp_n * 512, 3))?;
    let mlp_y = classes(&[mlp_n], 10, 4)?;
    let seg_x = Tensor::new(&[seg_n, 32, 16, 16], noise(seg_n * 32 * 16 * 16, 5))?;
    let seg_y = classes(&[seg_n, 32, 32], 3, 6)?;
    let case = |name, head: &Head, x: &Tensor, y: &Tensor, batch, optimizer, lr| StepCase {
        name,
        head: head.clone(),
        features: x.clone(),
        labels: y.clone(),
        batch,
        optimizer,
        lr,
    };
    let (mlp, seg) = (mlp_head()?, seg_head()?);
    Ok(vec![
        case("mlp_sgd", &mlp, &mlp_x, &mlp_y, 32, sgd, 0.01),
        case("mlp_adamw", &mlp, &mlp_x, &mlp_y, 32, adamw, 1e-3),
        case("seg_sgd", &seg, &seg_x, &seg_y, 8, sgd, 0.01),
        case("seg_adamw", &seg, &seg_x, &seg_y, 8, adamw, 1e-3),
    ])
}

fn options(optimizer: OptimizerSpec, lr: f32, batch: usize, threads: usize) -> TrainOptions {
    TrainOptions {
        batch_size: batch,
        shuffle: false,
        lr,
        optimizer,
        threads,
        ..TrainOptions::default()
    }
}

/// Milliseconds on the benchmark's clock: wall time, or the process's on-CPU time.
#[derive(Clone, Copy)]
struct Clock {
    cpu: bool,
    start: Instant,
}

impl Clock {
    fn now(&self) -> f64 {
        match self.cpu {
            true => process_cpu_ms().unwrap_or(f64::NAN),
            false => self.start.elapsed().as_secs_f64() * 1e3,
        }
    }
}

/// Median of `times`.
fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times.get(times.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Median milliseconds per step, and the mean training loss of the first epoch.
fn time_steps(
    case: &StepCase,
    iters: usize,
    threads: usize,
    clock: Clock,
) -> hydrant::Result<(f64, f64)> {
    let mut trainer = Trainer::new(
        vec![case.head.clone()],
        options(case.optimizer, case.lr, case.batch, threads),
    )?;
    let labels = [(case.head.name(), Labels::new(case.labels.clone()))];
    trainer.add_features(&[("features", &case.features)], &labels)?;
    let first = trainer.fit(Some(1), |_| ControlFlow::Continue(()))?;
    let first_loss = first.first().and_then(|r| r.train.first()).map_or(f64::NAN, |m| m.loss);
    trainer.fit(Some(1), |_| ControlFlow::Continue(()))?;
    let steps = case.features.shape()[0].div_ceil(case.batch) as f64;
    let mut times = Vec::with_capacity(iters);
    let mut last = clock.now();
    trainer.fit(Some(iters.max(1)), |_| {
        let now = clock.now();
        times.push((now - last) / steps);
        last = now;
        ControlFlow::Continue(())
    })?;
    Ok((median(times), first_loss))
}

/// Inputs and labels of the fine-tune.
fn finetune_data(model: &Model, head: &Head, samples: usize) -> hydrant::Result<(Tensor, Tensor)> {
    let x = random_inputs(model, samples)?
        .into_iter()
        .next()
        .map(|(_, t)| t)
        .ok_or_else(|| Error::InvalidArgument("the model has no input".into()))?;
    let task = head.spec().task.as_ref().ok_or_else(|| {
        Error::InvalidArgument(format!("head `{}` has no task to train for", head.name()))
    })?;
    if !task.is_classification() {
        return Err(Error::InvalidArgument(format!(
            "head `{}`: the fine-tune benchmark trains classification heads",
            head.name()
        )));
    }
    Ok((x, classes(&[samples], task.channels(), 7)?))
}

/// One whole fine-tune: trunk features once (cached), then `epochs` epochs of the head; the
/// milliseconds it took and the last epoch's loss. The trainer (and its threads) ends after
/// the clock is read.
fn finetune(
    model: &Model,
    head: &Head,
    x: &Tensor,
    y: &Tensor,
    args: &Args,
    clock: Clock,
) -> hydrant::Result<(f64, f64)> {
    let start = clock.now();
    let sgd = OptimizerSpec::sgd(0.9, 0.0);
    let mut trainer = Trainer::new(vec![head.clone()], options(sgd, 0.01, 32, args.threads))?;
    let input = model.inputs().first().map(|s| s.name.clone()).unwrap_or_default();
    trainer.add_samples(model, &[(&input, x)], &[(head.name(), Labels::new(y.clone()))], 64)?;
    let reports = trainer.fit(Some(args.epochs), |_| ControlFlow::Continue(()))?;
    let ms = clock.now() - start;
    Ok((ms, reports.last().and_then(|r| r.train.first()).map_or(f64::NAN, |m| m.loss)))
}

/// Runs the measurements (and PyTorch's side with `--vs-torch`) and prints the table.
pub fn main(args: Args) -> hydrant::Result<()> {
    if args.cpu_time && (args.threads != 1 || process_cpu_ms().is_none()) {
        return Err(Error::InvalidArgument(
            "--cpu-time needs --threads 1 and a process CPU clock".into(),
        ));
    }
    let clock = Clock { cpu: args.cpu_time, start: Instant::now() };
    let dir = ScratchDir::new()?;
    let mut cases = step_cases(args.steps.max(1))?;
    cases.retain(|c| args.selected(c.name));
    println!(
        "threads {}, {}  ({} timed epochs of {} steps per step measurement, medians; load {})",
        args.threads,
        if args.cpu_time { "process on-CPU ms" } else { "wall-clock ms" },
        args.iters,
        args.steps,
        load_average()
    );
    let mut plan_cases = Vec::new();
    let mut ours = Vec::new();
    for case in &cases {
        let (ms, loss) = time_steps(case, args.iters, args.threads, clock)?;
        ours.push((ms, loss));
        let file = |what: &str| dir.path().join(format!("{}_{what}", case.name));
        HeadSet::new(vec![case.head.clone()]).save(file("head.safetensors"))?;
        hydrant::write_npy(file("x.npy"), &case.features)?;
        hydrant::write_npy(file("y.npy"), &case.labels)?;
        plan_cases.push(json!({
            "name": case.name, "head": file("head.safetensors"), "x": file("x.npy"),
            "y": file("y.npy"), "batch": case.batch, "lr": case.lr, "optimizer": case.optimizer,
        }));
    }
    let whole = match args.selected("finetune") {
        true => Some(time_finetune(&args, clock, dir.path())?),
        false => None,
    };
    let peer = if args.vs_torch {
        let plan = json!({
            "threads": args.threads, "iters": args.iters, "cpu_time": args.cpu_time,
            "cases": plan_cases,
            "finetune": whole.as_ref().map(|w| &w.plan),
        });
        let path = dir.path().join("plan.json");
        std::fs::write(&path, plan.to_string())
            .map_err(|e| Error::Io { path: path.clone(), source: e })?;
        Some(peer_torch(&args, &path)?)
    } else {
        None
    };
    print_table(&cases, &ours, whole.as_ref(), &args, peer.as_ref());
    println!("load after: {}", load_average());
    Ok(())
}

/// The whole fine-tune's result, and its part of PyTorch's plan.
struct Whole {
    ms: f64,
    final_loss: f64,
    plan: Value,
}

/// Times the whole fine-tune (median of `--finetune-iters` after one warm-up) and writes its
/// data for PyTorch into `dir`.
fn time_finetune(args: &Args, clock: Clock, dir: &Path) -> hydrant::Result<Whole> {
    let model = Model::load_safetensors(&args.model, LoadOptions::new().threads(args.threads))?;
    let head = HeadSet::load(&args.model)?.get(&args.head).cloned().ok_or_else(|| {
        Error::InvalidArgument(format!("{}: no head `{}`", args.model.display(), args.head))
    })?;
    let (x, y) = finetune_data(&model, &head, args.samples)?;
    finetune(&model, &head, &x, &y, args, clock)?;
    let mut runs = Vec::with_capacity(args.finetune_iters);
    let mut final_loss = f64::NAN;
    for _ in 0..args.finetune_iters.max(1) {
        let (ms, loss) = finetune(&model, &head, &x, &y, args, clock)?;
        runs.push(ms);
        final_loss = loss;
    }
    hydrant::write_npy(dir.join("ft_x.npy"), &x)?;
    hydrant::write_npy(dir.join("ft_y.npy"), &y)?;
    let plan = json!({
        "model": std::path::absolute(&args.model).unwrap_or(args.model.clone()),
        "head": args.head, "x": dir.join("ft_x.npy"),
        "y": dir.join("ft_y.npy"), "epochs": args.epochs, "batch": 32,
        "lr": 0.01, "optimizer": OptimizerSpec::sgd(0.9, 0.0),
        "iters": args.finetune_iters,
    });
    Ok(Whole { ms: median(runs), final_loss, plan })
}

fn describe(case: &StepCase) -> String {
    let what = if case.name.starts_with("mlp") {
        "MLP 512→128→10".to_string()
    } else {
        "conv seg head on 32×16×16".to_string()
    };
    let opt = match case.optimizer {
        OptimizerSpec::Sgd { .. } => "SGD-momentum",
        OptimizerSpec::AdamW { .. } => "AdamW",
    };
    format!("step: {what}, batch {}, {opt}", case.batch)
}

fn print_table(
    cases: &[StepCase],
    ours: &[(f64, f64)],
    whole: Option<&Whole>,
    args: &Args,
    peer: Option<&Value>,
) {
    let torch = |path: &[&str]| -> Option<f64> {
        let mut v = peer?;
        for p in path {
            v = v.get(p)?;
        }
        v.as_f64()
    };
    println!(
        "{:<52} {:>12} {:>12} {:>9}   first-epoch loss hydrant / torch",
        "measurement (median)", "hydrant ms", "PyTorch ms", "speed-up"
    );
    let row = |name: &str, ms: f64, theirs: Option<f64>, tail: String| {
        let (t, r) = match theirs {
            Some(t) => (format!("{t:.3}"), format!("{:.2}×", t / ms)),
            None => ("—".into(), "—".into()),
        };
        println!("{name:<52} {ms:>12.3} {t:>12} {r:>9}   {tail}");
    };
    for (case, (ms, loss)) in cases.iter().zip(ours) {
        let their_loss = torch(&["cases", case.name, "first_epoch_loss"]);
        let tail = format!("{loss:.5} / {}", their_loss.map_or("—".into(), |l| format!("{l:.5}")));
        row(&describe(case), *ms, torch(&["cases", case.name, "step_ms"]), tail);
    }
    let Some(whole) = whole else { return print_version(args, peer) };
    let name =
        format!("fine-tune `{}`: {} samples, {} epochs", args.head, args.samples, args.epochs);
    let tail = format!(
        "final loss {:.5} / {}",
        whole.final_loss,
        torch(&["finetune", "final_loss"]).map_or("—".into(), |l| format!("{l:.5}"))
    );
    row(&name, whole.ms, torch(&["finetune", "rerun_trunk_ms"]), tail);
    if let Some(cached) = torch(&["finetune", "cached_features_ms"]) {
        println!(
            "{:<52} {:>12} {cached:>12.3} {:>9}",
            "  PyTorch with features cached once (for reference)",
            "",
            format!("{:.2}×", cached / whole.ms)
        );
    }
    print_version(args, peer);
}

/// The PyTorch version line, when PyTorch ran.
fn print_version(args: &Args, peer: Option<&Value>) {
    if let Some(v) = peer.and_then(|p| p.get("version")).and_then(Value::as_str) {
        println!("PyTorch {v}, {} threads", args.threads);
    }
}

/// A folder for the files handed to PyTorch, removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> hydrant::Result<ScratchDir> {
        let path = std::env::temp_dir().join(format!("hydrant-bench-train-{}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| Error::Io { path: path.clone(), source: e })?;
        Ok(ScratchDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn peer_torch(args: &Args, plan: &Path) -> hydrant::Result<Value> {
    crate::peer::run(args.python.as_deref(), "peer_torch.py", [plan])
}
