//! `hydrant train-head`, `finetune`, `export-heads` and `--heads-file`: results against PyTorch
//! (the parity fixtures of scripts/make_train_fixtures.py) and against the library run directly,
//! PNG curves, and clear failures on bad input.

use hydrant::train::{Network, OptimizerSpec, Weighting};
use hydrant::{HeadSet, Labels, LoadOptions, Model, TaskSpec, Tensor, TrainOptions, Trainer};
use hydrant_tests::{fixture, npy, rel_err, safetensors};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn hydrant(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hydrant")).args(args).output().expect("the binary runs")
}

fn path(name: &str) -> String {
    fixture(name).to_string_lossy().into_owned()
}

/// A fresh folder for one test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hydrant-train-cli-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn succeeded(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn assert_clean_failure(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line on stderr: {stderr}");
    assert!(stderr.contains(needle), "`{needle}` not in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Width and height of a PNG file (from its IHDR chunk).
fn png_size(file: &Path) -> (u32, u32) {
    let bytes = std::fs::read(file).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", file.display());
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

/// `train-head --no-shuffle` on a parity fixture: the written head equals PyTorch's weights
/// after the same 30 steps (tolerance of tests/train.rs).
fn parity(head: &str, run: &str) {
    let dir = scratch(&format!("parity-{head}-{run}"));
    let (reference, meta) = safetensors(&format!("train/parity_{head}_{run}.safetensors"));
    let m: Value = serde_json::from_str(&meta["run"]).unwrap();
    let (batch, steps) = (m["batch"].as_u64().unwrap(), m["steps"].as_u64().unwrap());
    let n = npy(&format!("train/parity_{head}_features.npy")).shape()[0] as u64;
    let epochs = (steps * batch / n).to_string();
    let (batch, lr) = (batch.to_string(), m["lr"].as_f64().unwrap().to_string());
    let opt = &m["optimizer"];
    let decay = opt["weight_decay"].as_f64().unwrap().to_string();
    let out = dir.join("trained.safetensors");
    let plot = dir.join("curves.png");
    let init = path(&format!("train/parity_{head}_init.safetensors"));
    let features = path(&format!("train/parity_{head}_features.npy"));
    let labels = path(&format!("train/parity_{head}_labels.npy"));
    let mut args = vec![
        "train-head",
        "--head",
        &init,
        "--name",
        head,
        "--features",
        &features,
        "--labels",
        &labels,
        "--loss",
        "ce",
        "--lr",
        &lr,
        "--weight-decay",
        &decay,
        "--epochs",
        &epochs,
        "--batch",
        &batch,
        "--no-shuffle",
        "--threads",
        "2",
        "--plot",
        s(&plot),
        "--out",
        s(&out),
    ];
    let momentum;
    match opt["kind"].as_str().unwrap() {
        "sgd" => {
            momentum = opt["momentum"].as_f64().unwrap().to_string();
            args.extend(["--optimizer", "sgd", "--momentum", &momentum]);
            if opt["nesterov"].as_bool().unwrap() {
                args.push("--nesterov");
            }
        }
        _ => args.extend(["--optimizer", "adamw"]),
    }
    let stdout = succeeded(&hydrant(&args));
    assert!(stdout.contains(&format!("epoch {epochs}/{epochs}")), "{stdout}");
    let trained = HeadSet::load(&out).unwrap();
    assert_eq!(trained.heads.len(), 1);
    let trained = &trained.heads[0];
    assert_eq!(trained.name(), head);
    for (name, t) in trained.tensors() {
        let r = &reference[&format!("{head}.{name}")];
        if t.dtype() == hydrant::DType::I64 {
            assert_eq!(t, r, "{head}/{run}: {name}");
            continue;
        }
        let e = rel_err(t, r);
        assert!(e <= 1e-4, "{head}/{run}: weight {name} relative error {e:e} after {steps} steps");
    }
    // One row of two panels for the one head.
    assert_eq!(png_size(&plot), (800, 240));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn train_head_matches_pytorch_on_the_mlp_head_with_sgd() {
    parity("mlp", "sgd");
}

#[test]
fn train_head_matches_pytorch_on_the_mlp_head_with_adamw() {
    parity("mlp", "adamw");
}

#[test]
fn train_head_matches_pytorch_on_the_segmentation_head_with_sgd() {
    parity("seg", "sgd");
}

#[test]
fn train_head_matches_pytorch_on_the_segmentation_head_with_adamw() {
    parity("seg", "adamw");
}

/// The digits model's trunk features and labels of the first `n` images.
fn digits_features(n: usize) -> (Model, Tensor, Tensor, Vec<i64>) {
    let model = Model::load(fixture("digits.onnx"), LoadOptions::new().threads(2)).unwrap();
    let images = npy("digits_images.npy").slice_rows(0, n).unwrap();
    let labels = npy("digits_labels.npy").into_vec::<i64>().unwrap()[..n].to_vec();
    let features = model.trunk(&[("image", &images)]).unwrap();
    let f = features.get("/trunk/trunk.8/Relu_output_0").unwrap();
    (model, images, f, labels)
}

#[test]
fn exported_heads_train_further_and_load_back_into_the_model() {
    let dir = scratch("export");
    let heads = dir.join("heads.safetensors");
    let out = hydrant(&["export-heads", &path("digits.onnx"), "--out", s(&heads)]);
    succeeded(&out);
    let (model, images, features, labels) = digits_features(300);
    let exported = HeadSet::load(&heads).unwrap();
    let names: Vec<&str> = exported.heads.iter().map(|h| h.name()).collect();
    assert_eq!(names, ["digit", "parity", "ge5"]);
    for h in &exported.heads {
        assert_eq!(h, &model.trainable_head(h.name()).unwrap(), "exported {}", h.name());
    }

    // Train `parity` further on real trunk features, starting from the exported weights.
    let x = dir.join("x.npy");
    let y = dir.join("y.npy");
    hydrant::write_npy(&x, &features).unwrap();
    let parity: Vec<i64> = labels.iter().map(|d| d % 2).collect();
    hydrant::write_npy(&y, &Tensor::new(&[parity.len()], parity).unwrap()).unwrap();
    let trained = dir.join("parity.safetensors");
    let args = [
        "train-head",
        "--head",
        s(&heads),
        "--name",
        "parity",
        "--features",
        s(&x),
        "--labels",
        s(&y),
        "--optimizer",
        "adamw",
        "--lr",
        "0.01",
        "--epochs",
        "2",
        "--batch",
        "50",
        "--quiet",
        "--out",
        s(&trained),
    ];
    succeeded(&hydrant(&args));
    let set = HeadSet::load(&trained).unwrap();
    let head = &set.heads[0];
    assert_eq!(head.name(), "parity");
    assert_eq!(head.spec().input(), "/trunk/trunk.8/Relu_output_0");
    let start = exported.get("parity").unwrap();
    assert!(rel_err(&head.tensors()[0].1, &start.tensors()[0].1) > 0.0, "weights moved");

    // `run --heads-file` uses the trained head: its output equals the head's own forward.
    let input = dir.join("image.npy");
    hydrant::write_npy(&input, &images).unwrap();
    let outdir = dir.join("out");
    let image_arg = format!("image={}", s(&input));
    let args = [
        "run",
        &path("digits.onnx"),
        "--heads-file",
        s(&trained),
        "--input",
        &image_arg,
        "--heads",
        "parity",
        "--out",
        s(&outdir),
    ];
    succeeded(&hydrant(&args));
    let got = hydrant::read_npy(outdir.join("parity.npy")).unwrap();
    let mut net = Network::<f32>::new(head).unwrap();
    let want =
        net.infer(hydrant::train::Array::from_tensor(&features).unwrap()).unwrap().to_tensor();
    let e = rel_err(&got, &want);
    assert!(e <= 1e-5, "run --heads-file vs the head's forward: relative error {e:e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn export_heads_names_the_op_that_prevents_training() {
    let dir = scratch("untrainable");
    let heads = dir.join("heads.safetensors");
    let out = hydrant(&["export-heads", &path("train/untrainable.onnx"), "--out", s(&heads)]);
    succeeded(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("head `res`") && stderr.contains("Add"), "{stderr}");
    let set = HeadSet::load(&heads).unwrap();
    assert_eq!(set.heads.iter().map(|h| h.name()).collect::<Vec<_>>(), ["lin"]);

    let out = hydrant(&["inspect", &path("train/untrainable.onnx"), "--json"]);
    let v: Value = serde_json::from_str(&succeeded(&out)).unwrap();
    let heads = v["heads"].as_array().unwrap();
    let res = heads.iter().find(|h| h["name"] == "res").unwrap();
    assert_eq!(res["trainable"], false);
    assert!(res["not_trainable_because"].as_str().unwrap().contains("`/Add`: Add"));
    let lin = heads.iter().find(|h| h["name"] == "lin").unwrap();
    assert_eq!(lin["trainable"], true);
    assert!(lin["not_trainable_because"].is_null());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn finetune_writes_what_the_library_trainer_computes() {
    let dir = scratch("finetune");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let n = 240;
    let (model, images, _, labels) = digits_features(n);
    hydrant::write_npy(data.join("input.npy"), &images).unwrap();
    let parity: Vec<i64> = labels.iter().map(|d| d % 2).collect();
    let ge5: Vec<i64> = labels.iter().map(|&d| i64::from(d >= 5)).collect();
    let mask: Vec<u8> = (0..n).map(|i| u8::from(i % 3 != 0)).collect();
    let t = |v: Vec<i64>| Tensor::new(&[n], v).unwrap();
    hydrant::write_npy(data.join("parity.npy"), &t(parity.clone())).unwrap();
    hydrant::write_npy(data.join("ge5.npy"), &t(ge5.clone())).unwrap();
    hydrant::write_npy(data.join("ge5.mask.npy"), &Tensor::new(&[n], mask.clone()).unwrap())
        .unwrap();
    let out = dir.join("heads.safetensors");
    let plot = dir.join("curves.png");
    let args = [
        "finetune",
        &path("digits.onnx"),
        "--data",
        s(&data),
        "--heads",
        "parity,ge5",
        "--weighting",
        "uncertainty",
        "--lr",
        "0.05",
        "--epochs",
        "3",
        "--batch",
        "32",
        "--no-shuffle",
        "--val-fraction",
        "0.25",
        "--threads",
        "2",
        "--swap-check",
        "--plot",
        s(&plot),
        "--out",
        s(&out),
    ];
    let stdout = succeeded(&hydrant(&args));
    assert!(stdout.contains("epoch 3/3"), "{stdout}");
    assert!(stdout.contains("| val loss"), "{stdout}");
    assert!(stdout.contains("swap-check"), "{stdout}");
    assert_eq!(png_size(&plot), (800, 480));

    let heads: Vec<hydrant::Head> = ["parity", "ge5"]
        .iter()
        .map(|h| {
            let head = model.trainable_head(h).unwrap();
            let mut spec = head.spec().clone();
            spec.task = Some(TaskSpec::from_loss_name("ce", 2).unwrap());
            hydrant::Head::new(spec, head.tensors().to_vec()).unwrap()
        })
        .collect();
    let options = TrainOptions {
        epochs: 3,
        batch_size: 32,
        shuffle: false,
        lr: 0.05,
        optimizer: OptimizerSpec::sgd(0.9, 0.0),
        weighting: Weighting::Uncertainty,
        validation_fraction: 0.25,
        threads: 2,
        ..TrainOptions::default()
    };
    let mut trainer = Trainer::new(heads, options).unwrap();
    let mask: Vec<bool> = mask.iter().map(|&m| m != 0).collect();
    let labels =
        [("parity", Labels::new(t(parity))), ("ge5", Labels::masked(t(ge5), mask).unwrap())];
    trainer.add_samples(&model, &[("image", &images)], &labels, 64).unwrap();
    trainer.fit(None, |_| std::ops::ControlFlow::Continue(())).unwrap();
    let want = trainer.heads().unwrap();
    let got = HeadSet::load(&out).unwrap();
    assert_eq!(got.heads.len(), 2);
    for (g, w) in got.heads.iter().zip(&want) {
        assert_eq!(g.name(), w.name());
        for ((name, a), (_, b)) in g.tensors().iter().zip(w.tensors()) {
            let e = rel_err(a, b);
            assert!(e <= 1e-6, "{}: {name} differs from the library's run by {e:e}", g.name());
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn new_heads_from_a_layer_list_are_sized_to_the_features() {
    let dir = scratch("new");
    let out = dir.join("new.safetensors");
    let args = [
        "train-head",
        "--new",
        "conv:4:3,bn,relu,gap,linear:6,relu,linear:3",
        "--name",
        "fresh",
        "--reads",
        "some/trunk/tensor",
        "--features",
        &path("train/parity_seg_features.npy"),
        "--labels",
        &path("train/parity_seg_labels.npy"),
        "--epochs",
        "1",
        "--batch",
        "8",
        "--seed",
        "7",
        "--out",
        s(&out),
    ];
    // Segmentation labels are [n, 16, 16]; this head classifies whole samples, so it refuses.
    let refused = hydrant(&args);
    assert_clean_failure(&refused, "labels");
    // Per-sample labels: the first pixel's class of each sample (ignored pixels give -100).
    let y = npy("train/parity_seg_labels.npy");
    let per_sample: Vec<i64> = y.as_slice::<i64>().unwrap().chunks(256).map(|c| c[40]).collect();
    let labels = dir.join("y.npy");
    hydrant::write_npy(&labels, &Tensor::new(&[per_sample.len()], per_sample).unwrap()).unwrap();
    let mut args = args.to_vec();
    let at = args.iter().position(|a| *a == "--labels").unwrap();
    args[at + 1] = s(&labels);
    succeeded(&hydrant(&args));
    let set = HeadSet::load(&out).unwrap();
    let h = &set.heads[0];
    assert_eq!(h.name(), "fresh");
    assert_eq!(h.spec().input(), "some/trunk/tensor");
    let shapes: Vec<(&str, Vec<usize>)> =
        h.tensors().iter().map(|(n, t)| (n.as_str(), t.shape().to_vec())).collect();
    assert_eq!(shapes[0], ("0.weight", vec![4, 8, 3, 3]));
    assert_eq!(shapes.iter().find(|(n, _)| *n == "4.weight").unwrap().1, [6, 4]);
    assert_eq!(shapes.iter().find(|(n, _)| *n == "6.weight").unwrap().1, [3, 6]);
    assert!(matches!(h.spec().task, Some(TaskSpec::CrossEntropy { classes: 3, .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_fails_with_one_clear_line() {
    let init = path("train/parity_mlp_init.safetensors");
    let x = path("train/parity_mlp_features.npy");
    let y = path("train/parity_mlp_labels.npy");
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> =
            ["train-head", "--head", &init, "--features", &x, "--out", "/nonexistent/x"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        hydrant(&refs)
    };
    assert_clean_failure(&run(base(&["--labels", "/no/such/labels.npy"])), "no such file");
    // Float labels for a cross-entropy head.
    assert_clean_failure(&run(base(&["--labels", &x])), "int64 class ids");
    assert_clean_failure(&run(base(&["--labels", &y, "--loss", "hinge"])), "loss `hinge`");
    assert_clean_failure(&run(base(&["--labels", &y, "--name", "nope"])), "unknown head `nope`");
    assert_clean_failure(&run(base(&["--labels", &y, "--optimizer", "lbfgs"])), "--optimizer");
    let seg = path("train/parity_seg_features.npy");
    let new = ["train-head", "--new", "linear:3", "--name", "n", "--features", &seg];
    let new: Vec<String> = new
        .iter()
        .chain(&["--labels", &y, "--out", "/nonexistent/x"])
        .map(|s| s.to_string())
        .collect();
    assert_clean_failure(&run(new), "linear needs flat features");
    let dir = scratch("bad");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let out = dir.join("o.safetensors");
    let finetune = |heads: &str| {
        hydrant(&[
            "finetune",
            &path("digits.onnx"),
            "--data",
            s(&data),
            "--heads",
            heads,
            "--out",
            s(&out),
        ])
    };
    assert_clean_failure(&finetune("parity"), "input.npy");
    hydrant::write_npy(data.join("input.npy"), &npy("digits_images.npy").slice_rows(0, 8).unwrap())
        .unwrap();
    assert_clean_failure(&finetune("nope"), "unknown head `nope`");
    assert_clean_failure(&finetune("parity"), "parity.npy");
    hydrant::write_npy(data.join("parity.npy"), &Tensor::new(&[8], vec![1i64; 8]).unwrap())
        .unwrap();
    let args: Vec<String> =
        ["finetune", &path("digits.onnx"), "--data", s(&data), "--out", s(&out)]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let with = |extra: &[&str]| -> Output {
        let mut a = args.clone();
        a.extend(extra.iter().map(|s| s.to_string()));
        run(a)
    };
    assert_clean_failure(&with(&["--loss", "parity=mse"]), "float32 labels");
    let nine = Tensor::new(&[9], vec![1i64; 9]).unwrap();
    hydrant::write_npy(data.join("parity.npy"), &nine).unwrap();
    assert_clean_failure(&with(&[]), "9 rows for 8 input samples");
    hydrant::write_npy(data.join("parity.npy"), &nine.slice_rows(0, 8).unwrap()).unwrap();
    assert_clean_failure(&with(&["--weighting", "uncertainty", "--weights", "1"]), "--weights");
    assert_clean_failure(&with(&["--alternate", "sometimes"]), "--alternate sometimes");
    succeeded(&with(&["--epochs", "1", "--quiet"]));
    assert!(out.exists());
    std::fs::remove_file(&out).unwrap();
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn whole_safetensors_models_load_by_extension() {
    let out = hydrant(&["inspect", &path("train/whole.safetensors"), "--json"]);
    let v: Value = serde_json::from_str(&succeeded(&out)).unwrap();
    let names: Vec<&str> =
        v["heads"].as_array().unwrap().iter().map(|h| h["name"].as_str().unwrap()).collect();
    let model =
        Model::load_safetensors(fixture("train/whole.safetensors"), LoadOptions::new()).unwrap();
    assert_eq!(names, model.head_names());
    assert!(v["heads"].as_array().unwrap().iter().all(|h| h["trainable"] == true));
}

#[test]
fn demo_shows_a_new_task_learned_better_on_trunk_features_than_on_pixels() {
    let out = hydrant(&["demo", "--threads", "1"]);
    let text = succeeded(&out);
    let accuracy = |start: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no `{start}` line:\n{text}"));
        line.split_whitespace().rev().nth(2).unwrap().parse().unwrap()
    };
    let (trunk, pixels) = (accuracy("trunk features ("), accuracy("raw pixels ("));
    assert!(trunk > 0.9, "prime on trunk features: {trunk}");
    assert!(trunk > pixels, "trunk features {trunk} vs raw pixels {pixels}");
    // The added head runs inside the model, beside the file's heads, on held-out images.
    let meta = hydrant_tests::json("digits_meta.json");
    let n_train = meta["train"].as_u64().unwrap() as usize;
    let labels = npy("digits_labels.npy").into_vec::<i64>().unwrap();
    let row = |name: &str| -> Vec<i64> {
        let line = text.lines().find(|l| l.trim_start().starts_with(name)).unwrap();
        line.split_whitespace().skip(2).map(|v| v.parse().unwrap()).collect()
    };
    assert_eq!(row("true digit"), labels[n_train..n_train + 8]);
    assert_eq!(row("head prime").len(), 8);
    assert!(row("head prime").iter().all(|&p| p == 0 || p == 1));
}
