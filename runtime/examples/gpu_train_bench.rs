//! Head training, CPU trainer against GPU trainer (feature `cuda`), side by side in one run: the
//! same head, options and random features and labels; one warm-up epoch each (NVRTC compiles
//! the kernels in the GPU one), then the wall time of one epoch (the GPU trainer waits for each
//! step, as it downloads the head output for the metrics). One line per head:
//!
//! `train <head> batch <B> samples <N>: cpu <ms>/step, gpu <ms>/step, gpu speed-up <r>×`
//!
//!     gpu_train_bench [--batch 64] [--threads 0]

use hydrant::backend::cuda::context::GpuContext;
use hydrant::backend::cuda::train::GpuTrainer;
use hydrant::train::{Init, OptimizerSpec, UpsampleMode};
use hydrant::{Head, HeadSpec, Labels, LayerSpec, Result, TaskSpec, Tensor, TrainOptions, Trainer};
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn conv(i: usize, o: usize, k: usize, bias: bool) -> LayerSpec {
    LayerSpec::Conv2d {
        in_channels: i,
        out_channels: o,
        kernel_size: k,
        stride: 1,
        padding: k / 2,
        dilation: 1,
        groups: 1,
        bias,
    }
}

/// A head, its feature shape per sample and its label shape per sample.
fn heads() -> Vec<(HeadSpec, Vec<usize>, Vec<usize>, usize)> {
    let ce = |classes| {
        Some(TaskSpec::CrossEntropy {
            classes,
            class_weights: None,
            label_smoothing: 0.0,
            ignore_index: -100,
        })
    };
    let mlp = vec![
        LayerSpec::Linear { in_features: 512, out_features: 256, bias: true },
        LayerSpec::Relu,
        LayerSpec::Linear { in_features: 256, out_features: 10, bias: true },
    ];
    let seg = vec![
        conv(64, 64, 3, false),
        LayerSpec::BatchNorm2d { num_features: 64, eps: 1e-5, momentum: 0.1 },
        LayerSpec::Relu,
        conv(64, 10, 1, true),
        LayerSpec::Upsample2x { mode: UpsampleMode::Bilinear },
    ];
    vec![
        (HeadSpec::new("mlp", "features", mlp, ce(10)), vec![512], vec![], 8192),
        (HeadSpec::new("seg", "features", seg, ce(10)), vec![64, 16, 16], vec![32, 32], 1024),
    ]
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    let batch: usize = flag("--batch").and_then(|s| s.parse().ok()).unwrap_or(64);
    let threads: usize = flag("--threads").and_then(|s| s.parse().ok()).unwrap_or(0);
    let gpu = GpuContext::shared(0)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    for (spec, feature_row, label_row, n) in heads() {
        let name = spec.name.clone();
        let head = Head::init(spec, Init::KaimingUniform, 1)?;
        let shape: Vec<usize> = std::iter::once(n).chain(feature_row).collect();
        let x: Vec<f32> =
            (0..shape.iter().product()).map(|_| rng.random_range(-1.0..1.0)).collect();
        let x = Tensor::new::<f32>(&shape, x)?;
        let lshape: Vec<usize> = std::iter::once(n).chain(label_row).collect();
        let y: Vec<i64> = (0..lshape.iter().product()).map(|_| rng.random_range(0..10)).collect();
        let y = Tensor::new::<i64>(&lshape, y)?;
        let options = TrainOptions {
            batch_size: batch,
            optimizer: OptimizerSpec::adamw(0.01),
            lr: 1e-3,
            threads,
            ..TrainOptions::default()
        };
        let steps = n.div_ceil(batch) as f64;
        let mut cpu = Trainer::new(vec![head.clone()], options.clone())?;
        cpu.add_features(&[("features", &x)], &[(name.as_str(), Labels::new(y.clone()))])?;
        cpu.fit(Some(1), |_| std::ops::ControlFlow::Continue(()))?;
        let t = Instant::now();
        cpu.fit(Some(1), |_| std::ops::ControlFlow::Continue(()))?;
        let cpu_ms = t.elapsed().as_secs_f64() * 1e3 / steps;
        let mut dev = GpuTrainer::new(gpu.clone(), &head, options, 1 << 34)?;
        dev.add_features(&x, Labels::new(y))?;
        dev.fit(Some(1))?;
        gpu.synchronize()?;
        let t = Instant::now();
        dev.fit(Some(1))?;
        gpu.synchronize()?;
        let gpu_ms = t.elapsed().as_secs_f64() * 1e3 / steps;
        println!(
            "train {name} batch {batch} samples {n}: cpu {cpu_ms:.3} ms/step, gpu {gpu_ms:.3} ms/step, gpu speed-up {:.1}×",
            cpu_ms / gpu_ms
        );
    }
    Ok(())
}
