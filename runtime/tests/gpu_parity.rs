//! GPU parity (feature `cuda`; needs a CUDA device, run by scripts/gpu_check.sh): every kernel
//! against a plain CPU reference computed here, every fixture model against the CPU backend,
//! and the optimizer kernels against hydrant's CPU optimizer. f32 within 1e-4 (relative to the
//! largest reference value), f16 and bf16 within 1e-2, the references computed on inputs
//! rounded to the storage type. Head training on the GPU: [`train`].

use half::{bf16, f16};
use hydrant::backend::cuda::context::GpuContext;
use hydrant::backend::cuda::exec::{GpuSegment, Storage};
use hydrant::backend::cuda::fusion::Act;
use hydrant::backend::cuda::geometry::ConvParams;
use hydrant::graph::OnnxGraph;
use hydrant::train::optim::{Optimizer, Update};
use hydrant::train::OptimizerSpec;
use hydrant::{LoadOptions, Model, Tensor};
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::sync::Arc;

#[path = "gpu_parity/train.rs"]
mod train;

fn gpu() -> Arc<GpuContext> {
    let ordinal = std::env::var("HYDRANT_GPU").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    GpuContext::shared(ordinal).unwrap_or_else(|e| panic!("no usable CUDA device: {e}"))
}

fn tolerance(s: Storage) -> f32 {
    if s == Storage::F32 {
        1e-4
    } else {
        1e-2
    }
}

fn round(v: &[f32], s: Storage) -> Vec<f32> {
    match s {
        Storage::F32 => v.to_vec(),
        Storage::F16 => v.iter().map(|&x| f16::from_f32(x).to_f32()).collect(),
        Storage::Bf16 => v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect(),
    }
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(-1.0f32..1.0)).collect()
}

/// Largest |a - b| relative to the largest |b| (at least 1e-3).
fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "lengths");
    let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max) / scale
}

fn check(what: &str, got: &[f32], want: &[f32], s: Storage) {
    let e = rel_err(got, want);
    println!("{what} {s:?}: relative error {e:.2e}");
    assert!(e <= tolerance(s), "{what} {s:?}: relative error {e} > {}", tolerance(s));
}

#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
fn conv_ref(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    res: Option<&[f32]>,
    xs: [usize; 4],
    oc: usize,
    p: &ConvParams,
    relu: bool,
) -> (Vec<f32>, [usize; 4]) {
    let [n, c, h, wd] = xs;
    let (kh, kw) = p.kernel;
    let oh = (h + 2 * p.pad.0 - p.dilation.0 * (kh - 1) - 1) / p.stride.0 + 1;
    let ow = (wd + 2 * p.pad.1 - p.dilation.1 * (kw - 1) - 1) / p.stride.1 + 1;
    let (cg, ocg) = (c / p.groups, oc / p.groups);
    let mut y = vec![0.0f32; n * oc * oh * ow];
    for b0 in 0..n {
        for o in 0..oc {
            let g = o / ocg;
            for yy in 0..oh {
                for xx in 0..ow {
                    let mut acc = b[o] as f64;
                    for ci in 0..cg {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (yy * p.stride.0 + ky * p.dilation.0) as isize
                                    - p.pad.0 as isize;
                                let ix = (xx * p.stride.1 + kx * p.dilation.1) as isize
                                    - p.pad.1 as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xi =
                                    ((b0 * c + g * cg + ci) * h + iy as usize) * wd + ix as usize;
                                let wi = ((o * cg + ci) * kh + ky) * kw + kx;
                                acc += (x[xi] * w[wi]) as f64;
                            }
                        }
                    }
                    let i = ((b0 * oc + o) * oh + yy) * ow + xx;
                    let mut v = acc as f32 + res.map_or(0.0, |r| r[i]);
                    if relu {
                        v = v.max(0.0);
                    }
                    y[i] = v;
                }
            }
        }
    }
    (y, [n, oc, oh, ow])
}

