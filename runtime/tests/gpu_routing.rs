//! Model runs routed to the GPU (feature `cuda`; needs a CUDA device, run by
//! scripts/gpu_check.sh): every fixture model loaded on `cuda` in f32, f16 and bf16 against the
//! same model on the CPU, all heads, at batch 1 and 2, through `run` and through `trunk` then
//! `heads`; heads swapped and added on the GPU model; runs from several threads at once; heads
//! sharing their first GEMM against the same heads run alone.
//! f32 within 1e-4 relative to the largest CPU value, f16 and bf16 within 1e-2, both models fed
//! the same inputs rounded to the storage type.

use half::{bf16, f16};
use hydrant::train::{HeadSpec, Init, LayerSpec, TaskSpec};
use hydrant::{
    DType, Device, Dim, Head, LoadOptions, Model, Outputs, Precision, Tensor, TensorData,
};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

const PRECISIONS: [Precision; 3] = [Precision::F32, Precision::F16, Precision::Bf16];
/// A trunk tensor of hydranet.onnx with 16 channels (where tests/heads.rs attaches heads too).
const MID: &str = "/trunk/block1/Relu_1_output_0";

fn cuda() -> Device {
    Device::Cuda(std::env::var("HYDRANT_GPU").ok().and_then(|v| v.parse().ok()).unwrap_or(0))
}

fn fixtures_dir() -> PathBuf {
    // HYDRANT_FIXTURES: where the fixtures are when the binary runs away from its build tree.
    std::env::var_os("HYDRANT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures"))
}

fn tolerance(p: Precision) -> f32 {
    if p == Precision::F32 {
        1e-4
    } else {
        1e-2
    }
}

fn round(v: f32, p: Precision) -> f32 {
    match p {
        Precision::F32 => v,
        Precision::F16 => f16::from_f32(v).to_f32(),
        Precision::Bf16 => bf16::from_f32(v).to_f32(),
    }
}

/// Random inputs for `model` at `batch` (f32 rounded to `p`; integers 0..4).
fn inputs(model: &Model, batch: usize, p: Precision, seed: u64) -> Vec<(String, Tensor)> {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    model
        .inputs()
        .iter()
        .map(|spec| {
            let shape: Vec<usize> = spec
                .shape
                .iter()
                .enumerate()
                .map(|(k, d)| match d {
                    Dim::Fixed(n) => *n,
                    Dim::Symbolic(_) if k == 0 => batch,
                    Dim::Symbolic(_) => 1,
                })
                .collect();
            let n: usize = shape.iter().product();
            let data = match spec.dtype {
                DType::U8 => TensorData::U8((0..n).map(|_| r.random_range(0..4u8)).collect()),
                DType::I32 => TensorData::I32((0..n).map(|_| r.random_range(0..4i32)).collect()),
                DType::I64 => TensorData::I64((0..n).map(|_| r.random_range(0..4i64)).collect()),
                _ => TensorData::F32(
                    (0..n).map(|_| round(r.random_range(-1.0f32..1.0), p)).collect(),
                ),
            };
            (spec.name.clone(), Tensor::from_data(&shape, data).unwrap())
        })
        .collect()
}

/// Largest |a - b| relative to the largest |b| (at least 1e-3).
fn rel_err(got: &Tensor, want: &Tensor) -> f32 {
    let (g, w) = (got.to_f32(), want.to_f32());
    let (g, w) = (g.as_slice::<f32>().unwrap(), w.as_slice::<f32>().unwrap());
    assert_eq!(g.len(), w.len(), "lengths");
    let scale = w.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max) / scale
}

