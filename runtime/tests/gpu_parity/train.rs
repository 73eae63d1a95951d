//! Head training on the GPU against the CPU: every layer of the trainable vocabulary forward
//! (training and inference) and backward on random inputs (f32, ≤ 1e-4 relative to the largest
//! reference value), dropout against the host copy of its mask, and the PyTorch training
//! fixtures (30 SGD and 30 AdamW steps of the MLP and segmentation heads, made by
//! scripts/make_train_fixtures.py) reproduced by the GPU trainer within 1e-4. Without a usable
//! CUDA device each test prints why and returns (fails with `HYDRANT_REQUIRE_GPU=1`).

use hydrant::backend::cuda::context::GpuContext;
use hydrant::backend::cuda::train::{ops, GpuNetwork, GpuTrainer, Mode};
use hydrant::backend::cuda::train_plan;
use hydrant::train::layers::Pass;
use hydrant::train::{Array, Head, Init, Network, OptimizerSpec, UpsampleMode};
use hydrant::{HeadSet, HeadSpec, Labels, LayerSpec, Tensor, TrainOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The device, or `None` after printing why there is none (a failure instead when
/// `HYDRANT_REQUIRE_GPU=1`, as scripts/gpu_check.sh sets).
fn device(test: &str) -> Option<Arc<GpuContext>> {
    let ordinal = std::env::var("HYDRANT_GPU").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let required = std::env::var("HYDRANT_REQUIRE_GPU").is_ok_and(|v| v == "1");
    match GpuContext::shared(ordinal) {
        Ok(g) => Some(g),
        Err(e) if required => {
            panic!("{test}: HYDRANT_REQUIRE_GPU=1 but no usable CUDA device: {e}")
        }
        Err(e) => {
            println!("{test}: skipped, no usable CUDA device: {e}");
            None
        }
    }
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(-1.0f32..1.0)).collect()
}

/// Largest |a − b| relative to the largest |b| (at least 1e-3).
fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "lengths");
    let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    let d = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    if got.iter().any(|v| v.is_nan()) {
        f32::INFINITY
    } else {
        d / scale
    }
}

fn check(what: &str, got: &[f32], want: &[f32]) {
    let e = rel_err(got, want);
    println!("{what}: relative error {e:.2e}");
    assert!(e <= 1e-4, "{what}: relative error {e} > 1e-4");
}

/// A one-layer head with random parameters (BatchNorm running variance kept positive).
fn one_layer(layer: LayerSpec, seed: u64) -> Head {
    let spec = HeadSpec::new("h", "x", vec![layer], None);
    let head = Head::init(spec.clone(), Init::KaimingUniform, seed).unwrap();
    let tensors = head
        .tensors()
        .iter()
        .enumerate()
        .map(|(k, (name, t))| {
            let Some(v) = t.as_slice::<f32>() else { return (name.clone(), t.clone()) };
            let mut r = random(v.len(), seed * 31 + k as u64);
            if name.ends_with("running_var") {
                r.iter_mut().for_each(|x| *x = 0.5 + x.abs());
            }
            (name.clone(), Tensor::new::<f32>(t.shape(), r).unwrap())
        })
        .collect();
    Head::new(spec, tensors).unwrap()
}

/// A convolution: channels in and out, kernel, (stride, padding, dilation, groups), bias.
fn conv(
    i: usize,
    o: usize,
    k: usize,
    (s, p, d, g): (usize, usize, usize, usize),
    bias: bool,
) -> LayerSpec {
    LayerSpec::Conv2d {
        in_channels: i,
        out_channels: o,
        kernel_size: k,
        stride: s,
        padding: p,
        dilation: d,
        groups: g,
        bias,
    }
}

