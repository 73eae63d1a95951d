//! The `hydrant` command's contract: output files, JSON keys, exit codes, one-line errors.

use hydrant_tests::{assert_close, fixture, npy};
use std::process::{Command, Output};

fn hydrant(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hydrant")).args(args).output().expect("the binary runs")
}

fn path(name: &str) -> String {
    fixture(name).to_string_lossy().into_owned()
}

fn assert_clean_failure(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line on stderr: {stderr}");
    assert!(stderr.contains(needle), "`{needle}` not in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn run_writes_exactly_the_requested_heads() {
    let dir = std::env::temp_dir().join(format!("hydrant-cli-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let input = format!("image={}", path("hydranet_input_b3.npy"));
    let out = hydrant(&[
        "run",
        &path("hydranet.onnx"),
        "--input",
        &input,
        "--heads",
        "seg,cls",
        "--threads",
        "2",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["cls.npy", "seg.npy"]);
    for h in ["cls", "seg"] {
        let got = hydrant::read_npy(dir.join(format!("{h}.npy"))).unwrap();
        assert_close(h, &got, &npy(&format!("hydranet_b3_{h}.npy")), 1e-4);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn inspect_json_has_the_documented_keys() {
    let out = hydrant(&["inspect", &path("hydranet.onnx"), "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("exactly one JSON object");
    assert_eq!(v["inputs"][0]["name"], "image");
    assert_eq!(v["inputs"][0]["shape"], serde_json::json!(["N", 3, 32, 32]));
    for key in ["cut_points", "params", "flops", "nodes"] {
        assert!(!v["trunk"][key].is_null(), "trunk.{key}");
    }
    let heads = v["heads"].as_array().unwrap();
    assert_eq!(heads.len(), 3);
    for h in heads {
        for key in ["name", "outputs", "inputs", "params", "flops", "nodes"] {
            assert!(!h[key].is_null(), "heads[].{key}");
        }
    }
    // cls is Linear(64, 10): 650 parameters, 640 multiply-adds.
    assert_eq!(heads[0]["params"], 650);
    assert_eq!(heads[0]["flops"], 1280);
    assert_eq!(heads[2]["inputs"], serde_json::json!(["/trunk/block2/Relu_1_output_0"]));
}

#[test]
fn inspect_with_cut_names_the_head() {
    let meta = hydrant_tests::json("single_meta.json");
    let cut = meta["penultimate"].as_str().unwrap();
    let out = hydrant(&["inspect", &path("single.onnx"), "--cut", cut, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["trunk"]["cut_points"], serde_json::json!([cut]));
    assert_eq!(v["heads"][0]["name"], "logits");
    assert_eq!(v["heads"][0]["params"], 32 * 5 + 5);
}

#[test]
fn bad_input_fails_with_one_line_and_status_2() {
    let model = path("hydranet.onnx");
    let good = format!("image={}", path("hydranet_input_b1.npy"));
    let wrong_shape = format!("image={}", path("single_input_b2.npy"));
    let out = hydrant(&["run", &model, "--input", &good, "--heads", "nope", "--out", "/tmp/x"]);
    assert_clean_failure(&out, "unknown head `nope`");
    let out = hydrant(&["run", &model, "--input", &wrong_shape, "--out", "/tmp/x"]);
    assert_clean_failure(&out, "expected shape [N, 3, 32, 32], got [2, 1, 8, 8]");
    let out = hydrant(&["inspect", &path("hydranet_input_b1.npy")]);
    assert_clean_failure(&out, "not an ONNX protobuf");
    let out = hydrant(&["inspect", &path("unknown_op.onnx")]);
    assert_clean_failure(&out, "unsupported op `FancyOp` in node `the_fancy_node`");
    let out = hydrant(&["inspect", "/no/such/model.onnx"]);
    assert_clean_failure(&out, "/no/such/model.onnx");
    let not_npy = format!("image={}", path("hydranet.onnx"));
    let out = hydrant(&["run", &model, "--input", &not_npy, "--out", "/tmp/x"]);
    assert_clean_failure(&out, "invalid .npy file");
    let out = hydrant(&["inspect", &model, "--threads", "0"]);
    assert_clean_failure(&out, "threads = 0");
    let out = hydrant(&["inspect", &model, "--device", "gpu7"]);
    assert_clean_failure(&out, "device `gpu7`");
    let out = hydrant(&["inspect", &model, "--precision", "f8"]);
    assert_clean_failure(&out, "precision `f8`: expected f32, f16 or bf16");
    for p in ["f16", "bf16"] {
        let out = hydrant(&["inspect", &model, "--device", "cpu", "--precision", p]);
        assert_clean_failure(&out, &format!("precision {p} needs the CUDA backend"));
        let input = format!("image={}", path("hydranet_input_b1.npy"));
        let out = hydrant(&[
            "run",
            &model,
            "--input",
            &input,
            "--device",
            "cpu",
            "--precision",
            p,
            "--out",
            "/tmp/x",
        ]);
        assert_clean_failure(&out, &format!("precision {p} needs the CUDA backend"));
    }
}

#[test]
fn inspect_says_where_each_part_runs() {
    let out = hydrant(&["inspect", &path("hydranet.onnx"), "--device", "cpu", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["precision"], "f32");
    let parts = v["parts"].as_array().unwrap();
    let names: Vec<&str> = parts.iter().filter_map(|p| p["part"].as_str()).collect();
    for head in ["head cls", "head box", "head seg"] {
        assert!(names.contains(&head), "{names:?}");
    }
    assert!(names.iter().any(|n| n.starts_with("trunk[")), "{names:?}");
    assert!(parts.iter().all(|p| p["runs_on"] == "cpu"), "{parts:?}");
    let out =
        hydrant(&["inspect", &path("hydranet.onnx"), "--device", "cpu", "--precision", "f32"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("runs on:\n  trunk["), "{text}");
    assert!(text.contains("  head seg: cpu\n"), "{text}");
}

#[test]
fn demo_reports_the_accuracy_of_every_task() {
    let out = hydrant(&["demo", "--threads", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let meta = hydrant_tests::json("digits_meta.json");
    for task in ["digit", "parity", "ge5"] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(task) && l.split_whitespace().count() == 3)
            .unwrap_or_else(|| panic!("no accuracy line for {task}:\n{text}"));
        let ours: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let reference = meta["tasks"][task]["test_accuracy"].as_f64().unwrap();
        assert!((ours - reference).abs() < 0.003, "{task}: {ours} vs {reference}");
        assert!(ours > 0.9, "{task}: {ours}");
    }
}
