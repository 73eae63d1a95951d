//! Training against PyTorch references (fixtures made by scripts/make_train_fixtures.py):
//! losses and their gradients, 30 optimizer steps on an MLP and a segmentation head, multi-task
//! weighting, and every vocabulary head imported from ONNX against the engine.

use hydrant::train::loss::{self, Target};
use hydrant::train::{Array, Network, OptimizerSpec, TaskSpec, Weighting};
use hydrant::{HeadSet, Labels, LoadOptions, Model, Tensor, TrainOptions, Trainer};
use hydrant_tests::{assert_close, fixture, npy, rel_err, safetensors};
use serde_json::Value;

fn train(name: &str) -> String {
    format!("train/{name}")
}

#[test]
fn losses_and_gradients_match_pytorch() {
    let (t, meta) = safetensors(&train("losses.safetensors"));
    let cases: Vec<Value> = serde_json::from_str(&meta["cases"]).unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let task: TaskSpec = serde_json::from_value(case["task"].clone()).unwrap();
        let logits = Array::<f32>::from_tensor(&t[&format!("{name}.logits")]).unwrap();
        let target = &t[&format!("{name}.target")];
        let mask: Option<Vec<bool>> = t
            .get(&format!("{name}.mask"))
            .map(|m| m.as_slice::<u8>().unwrap().iter().map(|&b| b != 0).collect());
        let tgt = match target.as_slice::<i64>() {
            Some(c) => Target::Classes(c),
            None => Target::Values(target.as_slice::<f32>().unwrap()),
        };
        let out = loss::compute(&task, &logits, tgt, mask.as_deref()).unwrap();
        let want = t[&format!("{name}.loss")].as_slice::<f32>().unwrap()[0];
        assert!(
            (out.loss - want).abs() <= 1e-5 * want.abs().max(1.0),
            "{name}: loss {} vs PyTorch {want}",
            out.loss
        );
        assert_close(
            &format!("{name} gradient"),
            &out.grad.to_tensor(),
            &t[&format!("{name}.grad")],
            1e-4,
        );
    }
}

/// Trains the parity head `head` with the optimizer of fixture `run` and compares with PyTorch.
fn parity(head: &str, run: &str) {
    let init = HeadSet::load(fixture(&train(&format!("parity_{head}_init.safetensors")))).unwrap();
    let (reference, meta) = safetensors(&train(&format!("parity_{head}_{run}.safetensors")));
    let m: Value = serde_json::from_str(&meta["run"]).unwrap();
    let optimizer: OptimizerSpec = serde_json::from_value(m["optimizer"].clone()).unwrap();
    let (batch, steps) =
        (m["batch"].as_u64().unwrap() as usize, m["steps"].as_u64().unwrap() as usize);
    let x = npy(&train(&format!("parity_{head}_features.npy")));
    let y = npy(&train(&format!("parity_{head}_labels.npy")));
    let n = x.shape()[0];
    let options = TrainOptions {
        batch_size: batch,
        shuffle: false,
        lr: m["lr"].as_f64().unwrap() as f32,
        optimizer,
        threads: 2,
        ..TrainOptions::default()
    };
    let mut trainer = Trainer::new(init.heads.clone(), options).unwrap();
    trainer.add_features(&[("features", &x)], &[(head, Labels::new(y))]).unwrap();
    let epochs = steps * batch / n;
    let reports = trainer.fit(Some(epochs), |_| std::ops::ControlFlow::Continue(())).unwrap();
    let losses: Vec<f32> = reports.iter().flat_map(|r| r.step_losses[0].clone()).collect();
    assert_eq!(losses.len(), steps);
    let want = reference["losses"].as_slice::<f32>().unwrap();
    for (i, (a, b)) in losses.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * b.abs().max(1.0),
            "{head}/{run} step {i}: loss {a} vs PyTorch {b}"
        );
    }
    let trained = trainer.heads().unwrap().remove(0);
    for (name, t) in trained.tensors() {
        let r = &reference[&format!("{head}.{name}")];
        if t.dtype() == hydrant::DType::I64 {
            assert_eq!(t, r, "{head}/{run}: {name}");
            continue;
        }
        let e = rel_err(t, r);
        assert!(e <= 1e-4, "{head}/{run}: weight {name} relative error {e:e} after {steps} steps");
    }
}

#[test]
fn mlp_head_matches_pytorch_over_30_sgd_steps() {
    parity("mlp", "sgd");
}

#[test]
fn mlp_head_matches_pytorch_over_30_adamw_steps() {
    parity("mlp", "adamw");
}

#[test]
fn segmentation_head_matches_pytorch_over_30_sgd_steps() {
    parity("seg", "sgd");
}

#[test]
fn segmentation_head_matches_pytorch_over_30_adamw_steps() {
    parity("seg", "adamw");
}

