//! `hydrant bench`: latency medians measured in one run, optionally beside onnxruntime.

use crate::ModelArgs;
use hydrant::backend::cpu_ops::probe::thread_cpu_ms;
use hydrant::{Dim, Error, Model, Tensor};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `hydrant bench`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Batch size (the value of every symbolic input dimension).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Timed repetitions per measurement (after 3 warm-up runs).
    #[arg(long, default_value_t = 30)]
    iters: usize,
    /// Also time onnxruntime on the same file and threads (runs bench/peer_ort.py).
    #[arg(long)]
    vs_ort: bool,
    /// Measure the calling thread's on-CPU time instead of wall time (needs --threads 1; robust
    /// when other processes share the cores). Passed on to onnxruntime's side.
    #[arg(long)]
    cpu_time: bool,
    /// Time only the full graph (skip per-head and stored-feature measurements).
    #[arg(long)]
    full_only: bool,
    /// Also print a per-node profile of one full run (time per op type and the slowest nodes).
    #[arg(long)]
    profile: bool,
    /// How many of the slowest nodes the profile lists.
    #[arg(long, default_value_t = 12)]
    slowest: usize,
    /// Python interpreter with onnxruntime (default: .venv/bin/python if present, else python3).
    #[arg(long)]
    python: Option<PathBuf>,
}

/// Median wall time in milliseconds of `iters` runs of `f`, after 3 warm-up runs.
pub fn median_ms(iters: usize, f: impl FnMut() -> hydrant::Result<()>) -> hydrant::Result<f64> {
    median_by(iters, false, f)
}

/// Median milliseconds of `iters` runs of `f` after 3 warm-up runs: wall time, or with `cpu`
/// the calling thread's on-CPU time.
fn median_by(
    iters: usize,
    cpu: bool,
    mut f: impl FnMut() -> hydrant::Result<()>,
) -> hydrant::Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    let start = Instant::now();
    let now = || match cpu {
        true => thread_cpu_ms().unwrap_or(f64::NAN),
        false => start.elapsed().as_secs_f64() * 1e3,
    };
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        let t = now();
        f()?;
        times.push(now() - t);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Deterministic pseudo-random inputs for every model input, batch dimension = `batch`.
pub fn random_inputs(model: &Model, batch: usize) -> hydrant::Result<Vec<(String, Tensor)>> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    model
        .inputs()
        .iter()
        .map(|spec| {
            let shape: Vec<usize> = spec
                .shape
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => *n,
                    Dim::Symbolic(_) => batch,
                })
                .collect();
            let n = hydrant::tensor::element_count(&shape)?;
            let data: Vec<f32> = (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
                })
                .collect();
            let t = Tensor::new(&shape, data)?;
            let t = if spec.dtype == hydrant::DType::F32 { t } else { cast(t, spec.dtype)? };
            Ok((spec.name.clone(), t))
        })
        .collect()
}

fn cast(t: Tensor, dtype: hydrant::DType) -> hydrant::Result<Tensor> {
    let shape = t.shape().to_vec();
    let v = t.into_vec::<f32>()?;
    match dtype {
        hydrant::DType::U8 => {
            Tensor::new(&shape, v.iter().map(|x| ((x + 1.0) * 127.0) as u8).collect())
        }
        hydrant::DType::I64 => Tensor::new(&shape, v.iter().map(|&x| (x > 0.0) as i64).collect()),
        d => Err(Error::InvalidArgument(format!("bench cannot make {d} inputs"))),
    }
}