/// Every output of `want` (the CPU model) against `got` (the GPU model).
fn compare(what: &str, got: &Outputs, want: &Outputs, p: Precision) {
    assert_eq!(got.len(), want.len(), "{what}: outputs");
    for (name, w) in want.iter() {
        let g = got.get(name).unwrap_or_else(|| panic!("{what}: no output `{name}`"));
        assert_eq!(g.shape(), w.shape(), "{what} {name}: shape");
        let float = matches!(w.dtype(), DType::F32 | DType::F16 | DType::BF16 | DType::F64);
        if !float {
            // Integer outputs (ArgMax and the like) must agree exactly in f32; in half
            // precision a near tie may flip, so they are only reported.
            let same = g == w;
            println!("{what} {name} ({}): {}", w.dtype(), if same { "equal" } else { "differ" });
            assert!(same || p != Precision::F32, "{what} {name}: integer outputs differ");
            continue;
        }
        let e = rel_err(g, w);
        println!("{what} {name} {p}: relative error {e:.2e}");
        assert!(e <= tolerance(p), "{what} {name} {p}: relative error {e} > {}", tolerance(p));
    }
}

fn refs(owned: &[(String, Tensor)]) -> Vec<(&str, &Tensor)> {
    owned.iter().map(|(n, t)| (n.as_str(), t)).collect()
}

#[test]
fn every_fixture_model_on_the_gpu_matches_the_cpu() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    files.sort();
    let mut on_gpu = 0;
    for path in files {
        let cpu = match Model::load(&path, LoadOptions::new().device(Device::Cpu)) {
            Ok(m) => m,
            Err(e) => {
                println!("{}: not loadable ({e})", path.display());
                continue;
            }
        };
        for p in PRECISIONS {
            let gpu = Model::load(&path, LoadOptions::new().device(cuda()).precision(p)).unwrap();
            assert_eq!(gpu.device(), cuda());
            let parts = gpu.part_devices();
            println!("{} {p}: {}", path.display(), gpu.device_reason());
            assert!(!gpu.device_reason().contains("still execute"), "{}", gpu.device_reason());
            assert_eq!(parts.len(), cpu.part_devices().len());
            if parts.iter().any(|(_, d)| d == "cuda") {
                on_gpu += 1;
            }
            for batch in [1usize, 2] {
                let owned = inputs(&cpu, batch, p, 40 + batch as u64);
                let x = refs(&owned);
                let want = cpu.run(&x, &[]).unwrap();
                let what = format!("{} batch {batch}", path.display());
                compare(&format!("{what} run"), &gpu.run(&x, &[]).unwrap(), &want, p);
                let features = gpu.trunk(&x).unwrap();
                let split = gpu.heads(&features, &[]).unwrap();
                compare(&format!("{what} trunk+heads"), &split, &want, p);
                let cpu_features = cpu.trunk(&x).unwrap();
                assert_eq!(features.names(), cpu_features.names(), "{what}: features");
                for name in features.names() {
                    let e = rel_err(&features.get(name).unwrap(), &cpu_features.get(name).unwrap());
                    assert!(e <= tolerance(p), "{what} feature {name}: relative error {e}");
                }
            }
        }
    }
    assert!(on_gpu > 0, "no fixture model ran a part on the GPU");
}

#[test]
fn hydranet_runs_wholly_on_the_gpu_and_says_so() {
    let gpu = Model::load(fixtures_dir().join("hydranet.onnx"), LoadOptions::new().device(cuda()))
        .unwrap();
    for (part, device) in gpu.part_devices() {
        assert_eq!(device, "cuda", "{part}");
    }
    let reason = gpu.device_reason();
    assert!(reason.starts_with("requested; f32 storage; trunk["), "{reason}");
    assert!(reason.contains("head seg: cuda"), "{reason}");
}

fn pooled_linear(name: &str, input: &str, channels: usize, out: usize, seed: u64) -> Head {
    let layers = vec![
        LayerSpec::GlobalAvgPool { keep_dims: false },
        LayerSpec::Linear { in_features: channels, out_features: out, bias: true },
    ];
    let task = TaskSpec::from_loss_name("ce", out).unwrap();
    Head::init(HeadSpec::new(name, input, layers, Some(task)), Init::KaimingUniform, seed).unwrap()
}