#[test]
fn uncertainty_and_dwa_weights_match_the_reference_formulas() {
    let init = HeadSet::load(fixture(&train("weighting_init.safetensors"))).unwrap();
    let (reference, meta) = safetensors(&train("weighting.safetensors"));
    let m: Value = serde_json::from_str(&meta["run"]).unwrap();
    let x = npy(&train("weighting_features.npy"));
    let ycls = npy(&train("weighting_cls.npy"));
    let yreg = npy(&train("weighting_reg.npy"));
    for (strategy, weighting) in [
        ("uncertainty", Weighting::Uncertainty),
        ("dwa", Weighting::Dwa { temperature: m["temperature"].as_f64().unwrap() as f32 }),
    ] {
        let options = TrainOptions {
            batch_size: m["batch"].as_u64().unwrap() as usize,
            shuffle: false,
            lr: m["lr"].as_f64().unwrap() as f32,
            optimizer: OptimizerSpec::sgd(m["momentum"].as_f64().unwrap() as f32, 0.0),
            weighting,
            threads: 1,
            ..TrainOptions::default()
        };
        let mut trainer = Trainer::new(init.heads.clone(), options).unwrap();
        trainer
            .add_features(
                &[("features", &x)],
                &[("cls", Labels::new(ycls.clone())), ("reg", Labels::new(yreg.clone()))],
            )
            .unwrap();
        let epochs = m["epochs"].as_u64().unwrap() as usize;
        let reports = trainer.fit(Some(epochs), |_| std::ops::ControlFlow::Continue(())).unwrap();
        let want_w = reference[&format!("{strategy}.weights")].as_slice::<f32>().unwrap();
        let want_l = reference[&format!("{strategy}.losses")].as_slice::<f32>().unwrap();
        for (e, r) in reports.iter().enumerate() {
            for k in 0..2 {
                let (w, ww) = (r.weights[k], want_w[e * 2 + k]);
                assert!(
                    (w - ww).abs() <= 1e-4 * ww.abs().max(1.0),
                    "{strategy} epoch {e} weight {k}: {w} vs {ww}"
                );
                let (l, wl) = (r.train[k].loss as f32, want_l[e * 2 + k]);
                assert!(
                    (l - wl).abs() <= 1e-4 * wl.abs().max(1.0),
                    "{strategy} epoch {e} loss {k}: {l} vs {wl}"
                );
            }
        }
    }
}

#[test]
fn every_vocabulary_head_imports_and_matches_the_engine_and_onnxruntime() {
    let model = Model::load(fixture(&train("vocab.onnx")), LoadOptions::new().threads(1)).unwrap();
    let x = npy(&train("vocab_input.npy"));
    let inputs = [("image", &x)];
    let features = model.trunk(&inputs).unwrap();
    let engine = model.heads(&features, &[]).unwrap();
    let names = model.head_names();
    assert_eq!(names, ["a", "b", "c", "d", "e", "f"]);
    for name in &names {
        let head = model.trainable_head(name).unwrap_or_else(|e| panic!("{e}"));
        let input = features.get(head.spec().input()).unwrap();
        let mut net = Network::<f32>::new(&head).unwrap();
        let ours = net.infer(Array::from_tensor(&input).unwrap()).unwrap().to_tensor();
        assert_close(&format!("head {name} vs engine"), &ours, engine.get(name).unwrap(), 1e-5);
        assert_close(
            &format!("head {name} vs onnxruntime"),
            &ours,
            &npy(&train(&format!("vocab_{name}.npy"))),
            1e-4,
        );
    }
}

#[test]
fn fixture_model_heads_import_and_match_the_engine() {
    for (file, input, batch) in [
        ("hydranet.onnx", "image", "hydranet_input_b3.npy"),
        ("digits.onnx", "image", "digits_ref_input.npy"),
        ("single.onnx", "x", "single_input_b2.npy"),
    ] {
        let model = Model::load(fixture(file), LoadOptions::new().threads(1)).unwrap();
        let x = npy(batch);
        let features = model.trunk(&[(input, &x)]).unwrap();
        let engine = model.heads(&features, &[]).unwrap();
        for name in model.head_names() {
            let head = model.trainable_head(&name).unwrap_or_else(|e| panic!("{file}: {e}"));
            let f = features.get(head.spec().input()).unwrap();
            let ours = Network::<f32>::new(&head)
                .unwrap()
                .infer(Array::from_tensor(&f).unwrap())
                .unwrap()
                .to_tensor();
            assert_close(&format!("{file} head {name}"), &ours, engine.get(&name).unwrap(), 1e-5);
        }
    }
}

#[test]
fn a_head_outside_the_vocabulary_names_the_op() {
    let model = Model::load(fixture(&train("untrainable.onnx")), LoadOptions::new()).unwrap();
    let e = model.trainable_head("res").unwrap_err().to_string();
    assert!(e.contains("head `res` is not trainable") && e.contains("Add"), "{e}");
    assert!(model.trainable_head("lin").is_ok());
}

fn tensor_bits(t: &Tensor) -> Vec<u32> {
    t.to_f32().as_slice::<f32>().unwrap().iter().map(|x| x.to_bits()).collect()
}

#[test]
fn heads_save_and_reload_bit_exactly_with_optimizer_state() {
    let init = HeadSet::load(fixture(&train("parity_seg_init.safetensors"))).unwrap();
    let x = npy(&train("parity_seg_features.npy"));
    let y = npy(&train("parity_seg_labels.npy"));
    let options = TrainOptions {
        batch_size: 8,
        optimizer: OptimizerSpec::adamw(0.01),
        epochs: 1,
        ..TrainOptions::default()
    };
    let mut trainer = Trainer::new(init.heads, options).unwrap();
    trainer.add_features(&[("features", &x)], &[("seg", Labels::new(y))]).unwrap();
    trainer.fit(None, |_| std::ops::ControlFlow::Continue(())).unwrap();
    let set = trainer.head_set(true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg.safetensors");
    set.save(&path).unwrap();
    let back = HeadSet::load(&path).unwrap();
    assert_eq!(back, set);
    for ((n, a), (_, b)) in set.heads[0].tensors().iter().zip(back.heads[0].tensors()) {
        if a.dtype() == hydrant::DType::F32 {
            assert_eq!(tensor_bits(a), tensor_bits(b), "{n}");
        }
    }
    let o = back.optimizer.unwrap();
    assert_eq!(o.optimizer.steps, 5, "40 samples in batches of 8");
    // Conv weight, BN weight and bias, conv weight and bias.
    assert_eq!(o.params[0].1, ["0.weight", "1.weight", "1.bias", "3.weight", "3.bias"]);
}