pub fn main(args: Args) -> hydrant::Result<()> {
    let model = args.model.load()?;
    if args.cpu_time && (model.threads() != 1 || thread_cpu_ms().is_none()) {
        return Err(Error::InvalidArgument(
            "--cpu-time needs --threads 1 and a thread CPU clock".into(),
        ));
    }
    let cpu = args.cpu_time;
    let owned = random_inputs(&model, args.batch)?;
    let inputs: Vec<(&str, &Tensor)> = owned.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let head_names = model.head_names();
    let heads: Vec<&str> = head_names.iter().map(String::as_str).collect();
    let iters = args.iters;
    println!(
        "model {}  batch {}  threads {}  device {:?} {}  ({} timed runs each, medians)",
        args.model.model.display(),
        args.batch,
        model.threads(),
        model.device(),
        model.precision(),
        iters
    );
    if cpu {
        println!("times are on-CPU milliseconds of the calling thread");
    }
    let full = median_by(iters, cpu, || model.run(&inputs, &[]).map(drop))?;
    let summary = model.summary();
    let flops = summary.heads.iter().fold(summary.trunk.flops, |acc, h| Some(acc? + h.flops?));
    if let Some(f) = flops {
        let f = f as f64 * args.batch as f64;
        println!(
            "full graph {full:.3} ms, {} FLOP, {:.1} GFLOP/s",
            crate::human(f),
            f / full / 1e6
        );
    }
    if args.profile {
        print_profile(&model.profile(&inputs, iters)?, args.slowest);
    }
    let mut rows: Vec<(String, f64)> = vec![("full graph: trunk once + all heads".into(), full)];
    for h in heads.iter().filter(|_| !args.full_only) {
        let t = median_by(iters, cpu, || model.run(&inputs, &[h]).map(drop))?;
        rows.push((format!("head {h}: only what it needs"), t));
    }
    if !args.full_only {
        let features = model.trunk(&inputs)?;
        let t = median_by(iters, cpu, || model.heads(&features, &[]).map(drop))?;
        rows.push(("all heads on stored features".into(), t));
        for h in &heads {
            let t = median_by(iters, cpu, || model.heads(&features, &[h]).map(drop))?;
            rows.push((format!("head {h} on stored features"), t));
        }
        let separate = median_by(iters, cpu, || {
            heads.iter().try_for_each(|h| model.run(&inputs, &[h]).map(drop))
        })?;
        rows.push((
            format!("{} separate single-task models (trunk per head)", heads.len()),
            separate,
        ));
    }
    println!("{:<52} {:>10} {:>10}", "measurement", "median ms", "vs full");
    for (name, t) in &rows {
        println!("{name:<52} {t:>10.3} {:>9.2}x", t / full);
    }
    if args.vs_ort {
        let peer = peer_ort(&args, model.threads())?;
        let ort_full = peer["full_ms"].as_f64().ok_or_else(|| {
            Error::InvalidArgument(format!("bench/peer_ort.py printed no full_ms: {peer}"))
        })?;
        println!();
        println!("{:<52} {:>10} {:>10}", "full graph, same file and threads", "median ms", "ratio");
        println!(
            "{:<52} {ort_full:>10.3} {:>9.2}x",
            format!("onnxruntime {}", peer["version"].as_str().unwrap_or("")),
            1.0
        );
        println!("{:<52} {full:>10.3} {:>9.2}x", "hydrant", full / ort_full);
        if let Some(per_head) = peer["heads_ms"].as_object() {
            for h in &heads {
                if let Some(ms) = per_head.get(*h).and_then(Value::as_f64) {
                    println!("{:<52} {ms:>10.3}", format!("onnxruntime, outputs of head {h} only"));
                }
            }
        }
    }
    Ok(())
}

/// Prints the time per op type and the `slowest` slowest nodes of a profile.
fn print_profile(times: &[hydrant::NodeTime], slowest: usize) {
    let total: f64 = times.iter().map(|t| t.ms).sum();
    let mut by_op: Vec<(String, f64, usize)> = Vec::new();
    for t in times {
        match by_op.iter_mut().find(|(op, _, _)| *op == t.op) {
            Some(e) => {
                e.1 += t.ms;
                e.2 += 1;
            }
            None => by_op.push((t.op.clone(), t.ms, 1)),
        }
    }
    by_op.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!("profile: {total:.3} ms in {} nodes (medians per node)", times.len());
    for (op, ms, n) in &by_op {
        println!("  {op:<40} {n:>4} nodes {ms:>9.3} ms {:>5.1}%", 100.0 * ms / total);
    }
    let mut slow: Vec<&hydrant::NodeTime> = times.iter().collect();
    slow.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    println!("  slowest nodes:");
    for t in slow.iter().take(slowest) {
        println!("  {:>9.3} ms  {:<24} {}", t.ms, t.op, t.node);
    }
    println!();
}

fn peer_ort(args: &Args, threads: usize) -> hydrant::Result<Value> {
    let mut argv: Vec<std::ffi::OsString> = vec![args.model.model.clone().into()];
    for (flag, value) in [("--batch", args.batch), ("--threads", threads), ("--iters", args.iters)]
    {
        argv.extend([flag.into(), value.to_string().into()]);
    }
    if args.cpu_time {
        argv.push("--cpu-time".into());
    }
    crate::peer::run(args.python.as_deref(), "peer_ort.py", argv)
}