#[test]
fn heads_swapped_and_added_on_a_gpu_model_run_on_the_gpu() {
    let path = fixtures_dir().join("hydranet.onnx");
    for p in PRECISIONS {
        let cpu = Model::load(&path, LoadOptions::new().device(Device::Cpu)).unwrap();
        let gpu = Model::load(&path, LoadOptions::new().device(cuda()).precision(p)).unwrap();
        let owned = inputs(&cpu, 3, p, 7);
        let x = refs(&owned);
        let before = gpu.run(&x, &[]).unwrap();
        let old = gpu.trainable_head("box").unwrap();
        let new = Head::init(old.spec().clone(), Init::XavierUniform, 7).unwrap();
        let texture = pooled_linear("texture", MID, 16, 4, 8);
        for m in [&cpu, &gpu] {
            m.swap_head("box", &new).unwrap();
            m.add_head(&texture).unwrap();
        }
        let devices = gpu.part_devices();
        for head in ["head box", "head texture"] {
            assert!(devices.iter().any(|(n, d)| n == head && d == "cuda"), "{head}: {devices:?}");
        }
        let after = gpu.run(&x, &[]).unwrap();
        compare(&format!("swapped and added {p}"), &after, &cpu.run(&x, &[]).unwrap(), p);
        let moved = rel_err(after.get("box").unwrap(), before.get("box").unwrap());
        assert!(moved > 1e-2, "box did not change on the GPU after the swap ({moved})");
        assert!(rel_err(after.get("cls").unwrap(), before.get("cls").unwrap()) <= tolerance(p));
        // Swapping the file's head back gives the file's outputs again.
        gpu.swap_head("box", &old).unwrap();
        let back = gpu.run(&x, &["box"]).unwrap();
        let e = rel_err(back.get("box").unwrap(), before.get("box").unwrap());
        assert!(e <= tolerance(p), "restored box {p}: {e}");
    }
}

#[test]
fn a_gpu_model_runs_from_several_threads_at_once() {
    let path = fixtures_dir().join("hydranet.onnx");
    let gpu = Model::load(&path, LoadOptions::new().device(cuda())).unwrap();
    let owned = inputs(&gpu, 2, Precision::F32, 11);
    let want = gpu.run(&refs(&owned), &[]).unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (gpu, owned, want) = (&gpu, &owned, &want);
            s.spawn(move || {
                for _ in 0..5 {
                    let got = gpu.run(&refs(owned), &[]).unwrap();
                    compare(&format!("thread {t}"), &got, want, Precision::F32);
                }
            });
        }
    });
}

/// Largest |a - b| of two f32 outputs.
fn max_abs(got: &Tensor, want: &Tensor) -> f32 {
    let (g, w) = (got.to_f32(), want.to_f32());
    let (g, w) = (g.as_slice::<f32>().unwrap(), w.as_slice::<f32>().unwrap());
    assert_eq!(g.len(), w.len(), "lengths");
    g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

#[test]
fn heads_reading_one_tensor_share_their_first_gemm_and_match_separate_runs() {
    // hydranet's cls and box both begin with a Linear on the pooled features: asked for
    // together they run it as one stacked GEMM, asked for alone each runs its own.
    let path = fixtures_dir().join("hydranet.onnx");
    let gpu = Model::load(&path, LoadOptions::new().device(cuda())).unwrap();
    let check = |what: &str| {
        for batch in [1, 3] {
            let owned = inputs(&gpu, batch, Precision::F32, 40 + batch as u64);
            let x = refs(&owned);
            let fused = gpu.run(&x, &["cls", "box"]).unwrap();
            for head in ["cls", "box"] {
                let alone = gpu.run(&x, &[head]).unwrap();
                let e = max_abs(fused.get(head).unwrap(), alone.get(head).unwrap());
                println!("{what} batch {batch} {head}: fused vs alone {e:.2e}");
                assert!(e <= 1e-5, "{what} batch {batch} {head}: fused vs alone {e}");
            }
        }
    };
    check("file heads");
    // A swapped box is stacked anew with cls.
    let old = gpu.trainable_head("box").unwrap();
    gpu.swap_head("box", &Head::init(old.spec().clone(), Init::XavierUniform, 5).unwrap()).unwrap();
    check("swapped box");
}
