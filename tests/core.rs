//! The core runtime against onnxruntime's outputs (fixtures made by scripts/make_fixtures.py).

use hydrant::{LoadOptions, Model};
use hydrant_tests::{assert_close, fixture, json, npy};
use std::collections::BTreeMap;

const TOL: f32 = 1e-4;
const HEADS: [&str; 3] = ["cls", "box", "seg"];

fn hydranet() -> Model {
    Model::load(fixture("hydranet.onnx"), LoadOptions::new().threads(2)).unwrap()
}

#[test]
fn split_matches_the_pytorch_module_structure() {
    let model = hydranet();
    let expected = json("hydranet_expected_split.json");
    let split = model.split();
    assert_eq!(model.head_names(), HEADS);
    let mut found = BTreeMap::new();
    for n in split.trunk_nodes() {
        found.insert(model.node(n).unwrap().0.to_string(), "trunk".to_string());
    }
    for h in &split.heads {
        assert_eq!(h.outputs, vec![h.name.clone()]);
        for &n in &h.nodes {
            let (name, op) = model.node(n).unwrap();
            assert_ne!(op, "Constant", "constants belong to no segment");
            found.insert(name.to_string(), h.name.clone());
        }
        let cuts: Vec<String> = expected["cut_points"][&h.name]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(h.cut_points, cuts, "cut points of head {}", h.name);
    }
    let want: BTreeMap<String, String> = expected["nodes"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    assert_eq!(found, want);
    // The layers after the mid-level tensor serve cls and box only: a segment of their own.
    assert_eq!(split.trunk.len(), 2);
    assert_eq!(split.trunk[0].heads, vec![0, 1, 2]);
    assert_eq!(split.trunk[1].heads, vec![0, 1]);
}

#[test]
fn every_way_of_running_matches_onnxruntime() {
    let model = hydranet();
    for b in [1, 3] {
        let x = npy(&format!("hydranet_input_b{b}.npy"));
        let inputs = [("image", &x)];
        let reference = |h: &str| npy(&format!("hydranet_b{b}_{h}.npy"));
        let all = model.run(&inputs, &[]).unwrap();
        assert_eq!(all.iter().map(|(n, _)| n).collect::<Vec<_>>(), HEADS);
        for h in HEADS {
            assert_close(
                &format!("run all, {h}, batch {b}"),
                all.get(h).unwrap(),
                &reference(h),
                TOL,
            );
            let one = model.run(&inputs, &[h]).unwrap();
            assert_eq!(one.len(), 1);
            assert_close(&format!("run {h}, batch {b}"), one.get(h).unwrap(), &reference(h), TOL);
        }
        let features = model.trunk(&inputs).unwrap();
        for h in HEADS {
            let out = model.heads(&features, &[h]).unwrap();
            assert_eq!(out.get(h), all.get(h), "trunk+heads equals run, head {h}, batch {b}");
        }
    }
}

#[test]
fn batches_as_rows_equal_one_batched_pass() {
    let x = npy("hydranet_input_b3.npy");
    let inputs = [("image", &x)];
    for threads in [1, 2] {
        let load = |rows: bool| {
            let options = LoadOptions::new().threads(threads).batch_as_rows(rows);
            Model::load(fixture("hydranet.onnx"), options).unwrap()
        };
        let (rows, pass) = (load(true), load(false));
        let (a, b) = (rows.run(&inputs, &[]).unwrap(), pass.run(&inputs, &[]).unwrap());
        for h in HEADS {
            let tag = format!("rows vs one pass, {h}, {threads} threads");
            assert_close(&tag, a.get(h).unwrap(), b.get(h).unwrap(), 1e-5);
            assert_close(&tag, a.get(h).unwrap(), &npy(&format!("hydranet_b3_{h}.npy")), TOL);
        }
        let (fa, fb) = (rows.trunk(&inputs).unwrap(), pass.trunk(&inputs).unwrap());
        assert_eq!(fa.names(), fb.names());
        for n in fa.names() {
            let (ta, tb) = (fa.get(n).unwrap(), fb.get(n).unwrap());
            assert_eq!(ta.shape()[0], 3, "feature {n} keeps the batch");
            assert_close(&format!("feature {n}"), &ta, &tb, 1e-5);
        }
    }
}

#[test]
fn a_single_head_skips_what_it_does_not_need() {
    let model = hydranet();
    let x = npy("hydranet_input_b1.npy");
    let seg_only = model.trunk_for(&[("image", &x)], &["seg"]).unwrap();
    assert_eq!(seg_only.names(), vec!["/trunk/block2/Relu_1_output_0"]);
    let err = model.heads(&seg_only, &["cls"]).unwrap_err();
    assert!(err.to_string().contains("/trunk/Flatten_output_0"), "{err}");
}

#[test]
fn user_cut_points_make_a_head_of_the_last_layers() {
    let meta = json("single_meta.json");
    let cut = meta["penultimate"].as_str().unwrap();
    let model = Model::load(fixture("single.onnx"), LoadOptions::new().cut_at([cut])).unwrap();
    assert_eq!(model.head_names(), ["logits"]);
    assert_eq!(model.split().cut_points, [cut]);
    let x = npy("single_input_b2.npy");
    let f = model.trunk(&[("x", &x)]).unwrap();
    assert_close("penultimate", &f.get(cut).unwrap(), &npy("single_b2_penultimate.npy"), TOL);
    let out = model.heads(&f, &["logits"]).unwrap();
    assert_close("logits", out.get("logits").unwrap(), &npy("single_b2_logits.npy"), TOL);
    // Without cut points the last layer with weights is the head: the same cut here.
    let auto = Model::load(fixture("single.onnx"), LoadOptions::new()).unwrap();
    assert_eq!(auto.split().cut_points, [cut]);
}

#[test]
fn bad_requests_are_clear_errors() {
    let model = hydranet();
    let x = npy("hydranet_input_b1.npy");
    let err = model.run(&[("image", &x)], &["nope"]).unwrap_err().to_string();
    assert!(err.contains("unknown head `nope`") && err.contains("cls, box, seg"), "{err}");
    let wrong = hydrant::Tensor::zeros::<f32>(&[1, 3, 16, 16]).unwrap();
    let err = model.run(&[("image", &wrong)], &[]).unwrap_err().to_string();
    assert!(err.contains("expected shape [N, 3, 32, 32], got [1, 3, 16, 16]"), "{err}");
    let ints = hydrant::Tensor::zeros::<i64>(&[1, 3, 32, 32]).unwrap();
    let err = model.run(&[("image", &ints)], &[]).unwrap_err().to_string();
    assert!(err.contains("expected f32 elements, got i64"), "{err}");
    let err = model.run(&[], &[]).unwrap_err().to_string();
    assert!(err.contains("input `image`: missing"), "{err}");
    let err = Model::load(fixture("hydranet.onnx"), LoadOptions::new().cut_at(["no_such"]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown tensor `no_such`"), "{err}");
}

#[test]
fn one_model_serves_many_threads() {
    let model = hydranet();
    let x = npy("hydranet_input_b1.npy");
    let reference = npy("hydranet_b1_seg.npy");
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..3 {
                    let out = model.run(&[("image", &x)], &["seg"]).unwrap();
                    assert_close("threaded seg", out.get("seg").unwrap(), &reference, TOL);
                }
            });
        }
    });
}