/// Runs `head` forward (training unless `inference`) and backward on the CPU and the GPU and
/// compares output, input gradient, parameter gradients and the state after the pass.
fn compare(
    gpu: &Arc<GpuContext>,
    what: &str,
    head: &Head,
    input: &[usize],
    inference: bool,
    frozen: bool,
) {
    let x = random(input.iter().product(), 7);
    let mut cpu = Network::<f32>::new(head).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut pass = Pass { training: !inference, frozen_batchnorm: frozen, rng: &mut rng };
    let y = cpu.forward(Array::new(input, x.clone()).unwrap(), &mut pass).unwrap();
    let mut dev = GpuNetwork::new(gpu.clone(), head).unwrap();
    let mode = Mode { training: !inference, frozen_batchnorm: frozen, seed: 0, step: 0 };
    let gy = dev.forward(ops::upload(gpu, input, &x).unwrap(), mode).unwrap();
    assert_eq!(gy.shape, y.shape(), "{what}: output shape");
    check(&format!("{what} forward"), &ops::download(gpu, &gy).unwrap(), y.data());
    if inference {
        return;
    }
    let dy = random(y.len(), 11);
    cpu.zero_grad();
    let dx = cpu.backward(Array::new(y.shape(), dy.clone()).unwrap()).unwrap();
    let gdx = dev.backward(ops::upload(gpu, y.shape(), &dy).unwrap(), true).unwrap().unwrap();
    check(&format!("{what} input gradient"), &ops::download(gpu, &gdx).unwrap(), dx.data());
    let names = cpu.param_names();
    let grads: Vec<Vec<f32>> = cpu.params().iter().map(|p| p.grad.data().to_vec()).collect();
    let dev_grads = dev.grads().unwrap();
    assert_eq!(dev_grads.len(), grads.len(), "{what}: parameter count");
    for ((name, want), (dname, got)) in names.iter().zip(&grads).zip(&dev_grads) {
        assert_eq!(name, dname);
        check(&format!("{what} ∂{name}"), got, want);
    }
    // Running statistics and counters after the pass.
    let (a, b) = (cpu.to_head().unwrap(), dev.to_head().unwrap());
    for (name, t) in a.tensors() {
        let u = b.tensor(name).unwrap_or_else(|| panic!("{what}: no tensor {name} on the GPU"));
        match (t.as_slice::<f32>(), u.as_slice::<f32>()) {
            (Some(w), Some(g)) => check(&format!("{what} {name}"), g, w),
            _ => assert_eq!(t, u, "{what}: {name}"),
        }
    }
}

