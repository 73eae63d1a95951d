//! `--device` and `$HYDRANT_DEVICE` of `hydrant train-head` and `finetune`: the CPU device
//! trains exactly what the unflagged run trains on a machine without a GPU, an unusable CUDA
//! device is one clear line and exit status 2, never a panic.

use hydrant::backend::device::Probe;
use hydrant::{HeadSet, Tensor};
use hydrant_tests::{fixture, npy, rel_err};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary with `args`, `$HYDRANT_DEVICE` set to `env` (removed when `None`).
fn hydrant(args: &[&str], env: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hydrant"));
    cmd.args(args);
    match env {
        Some(v) => cmd.env("HYDRANT_DEVICE", v),
        None => cmd.env_remove("HYDRANT_DEVICE"),
    };
    cmd.output().expect("the binary runs")
}

/// Whether this build and machine have a usable CUDA device (the binary is built with the same
/// features as this test).
fn gpu_here() -> bool {
    matches!(Probe::detect(), Probe::Devices(n) if n > 0)
}

fn path(name: &str) -> String {
    fixture(name).to_string_lossy().into_owned()
}

fn scratch(test: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("hydrant-train-device-{test}-{}", std::process::id()));
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

fn assert_clean_failure(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line on stderr: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "`{needle}` not in: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `train-head` of the MLP parity head for two epochs, writing `out`, plus `extra` flags.
fn train_head(out: &Path, extra: &[&str], env: Option<&str>) -> Output {
    let (init, x, y) = (
        path("train/parity_mlp_init.safetensors"),
        path("train/parity_mlp_features.npy"),
        path("train/parity_mlp_labels.npy"),
    );
    let mut args = vec![
        "train-head",
        "--head",
        &init,
        "--features",
        &x,
        "--labels",
        &y,
        "--loss",
        "ce",
        "--lr",
        "0.05",
        "--epochs",
        "2",
        "--batch",
        "16",
        "--no-shuffle",
        "--threads",
        "2",
        "--out",
        s(out),
    ];
    args.extend_from_slice(extra);
    hydrant(&args, env)
}

/// Asserts two head files hold the same tensors (exactly when both trained on the CPU).
fn assert_same_heads(a: &Path, b: &Path, tolerance: f32) {
    let (a, b) = (HeadSet::load(a).unwrap(), HeadSet::load(b).unwrap());
    assert_eq!(a.heads.len(), b.heads.len());
    for (x, y) in a.heads.iter().zip(&b.heads) {
        assert_eq!(x.name(), y.name());
        assert_eq!(x.tensors().len(), y.tensors().len());
        for ((name, p), (_, q)) in x.tensors().iter().zip(y.tensors()) {
            let e = rel_err(p, q);
            assert!(e <= tolerance, "{}: {name} differs by {e:e}", x.name());
        }
    }
}

#[test]
fn train_head_on_the_cpu_device_trains_what_the_unflagged_run_trains() {
    let dir = scratch("cpu");
    let (flagged, env, plain) = (dir.join("flagged.st"), dir.join("env.st"), dir.join("plain.st"));
    let stdout = succeeded(&train_head(&flagged, &["--device", "cpu"], None));
    assert!(stdout.contains("epochs on cpu (requested)"), "{stdout}");
    assert!(stdout.contains("trained on cpu ->"), "{stdout}");
    assert!(stdout.contains("epoch 2/2"), "{stdout}");
    succeeded(&train_head(&env, &[], Some("cpu")));
    assert_same_heads(&flagged, &env, 0.0);
    let stdout = succeeded(&train_head(&plain, &[], None));
    if gpu_here() {
        assert!(stdout.contains("trained on cuda:0"), "{stdout}");
        assert_same_heads(&flagged, &plain, 1e-4);
    } else {
        assert!(stdout.contains("epochs on cpu (auto: "), "{stdout}");
        assert_same_heads(&flagged, &plain, 0.0);
    }
    // The weights moved: training happened.
    let init = HeadSet::load(fixture("train/parity_mlp_init.safetensors")).unwrap();
    let trained = HeadSet::load(&flagged).unwrap();
    let (w0, w1) = (&init.heads[0].tensors()[0].1, &trained.heads[0].tensors()[0].1);
    assert!(rel_err(w0, w1) > 1e-3, "the head did not change");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cuda_without_a_usable_device_is_one_clear_line() {
    let dir = scratch("cuda");
    let out = dir.join("head.st");
    for (flag, env) in [(Some("cuda"), None), (None, Some("cuda")), (Some("cuda:0"), Some("cpu"))] {
        let extra: Vec<&str> = flag.map(|f| vec!["--device", f]).unwrap_or_default();
        let run = train_head(&out, &extra, env);
        if gpu_here() {
            assert!(succeeded(&run).contains("trained on cuda:0"));
        } else {
            assert_clean_failure(&run, &["cuda:0"]);
            assert!(!out.exists(), "no head file is written");
        }
    }
    // A device no machine here has, by flag or environment.
    assert_clean_failure(&train_head(&out, &["--device", "cuda:99"], None), &["cuda:99"]);
    assert_clean_failure(&train_head(&out, &[], Some("cuda:99")), &["cuda:99"]);
    // A job the GPU trainer refuses, under an explicit CUDA device.
    let refused = train_head(&out, &["--device", "cuda", "--val-fraction", "0.25"], None);
    let why = if gpu_here() { "validation" } else { "cuda:0" };
    assert_clean_failure(&refused, &["cuda:0", why]);
    // Under auto the same job trains on the CPU, saying why on stderr when a GPU was there.
    let auto = train_head(&out, &["--val-fraction", "0.25"], None);
    assert!(succeeded(&auto).contains("trained on cpu"));
    let stderr = String::from_utf8_lossy(&auto.stderr);
    assert_eq!(stderr.contains("training on the CPU instead of the GPU"), gpu_here(), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_device_names_fail_clearly_and_the_flag_beats_the_environment() {
    let dir = scratch("names");
    let out = dir.join("head.st");
    assert_clean_failure(&train_head(&out, &["--device", "gpu"], None), &["`gpu`", "cuda:N"]);
    assert_clean_failure(&train_head(&out, &[], Some("gpu")), &["HYDRANT_DEVICE", "`gpu`"]);
    succeeded(&train_head(&out, &["--device", "cpu"], Some("gpu")));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn finetune_on_the_cpu_device_trains_what_the_unflagged_run_trains() {
    let dir = scratch("finetune");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let n = 96;
    let images = npy("digits_images.npy").slice_rows(0, n).unwrap();
    let digits = npy("digits_labels.npy").into_vec::<i64>().unwrap();
    let parity: Vec<i64> = digits[..n].iter().map(|d| d % 2).collect();
    hydrant::write_npy(data.join("input.npy"), &images).unwrap();
    hydrant::write_npy(data.join("parity.npy"), &Tensor::new(&[n], parity).unwrap()).unwrap();
    let model = path("digits.onnx");
    let run = |out: &Path, extra: &[&str], env: Option<&str>| {
        let mut args = vec![
            "finetune",
            &model,
            "--data",
            s(&data),
            "--heads",
            "parity",
            "--lr",
            "0.05",
            "--epochs",
            "2",
            "--batch",
            "32",
            "--no-shuffle",
            "--threads",
            "2",
            "--out",
            s(out),
        ];
        args.extend_from_slice(extra);
        hydrant(&args, env)
    };
    let (flagged, plain) = (dir.join("flagged.st"), dir.join("plain.st"));
    let stdout = succeeded(&run(&flagged, &["--device", "cpu"], None));
    assert!(stdout.contains("training 1 head(s) on cpu (requested)"), "{stdout}");
    assert!(stdout.contains("1 head(s) trained on cpu ->"), "{stdout}");
    let stdout = succeeded(&run(&plain, &[], None));
    if gpu_here() {
        assert!(stdout.contains("trained on cuda:0"), "{stdout}");
        assert_same_heads(&flagged, &plain, 1e-4);
    } else {
        assert_same_heads(&flagged, &plain, 0.0);
        assert_clean_failure(&run(&plain, &["--device", "cuda"], None), &["cuda:0"]);
        assert_clean_failure(&run(&plain, &[], Some("cuda:1")), &["cuda:1"]);
    }
    // Two heads under a weighting: the CPU trainer's job; explicit CUDA refuses it.
    let ge5: Vec<i64> = digits[..n].iter().map(|&d| i64::from(d >= 5)).collect();
    hydrant::write_npy(data.join("ge5.npy"), &Tensor::new(&[n], ge5).unwrap()).unwrap();
    let mut two = vec!["finetune", &model, "--data", s(&data), "--heads", "parity,ge5"];
    two.extend(["--epochs", "1", "--threads", "2", "--device", "cuda", "--out", s(&plain)]);
    let why = if gpu_here() { "one head at a time" } else { "cuda:0" };
    assert_clean_failure(&hydrant(&two, None), &[why]);
    std::fs::remove_dir_all(&dir).unwrap();
}