#[test]
fn own_cpu_ops_equal_tract_alone_on_the_fixtures() {
    let x = npy("hydranet_input_b3.npy");
    let inputs = [("image", &x)];
    let load = |own: bool| {
        let options = LoadOptions::new().threads(2).own_cpu_ops(own);
        Model::load(fixture("hydranet.onnx"), options).unwrap()
    };
    let (ours, tract) = (load(true), load(false));
    let ops = |m: &Model| -> Vec<String> {
        let x1 = npy("hydranet_input_b1.npy");
        m.profile(&[("image", &x1)], 1).unwrap().into_iter().map(|t| t.op).collect()
    };
    assert!(ops(&ours).iter().any(|op| op == "WinogradConv"), "{:?}", ops(&ours));
    assert!(!ops(&tract).iter().any(|op| op == "WinogradConv"));
    let (a, b) = (ours.run(&inputs, &[]).unwrap(), tract.run(&inputs, &[]).unwrap());
    for h in HEADS {
        assert_close(&format!("own ops vs tract, {h}"), a.get(h).unwrap(), b.get(h).unwrap(), 1e-5);
        assert_close(
            &format!("own ops, {h}"),
            a.get(h).unwrap(),
            &npy(&format!("hydranet_b3_{h}.npy")),
            TOL,
        );
    }
}