#[test]
fn every_training_layer_matches_the_cpu_layer() {
    let Some(gpu) = device("every_training_layer_matches_the_cpu_layer") else { return };
    let bn = |c| LayerSpec::BatchNorm2d { num_features: c, eps: 1e-5, momentum: 0.1 };
    let cases: Vec<(&str, LayerSpec, Vec<usize>)> = vec![
        (
            "linear",
            LayerSpec::Linear { in_features: 40, out_features: 17, bias: true },
            vec![9, 40],
        ),
        (
            "linear 3-d no bias",
            LayerSpec::Linear { in_features: 5, out_features: 3, bias: false },
            vec![2, 4, 5],
        ),
        ("conv 3x3", conv(3, 8, 3, (1, 1, 1, 1), true), vec![2, 3, 9, 7]),
        ("conv strided dilated", conv(4, 6, 3, (2, 2, 2, 1), true), vec![3, 4, 11, 10]),
        ("conv depthwise", conv(8, 8, 3, (1, 1, 1, 8), true), vec![2, 8, 6, 6]),
        ("conv grouped no bias", conv(6, 4, 1, (1, 0, 1, 2), false), vec![2, 6, 5, 5]),
        ("conv 32→64 (implicit GEMM)", conv(32, 64, 3, (1, 1, 1, 1), true), vec![2, 32, 12, 12]),
        ("batchnorm 4-d", bn(5), vec![3, 5, 4, 6]),
        ("batchnorm 2-d", bn(7), vec![6, 7]),
        ("layernorm", LayerSpec::LayerNorm { normalized_shape: 48, eps: 1e-5 }, vec![3, 5, 48]),
        ("relu", LayerSpec::Relu, vec![4, 33]),
        ("leaky relu", LayerSpec::LeakyRelu { negative_slope: 0.2 }, vec![4, 33]),
        ("gelu", LayerSpec::Gelu, vec![4, 33]),
        ("silu", LayerSpec::Silu, vec![4, 33]),
        ("sigmoid", LayerSpec::Sigmoid, vec![4, 33]),
        ("tanh", LayerSpec::Tanh, vec![4, 33]),
        ("flatten", LayerSpec::Flatten, vec![2, 3, 4, 5]),
        ("global avg pool", LayerSpec::GlobalAvgPool { keep_dims: false }, vec![2, 3, 5, 7]),
        ("global avg pool keep", LayerSpec::GlobalAvgPool { keep_dims: true }, vec![2, 3, 4, 4]),
        (
            "max pool 2",
            LayerSpec::MaxPool2d { kernel_size: 2, stride: None, padding: 0 },
            vec![2, 3, 8, 6],
        ),
        (
            "max pool 3/2/1",
            LayerSpec::MaxPool2d { kernel_size: 3, stride: Some(2), padding: 1 },
            vec![1, 2, 7, 9],
        ),
        (
            "upsample nearest",
            LayerSpec::Upsample2x { mode: UpsampleMode::Nearest },
            vec![2, 3, 4, 5],
        ),
        (
            "upsample bilinear",
            LayerSpec::Upsample2x { mode: UpsampleMode::Bilinear },
            vec![2, 3, 5, 4],
        ),
        ("dropout p=0", LayerSpec::Dropout { p: 0.0 }, vec![3, 10]),
    ];
    for (k, (what, layer, input)) in cases.into_iter().enumerate() {
        let head = one_layer(layer, k as u64 + 1);
        compare(&gpu, what, &head, &input, false, false);
        compare(&gpu, &format!("{what} (inference)"), &head, &input, true, true);
    }
    let head = one_layer(bn(4), 99);
    compare(&gpu, "batchnorm frozen", &head, &[3, 4, 5, 5], false, true);
    for (dim, input) in [(1i64, vec![2, 5, 3, 3]), (-1, vec![4, 9])] {
        let head = one_layer(LayerSpec::Softmax { dim }, 3);
        compare(&gpu, &format!("softmax dim {dim} (inference)"), &head, &input, true, true);
    }
}

#[test]
fn dropout_masks_match_the_host_draws() {
    let Some(gpu) = device("dropout_masks_match_the_host_draws") else { return };
    let p = 0.3f32;
    let head = one_layer(LayerSpec::Dropout { p }, 1);
    let (n, len) = (8, 1000);
    let x = random(n * len, 5);
    let mut dev = GpuNetwork::new(gpu.clone(), &head).unwrap();
    let mode = Mode { training: true, frozen_batchnorm: false, seed: 1234, step: 17 };
    let y = dev.forward(ops::upload(&gpu, &[n, len], &x).unwrap(), mode).unwrap();
    let y = ops::download(&gpu, &y).unwrap();
    let seed = train_plan::dropout_seed(1234, 17, 0);
    let mask: Vec<f32> =
        (0..x.len()).map(|i| train_plan::dropout_mask(seed, i as u64, p)).collect();
    let want: Vec<f32> = x.iter().zip(&mask).map(|(a, m)| a * m).collect();
    check("dropout forward", &y, &want);
    let dropped = mask.iter().filter(|&&m| m == 0.0).count() as f32 / mask.len() as f32;
    assert!((dropped - p).abs() < 0.03, "dropped {dropped}");
    let dy = random(x.len(), 6);
    let dx = dev.backward(ops::upload(&gpu, &[n, len], &dy).unwrap(), true).unwrap().unwrap();
    let want: Vec<f32> = dy.iter().zip(&mask).map(|(a, m)| a * m).collect();
    check("dropout backward", &ops::download(&gpu, &dx).unwrap(), &want);
}