#[test]
fn convolutions_match_the_reference() {
    let gpu = gpu();
    // (input, out channels, kernel, stride, pad, dilation, groups, residual)
    let cases = [
        ([2, 3, 17, 15], 8, 3, 1, 1, 1, 1, false), // direct (8 outputs)
        ([2, 32, 16, 16], 64, 3, 1, 1, 1, 1, true), // implicit GEMM + residual
        ([1, 64, 15, 15], 32, 1, 2, 0, 1, 1, false), // 1×1 stride 2
        ([1, 32, 14, 14], 32, 3, 2, 1, 1, 32, false), // depthwise stride 2
        ([1, 16, 20, 20], 32, 5, 1, 4, 2, 2, true), // dilated, grouped
        ([3, 24, 9, 9], 48, 7, 1, 3, 1, 1, false), // 7×7
    ];
    for (i, (xs, oc, k, s, pad, d, g, with_res)) in cases.into_iter().enumerate() {
        let p = ConvParams {
            kernel: (k, k),
            stride: (s, s),
            pad: (pad, pad),
            dilation: (d, d),
            groups: g,
        };
        for st in Storage::ALL {
            let x = round(&random(xs.iter().product(), i as u64), st);
            let w = round(&random(oc * xs[1] / g * k * k, 100 + i as u64), st);
            let b = random(oc, 200 + i as u64);
            let (_, ys) = conv_ref(&x, &w, &b, None, xs, oc, &p, false);
            let res = with_res.then(|| round(&random(ys.iter().product(), 300 + i as u64), st));
            let (want, ys) = conv_ref(&x, &w, &b, res.as_deref(), xs, oc, &p, true);
            let gx = gpu.upload(&xs, &x, st).unwrap();
            let gw = gpu.upload(&[oc, xs[1] / g, k, k], &w, st).unwrap();
            let gb = gpu.upload_f32(&b).unwrap();
            let gr = res.as_ref().map(|r| gpu.upload(&ys, r, st).unwrap());
            let y = gpu.conv2d(&gx, &gw, Some(&gb), gr.as_ref(), &p, Act::Relu).unwrap();
            assert_eq!(y.shape, ys);
            check(&format!("conv case {i}"), &gpu.download(&y).unwrap(), &want, st);
        }
    }
}

#[test]
fn gemm_pooling_softmax_layernorm_match_the_reference() {
    let gpu = gpu();
    for st in Storage::ALL {
        // GEMM with a Linear weight [n, k], bias and ReLU.
        let (m, k, n) = (33, 70, 19);
        let x = round(&random(m * k, 1), st);
        let w = round(&random(n * k, 2), st);
        let b = random(n, 3);
        let want: Vec<f32> = (0..m * n)
            .map(|i| {
                let (r, c) = (i / n, i % n);
                ((0..k).map(|j| x[r * k + j] * w[c * k + j]).sum::<f32>() + b[c]).max(0.0)
            })
            .collect();
        let y = gpu
            .gemm(
                &gpu.upload(&[m, k], &x, st).unwrap(),
                &gpu.upload(&[n, k], &w, st).unwrap(),
                true,
                Some(&gpu.upload_f32(&b).unwrap()),
                Act::Relu,
            )
            .unwrap();
        check("gemm", &gpu.download(&y).unwrap(), &want, st);
        // Max pooling 3×3 stride 2 pad 1 and global average pooling.
        let xs = [2, 4, 9, 9];
        let x = round(&random(xs.iter().product(), 4), st);
        let p =
            ConvParams { kernel: (3, 3), stride: (2, 2), pad: (1, 1), dilation: (1, 1), groups: 1 };
        let mut want = Vec::new();
        for plane in x.chunks(81) {
            for oy in 0..5 {
                for ox in 0..5 {
                    let mut m = f32::NEG_INFINITY;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (iy, ix) = ((oy * 2 + ky) as isize - 1, (ox * 2 + kx) as isize - 1);
                            if (0..9).contains(&iy) && (0..9).contains(&ix) {
                                m = m.max(plane[iy as usize * 9 + ix as usize]);
                            }
                        }
                    }
                    want.push(m);
                }
            }
        }
        let gx = gpu.upload(&xs, &x, st).unwrap();
        check(
            "maxpool",
            &gpu.download(&gpu.pool2d(&gx, &p, true, false).unwrap()).unwrap(),
            &want,
            st,
        );
        let want: Vec<f32> = x.chunks(81).map(|c| c.iter().sum::<f32>() / 81.0).collect();
        check(
            "global avgpool",
            &gpu.download(&gpu.global_avgpool(&gx).unwrap()).unwrap(),
            &want,
            st,
        );
        // Softmax and layer norm over rows of 300.
        let x = round(&random(5 * 300, 5), st);
        let mut soft = Vec::new();
        let mut norm = Vec::new();
        for r in x.chunks(300) {
            let m = r.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let s: f32 = r.iter().map(|v| (v - m).exp()).sum();
            soft.extend(r.iter().map(|v| (v - m).exp() / s));
            let mean = r.iter().sum::<f32>() / 300.0;
            let var = r.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 300.0;
            norm.extend(r.iter().map(|v| (v - mean) / (var + 1e-5).sqrt()));
        }
        let gx = gpu.upload(&[5, 300], &x, st).unwrap();
        check("softmax", &gpu.download(&gpu.softmax(&gx).unwrap()).unwrap(), &soft, st);
        check(
            "layernorm",
            &gpu.download(&gpu.layernorm(&gx, None, None, 1e-5).unwrap()).unwrap(),
            &norm,
            st,
        );
    }
}

