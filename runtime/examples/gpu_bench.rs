//! GPU benchmark of whole models (feature `cuda`): each model's graph as one GPU segment, at
//! each batch size and storage type, GPU time per run from CUDA events, median of the timed
//! runs after warm-up. One line per setting, for bench/peer_torch_gpu.py to read:
//!
//! `hydrant <model> batch <N> <f32|f16|bf16> <median ms>` (or `... fallback <reason>`)
//!
//!     gpu_bench MODEL.onnx [MODEL.onnx…] [--batch 1,64] [--storage f32,f16] [--iters 50]

use hydrant::backend::cuda::context::GpuContext;
use hydrant::backend::cuda::exec::{GpuSegment, Storage};
use hydrant::graph::OnnxGraph;
use hydrant::{Dim, Result};
use std::collections::HashMap;

fn list<T>(arg: Option<&String>, default: &str, parse: impl Fn(&str) -> Option<T>) -> Vec<T> {
    arg.map_or(default, |s| s.as_str()).split(',').filter_map(parse).collect()
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    let batches = list(flag("--batch"), "1,64", |s| s.parse::<usize>().ok());
    let storages = list(flag("--storage"), "f32,f16", |s| match s {
        "f32" => Some(Storage::F32),
        "f16" => Some(Storage::F16),
        "bf16" => Some(Storage::Bf16),
        _ => None,
    });
    let iters: usize = flag("--iters").and_then(|s| s.parse().ok()).unwrap_or(50);
    let mut skip = false;
    let models: Vec<&String> = args
        .iter()
        .filter(|a| {
            let keep = !skip && !a.starts_with("--");
            skip = a.starts_with("--");
            keep
        })
        .collect();
    let gpu = GpuContext::shared(0)?;
    for path in models {
        let graph = OnnxGraph::load(path.as_ref())?;
        let name = std::path::Path::new(path)
            .file_stem()
            .map_or(path.clone(), |s| s.to_string_lossy().into_owned());
        for &storage in &storages {
            let seg = match GpuSegment::for_graph(&gpu, &graph, storage)? {
                Ok(s) => s,
                Err(p) => {
                    println!("hydrant {name} fallback {}", p.describe());
                    break;
                }
            };
            for &batch in &batches {
                let mut shapes = HashMap::new();
                for i in graph.inputs() {
                    let shape: Vec<usize> = i
                        .shape
                        .iter()
                        .enumerate()
                        .map(|(k, d)| match d {
                            Dim::Fixed(n) => *n,
                            Dim::Symbolic(_) if k == 0 => batch,
                            Dim::Symbolic(_) => 1,
                        })
                        .collect();
                    shapes.insert(i.name.clone(), shape);
                }
                let inputs = || -> Result<HashMap<String, _>> {
                    shapes
                        .iter()
                        .map(|(n, s)| {
                            let v: Vec<f32> = (0..s.iter().product::<usize>())
                                .map(|i| ((i % 17) as f32 - 8.0) / 8.0)
                                .collect();
                            Ok((n.clone(), gpu.upload(s, &v, storage)?))
                        })
                        .collect()
                };
                let mut times = Vec::with_capacity(iters);
                for i in 0..iters + 5 {
                    let env = inputs()?;
                    let t = gpu.time_ms(|| seg.run(&gpu, env).map(|_| ()))?;
                    if i >= 5 {
                        times.push(t);
                    }
                }
                times.sort_by(f32::total_cmp);
                let label = match storage {
                    Storage::F32 => "f32",
                    Storage::F16 => "f16",
                    Storage::Bf16 => "bf16",
                };
                println!("hydrant {name} batch {batch} {label} {:.3}", times[times.len() / 2]);
            }
        }
    }
    Ok(())
}