fn fixture(name: &str) -> PathBuf {
    std::env::var_os("HYDRANT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures"))
        .join("train")
        .join(name)
}

/// The f32 and i64 tensors and the metadata of a safetensors fixture.
fn safetensors(name: &str) -> (HashMap<String, Tensor>, HashMap<String, String>) {
    use safetensors::tensor::{Dtype, SafeTensors};
    let bytes = std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out = HashMap::new();
    for (n, v) in st.tensors() {
        let b = v.data();
        let t = match v.dtype() {
            Dtype::F32 => Tensor::new(
                v.shape(),
                b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
            ),
            Dtype::I64 => Tensor::new(
                v.shape(),
                b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect(),
            ),
            _ => continue,
        }
        .unwrap();
        out.insert(n, t);
    }
    (out, meta.metadata().clone().unwrap_or_default())
}

/// Trains parity head `head` with the optimizer of fixture `run` on the GPU and compares the
/// step losses and the final weights with PyTorch's (as tests/train.rs does on the CPU).
fn parity(gpu: &Arc<GpuContext>, head: &str, run: &str, device_budget: usize) {
    let init = HeadSet::load(fixture(&format!("parity_{head}_init.safetensors"))).unwrap();
    let (reference, meta) = safetensors(&format!("parity_{head}_{run}.safetensors"));
    let m: serde_json::Value = serde_json::from_str(&meta["run"]).unwrap();
    let optimizer: OptimizerSpec = serde_json::from_value(m["optimizer"].clone()).unwrap();
    let (batch, steps) =
        (m["batch"].as_u64().unwrap() as usize, m["steps"].as_u64().unwrap() as usize);
    let x = hydrant::read_npy(fixture(&format!("parity_{head}_features.npy"))).unwrap();
    let y = hydrant::read_npy(fixture(&format!("parity_{head}_labels.npy"))).unwrap();
    let n = x.shape()[0];
    let options = TrainOptions {
        batch_size: batch,
        shuffle: false,
        lr: m["lr"].as_f64().unwrap() as f32,
        optimizer,
        ..TrainOptions::default()
    };
    let mut trainer = GpuTrainer::new(gpu.clone(), &init.heads[0], options, device_budget).unwrap();
    trainer.add_features(&x, Labels::new(y)).unwrap();
    assert_eq!(trainer.features_on_device(), device_budget > 0);
    let reports = trainer.fit(Some(steps * batch / n)).unwrap();
    let losses: Vec<f32> = reports.iter().flat_map(|r| r.step_losses[0].clone()).collect();
    assert_eq!(losses.len(), steps);
    let want = reference["losses"].as_slice::<f32>().unwrap();
    for (i, (a, b)) in losses.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * b.abs().max(1.0),
            "{head}/{run} step {i}: loss {a} vs PyTorch {b}"
        );
    }
    let trained = trainer.head().unwrap();
    for (name, t) in trained.tensors() {
        let r = &reference[&format!("{head}.{name}")];
        if t.dtype() == hydrant::DType::I64 {
            assert_eq!(t, r, "{head}/{run}: {name}");
            continue;
        }
        let e = rel_err(t.as_slice::<f32>().unwrap(), r.as_slice::<f32>().unwrap());
        println!("{head}/{run} GPU: {name} relative error {e:.2e} after {steps} steps");
        assert!(e <= 1e-4, "{head}/{run}: weight {name} relative error {e:e} after {steps} steps");
    }
}

#[test]
fn gpu_training_matches_pytorch_over_30_steps() {
    let Some(gpu) = device("gpu_training_matches_pytorch_over_30_steps") else { return };
    for head in ["mlp", "seg"] {
        for run in ["sgd", "adamw"] {
            // Features on the device, and streamed from the host cache (budget 0).
            parity(&gpu, head, run, 1 << 30);
            parity(&gpu, head, run, 0);
        }
    }
}