#[test]
fn cross_entropy_and_optimizers_match_the_cpu() {
    let gpu = gpu();
    let (rows, classes) = (6, 11);
    let logits = random(rows * classes, 7);
    let labels = [0, 3, 10, -1, 5, 5];
    let (loss, grad) = gpu
        .softmax_xent(
            &gpu.upload(&[rows, classes], &logits, Storage::F32).unwrap(),
            &labels,
            1.0 / 5.0,
        )
        .unwrap();
    let grad = gpu.download(&grad).unwrap();
    for r in 0..rows {
        let row = &logits[r * classes..(r + 1) * classes];
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let s: f32 = row.iter().map(|v| (v - m).exp()).sum();
        if labels[r] < 0 {
            assert_eq!(loss[r], 0.0);
            assert!(grad[r * classes..(r + 1) * classes].iter().all(|&g| g == 0.0));
            continue;
        }
        let l = labels[r] as usize;
        assert!((loss[r] - (s.ln() + m - row[l])).abs() < 1e-5, "row {r}");
        for j in 0..classes {
            let want = ((row[j] - m).exp() / s - f32::from(j == l)) / 5.0;
            assert!((grad[r * classes + j] - want).abs() < 1e-6, "row {r} class {j}");
        }
    }
    for spec in [OptimizerSpec::adamw(0.01), OptimizerSpec::sgd(0.9, 0.001)] {
        let n = 1000;
        let mut cpu_p = random(n, 8);
        let mut opt = Optimizer::new(spec, 1).unwrap();
        let mut p = gpu.upload_f32(&cpu_p).unwrap();
        let mut s1 = gpu.upload_f32(&vec![0.0; n]).unwrap();
        let mut s2 = gpu.upload_f32(&vec![0.0; n]).unwrap();
        for t in 1..=5 {
            let g = random(n, 10 + t as u64);
            opt.step(&mut [Update { slot: 0, value: &mut cpu_p, grad: &g, decay: true }], 0.01)
                .unwrap();
            let gg = gpu.upload_f32(&g).unwrap();
            match spec {
                OptimizerSpec::AdamW { beta1, beta2, eps, weight_decay } => gpu
                    .adamw(
                        &mut p,
                        &gg,
                        &mut s1,
                        &mut s2,
                        0.01,
                        (beta1, beta2),
                        eps,
                        weight_decay,
                        t,
                    )
                    .unwrap(),
                OptimizerSpec::Sgd { momentum, dampening, nesterov, weight_decay } => gpu
                    .sgd(
                        &mut p,
                        &gg,
                        &mut s1,
                        0.01,
                        momentum,
                        dampening,
                        weight_decay,
                        nesterov,
                        t == 1,
                    )
                    .unwrap(),
            }
        }
        let got = gpu.download_f32(&p).unwrap();
        check(&format!("{spec:?}"), &got, &cpu_p, Storage::F32);
    }
}

/// Every fixture model: the whole graph on the GPU against the CPU backend at batch 1 and 2,
/// or, when the graph has an op without a GPU kernel, the fallback names it.
#[test]
fn fixture_models_match_the_cpu_backend() {
    let gpu = gpu();
    // HYDRANT_FIXTURES: where the fixtures are when the binary runs away from its build tree.
    let dir = std::env::var_os("HYDRANT_FIXTURES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures"));
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    files.sort();
    let mut ran = 0;
    for path in files {
        let graph = match OnnxGraph::load(&path) {
            Ok(g) => g,
            Err(e) => {
                println!("{}: not loadable ({e})", path.display());
                continue;
            }
        };
        let model = Model::load(&path, LoadOptions::new().device(hydrant::Device::Cpu)).unwrap();
        for st in Storage::ALL {
            let seg = match GpuSegment::for_graph(&gpu, &graph, st).unwrap() {
                Ok(s) => s,
                Err(placement) => {
                    println!("{}: {}", path.display(), placement.describe());
                    break;
                }
            };
            for batch in [1usize, 2] {
                let inputs: Vec<(String, Tensor)> = model
                    .inputs()
                    .iter()
                    .enumerate()
                    .map(|(i, spec)| {
                        let shape: Vec<usize> = spec
                            .shape
                            .iter()
                            .enumerate()
                            .map(|(k, d)| match d {
                                hydrant::Dim::Fixed(n) => *n,
                                hydrant::Dim::Symbolic(_) if k == 0 => batch,
                                hydrant::Dim::Symbolic(_) => 1,
                            })
                            .collect();
                        let v = round(&random(shape.iter().product(), i as u64 + 40), st);
                        (spec.name.clone(), Tensor::new(&shape, v).unwrap())
                    })
                    .collect();
                if model.inputs().iter().any(|s| s.dtype != hydrant::DType::F32) {
                    println!("{}: non-f32 input, GPU run skipped", path.display());
                    break;
                }
                let refs: Vec<(&str, &Tensor)> =
                    inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
                let want = model.run(&refs, &[]).unwrap();
                let got = seg.run_host(&gpu, &refs).unwrap();
                for (name, t) in want.iter() {
                    let (shape, values) = &got[name];
                    assert_eq!(shape.iter().product::<usize>(), t.len(), "{name}");
                    let w = t.to_f32();
                    check(
                        &format!("{} {name} batch {batch}", path.display()),
                        values,
                        w.as_slice::<f32>().unwrap(),
                        st,
                    );
                }
                ran += 1;
            }
        }
    }
    assert!(ran > 0, "no fixture model ran on the GPU");
}
