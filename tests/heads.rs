//! Heads set into a loaded model at run time: swapped, added at any trunk tensor or at the
//! input, loaded from head files; and the trainer's options end to end (early stopping,
//! alternating tasks, GradNorm, masked labels, the memory-mapped feature cache).

use hydrant::train::{
    Alternation, Array, EarlyStopping, HeadSpec, Init, LayerSpec, Network, OptimizerSpec, TaskSpec,
    Weighting,
};
use hydrant::{Head, HeadSet, Labels, LoadOptions, Model, Tensor, TrainOptions, Trainer};
use hydrant_tests::{assert_close, fixture, npy};
use std::ops::ControlFlow;

const MID: &str = "/trunk/block1/Relu_1_output_0";
const PENULTIMATE: &str = "/trunk/trunk.8/Relu_output_0";

fn hydranet() -> Model {
    Model::load(fixture("hydranet.onnx"), LoadOptions::new().threads(2)).unwrap()
}

fn infer(head: &Head, x: &Tensor) -> Tensor {
    Network::<f32>::new(head).unwrap().infer(Array::from_tensor(x).unwrap()).unwrap().to_tensor()
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
fn a_swapped_head_runs_in_place_of_the_old_one() {
    let model = hydranet();
    let x = npy("hydranet_input_b3.npy");
    let inputs = [("image", &x)];
    let before = model.run(&inputs, &[]).unwrap();
    let old = model.trainable_head("box").unwrap();
    let new = Head::init(old.spec().clone(), Init::XavierUniform, 7).unwrap();
    model.swap_head("box", &new).unwrap();
    assert_eq!(model.head_names(), ["cls", "box", "seg"]);
    assert!(!model.head_from_file("box").unwrap());
    let after = model.run(&inputs, &[]).unwrap();
    assert_eq!(after.get("cls"), before.get("cls"));
    assert_eq!(after.get("seg"), before.get("seg"));
    let features = model.trunk(&inputs).unwrap().get(old.spec().input()).unwrap();
    assert_close("swapped box", after.get("box").unwrap(), &infer(&new, &features), 1e-5);
    assert!(after.get("box") != before.get("box"));
    // Swapping the imported head back restores the original outputs.
    model.swap_head("box", &old).unwrap();
    assert_close(
        "restored box",
        model.run(&inputs, &["box"]).unwrap().get("box").unwrap(),
        before.get("box").unwrap(),
        1e-5,
    );
}

#[test]
fn a_new_head_attaches_to_a_trunk_tensor_that_was_not_a_cut_point() {
    let model = hydranet();
    let x = npy("hydranet_input_b3.npy");
    let inputs = [("image", &x)];
    let before = model.run(&inputs, &[]).unwrap();
    let head = pooled_linear("texture", MID, 16, 5, 3);
    model.add_head(&head).unwrap();
    assert_eq!(model.head_names(), ["cls", "box", "seg", "texture"]);
    let all = model.run(&inputs, &[]).unwrap();
    for h in ["cls", "box", "seg"] {
        assert_eq!(all.get(h), before.get(h), "{h} unchanged");
    }
    let mid = model.tensors(&inputs, &[MID]).unwrap().get(MID).unwrap();
    assert_close("texture", all.get("texture").unwrap(), &infer(&head, &mid), 1e-5);
    // Only the stem and block1 run for the new head alone: its trunk part is the first one.
    let split = model.split();
    assert!(split.trunk[0].heads.contains(&3));
    assert!(split.trunk.iter().skip(1).all(|s| !s.heads.contains(&3)));
    assert!(split.cut_points.contains(&MID.to_string()));
    let alone = model.run(&inputs, &["texture"]).unwrap();
    assert_eq!(alone.get("texture"), all.get("texture"));
    // Stored features carry the new cut point.
    let features = model.trunk(&inputs).unwrap();
    assert_eq!(model.heads(&features, &["texture"]).unwrap().get("texture"), all.get("texture"));
}

#[test]
fn a_head_can_read_the_model_input_directly() {
    let model = Model::load(fixture("digits.onnx"), LoadOptions::new().threads(1)).unwrap();
    let x = npy("digits_ref_input.npy");
    let layers = vec![
        LayerSpec::Flatten,
        LayerSpec::Linear { in_features: 64, out_features: 2, bias: true },
    ];
    let head =
        Head::init(HeadSpec::new("pixels", "image", layers, None), Init::PyTorch, 1).unwrap();
    model.add_head(&head).unwrap();
    let out = model.run(&[("image", &x)], &["pixels"]).unwrap();
    assert_close("pixels", out.get("pixels").unwrap(), &infer(&head, &x), 1e-5);
}

#[test]
fn bad_heads_are_refused_and_the_model_keeps_its_heads() {
    let model = hydranet();
    let x = npy("hydranet_input_b1.npy");
    let before = model.run(&[("image", &x)], &[]).unwrap();
    let cases: Vec<(Head, &str)> = vec![
        (pooled_linear("a", "no_such_tensor", 16, 2, 0), "no_such_tensor"),
        (pooled_linear("b", "/heads/box/box.1/Relu_output_0", 16, 2, 0), "inside head `box`"),
        (pooled_linear("cls", MID, 16, 2, 0), "already has a head"),
        (pooled_linear("c", MID, 32, 2, 0), "does not fit"),
    ];
    for (head, why) in cases {
        let e = model.add_head(&head).unwrap_err().to_string();
        assert!(e.contains(why), "{e} (expected: {why})");
    }
    let wrong = pooled_linear("x", MID, 8, 2, 0);
    assert!(model.swap_head("nope", &wrong).unwrap_err().to_string().contains("unknown head"));
    assert!(model.swap_head("cls", &wrong).is_err());
    assert_eq!(model.head_names(), ["cls", "box", "seg"]);
    assert_eq!(model.run(&[("image", &x)], &[]).unwrap(), before);
}

#[test]
fn heads_load_from_a_file_beside_the_onnx_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("heads.safetensors");
    let cls = model_head("cls").renamed("cls");
    let new_cls = Head::init(cls.spec().clone(), Init::KaimingNormal, 11).unwrap();
    let extra = pooled_linear("texture", MID, 16, 3, 5);
    HeadSet::new(vec![new_cls.clone(), extra.clone()]).save(&path).unwrap();
    let model =
        Model::load_parts(fixture("hydranet.onnx"), &path, LoadOptions::new().threads(1)).unwrap();
    assert_eq!(model.head_names(), ["cls", "box", "seg", "texture"]);
    let x = npy("hydranet_input_b1.npy");
    let out = model.run(&[("image", &x)], &["cls", "texture"]).unwrap();
    let feats = model.tensors(&[("image", &x)], &[cls.spec().input(), MID]).unwrap();
    assert_close(
        "file cls",
        out.get("cls").unwrap(),
        &infer(&new_cls, &feats.get(cls.spec().input()).unwrap()),
        1e-5,
    );
    assert_close(
        "file texture",
        out.get("texture").unwrap(),
        &infer(&extra, &feats.get(MID).unwrap()),
        1e-5,
    );
}

fn model_head(name: &str) -> Head {
    hydranet().trainable_head(name).unwrap()
}

/// Digits data: images, labels, and the label of "is the digit prime".
fn digits() -> (Tensor, Vec<i64>) {
    let images = npy("digits_images.npy");
    let labels = npy("digits_labels.npy").into_vec::<i64>().unwrap();
    (images, labels)
}

fn prime(y: i64) -> i64 {
    matches!(y, 2 | 3 | 5 | 7) as i64
}

fn prime_head(input: &str, width: usize) -> Head {
    let layers = vec![
        LayerSpec::Flatten,
        LayerSpec::Linear { in_features: width, out_features: 2, bias: true },
    ];
    Head::init(
        HeadSpec::new("prime", input, layers, TaskSpec::from_loss_name("ce", 2).ok()),
        Init::PyTorch,
        0,
    )
    .unwrap()
}

#[test]
fn a_new_head_learns_a_task_the_trunk_never_saw_from_model_inputs() {
    let model = Model::load(fixture("digits.onnx"), LoadOptions::new().threads(2)).unwrap();
    let (images, labels) = digits();
    let n = 600;
    let x = images.slice_rows(0, n).unwrap();
    let y = Tensor::new(&[n], labels[..n].iter().map(|&v| prime(v)).collect()).unwrap();
    let options = TrainOptions {
        epochs: 15,
        batch_size: 32,
        lr: 0.05,
        validation_fraction: 0.25,
        optimizer: OptimizerSpec::sgd(0.9, 1e-4),
        threads: 2,
        ..TrainOptions::default()
    };
    let mut trainer = Trainer::new(vec![prime_head(PENULTIMATE, 64)], options).unwrap();
    trainer.add_samples(&model, &[("image", &x)], &[("prime", Labels::new(y))], 128).unwrap();
    assert_eq!(trainer.samples(), n);
    let reports = trainer.fit(None, |_| ControlFlow::Continue(())).unwrap();
    let val = &reports.last().unwrap().validation[0];
    assert!(val.accuracy.unwrap() > 0.9, "validation accuracy {:?}", val.accuracy);
    assert!(reports.last().unwrap().train[0].loss < reports[0].train[0].loss);
    // Swapped into the model, the trained head gives the trainer's predictions.
    let head = trainer.heads().unwrap().remove(0);
    model.add_head(&head).unwrap();
    let out = model.run(&[("image", &x.slice_rows(0, 8).unwrap())], &["prime"]).unwrap();
    let f = model.tensors(&[("image", &x.slice_rows(0, 8).unwrap())], &[PENULTIMATE]).unwrap();
    assert_close(
        "trained prime head",
        out.get("prime").unwrap(),
        &infer(&head, &f.get(PENULTIMATE).unwrap()),
        1e-5,
    );
}

fn features_and_labels(n: usize) -> (Tensor, Tensor, Tensor) {
    let (images, labels) = digits();
    let x = images.slice_rows(0, n).unwrap().reshape(&[n, 64]).unwrap();
    let cls = Tensor::new(&[n], labels[..n].to_vec()).unwrap();
    let reg = Tensor::new(&[n, 1], labels[..n].iter().map(|&v| v as f32 / 9.0).collect()).unwrap();
    (x, cls, reg)
}

fn two_heads() -> Vec<Head> {
    let cls = Head::init(
        HeadSpec::new(
            "cls",
            "x",
            vec![LayerSpec::Linear { in_features: 64, out_features: 10, bias: true }],
            TaskSpec::from_loss_name("ce", 10).ok(),
        ),
        Init::PyTorch,
        1,
    )
    .unwrap();
    let reg = Head::init(
        HeadSpec::new(
            "reg",
            "x",
            vec![
                LayerSpec::Linear { in_features: 64, out_features: 16, bias: true },
                LayerSpec::Relu,
                LayerSpec::Linear { in_features: 16, out_features: 1, bias: true },
            ],
            TaskSpec::from_loss_name("mse", 1).ok(),
        ),
        Init::PyTorch,
        2,
    )
    .unwrap();
    vec![cls, reg]
}

/// Builds the labels of both heads from class and regression targets.
type LabelsOf = dyn Fn(&Tensor, &Tensor) -> Vec<(&'static str, Labels)>;

fn fit(options: TrainOptions, labels: &LabelsOf) -> (Trainer, Vec<hydrant::train::EpochReport>) {
    let (x, cls, reg) = features_and_labels(200);
    let mut trainer = Trainer::new(two_heads(), options).unwrap();
    trainer.add_features(&[("x", &x)], &labels(&cls, &reg)).unwrap();
    let reports = trainer.fit(None, |_| ControlFlow::Continue(())).unwrap();
    (trainer, reports)
}

fn both(cls: &Tensor, reg: &Tensor) -> Vec<(&'static str, Labels)> {
    vec![("cls", Labels::new(cls.clone())), ("reg", Labels::new(reg.clone()))]
}

#[test]
fn the_memory_mapped_cache_trains_exactly_like_ram() {
    let base = TrainOptions { epochs: 3, threads: 1, ..TrainOptions::default() };
    let (mut ram, _) = fit(base.clone(), &both);
    let (mut disk, _) = fit(TrainOptions { memory_budget: 1024, ..base }, &both);
    assert!(disk.cache_on_disk() && !ram.cache_on_disk());
    assert_eq!(ram.heads().unwrap(), disk.heads().unwrap());
}

#[test]
fn alternating_schedules_train_one_task_per_step() {
    for order in [Alternation::RoundRobin, Alternation::Proportional] {
        let options = TrainOptions {
            epochs: 1,
            batch_size: 50,
            weighting: Weighting::Alternating { order },
            ..TrainOptions::default()
        };
        // reg has labels on half of the samples: 4 cls batches + 2 reg batches.
        let half = |cls: &Tensor, reg: &Tensor| {
            let mask: Vec<bool> = (0..200).map(|i| i % 2 == 0).collect();
            vec![
                ("cls", Labels::new(cls.clone())),
                ("reg", Labels::masked(reg.clone(), mask).unwrap()),
            ]
        };
        let (_, reports) = fit(options, &half);
        let r = &reports[0];
        assert_eq!(r.steps, 6, "{order:?}");
        let trained = |k: usize| r.step_losses[k].iter().filter(|l| !l.is_nan()).count();
        assert_eq!((trained(0), trained(1)), (4, 2), "{order:?}");
        assert!(
            (0..6).all(|s| r.step_losses[0][s].is_nan() != r.step_losses[1][s].is_nan()),
            "one task per step"
        );
        assert_eq!(r.train[1].samples, 100);
    }
}

#[test]
fn gradnorm_keeps_the_weights_summing_to_the_task_count() {
    let options = TrainOptions {
        epochs: 3,
        weighting: Weighting::GradNorm { alpha: 1.5, lr: 0.05 },
        ..TrainOptions::default()
    };
    let (_, reports) = fit(options, &both);
    for r in &reports {
        assert!((r.weights.iter().sum::<f32>() - 2.0).abs() < 1e-4, "{:?}", r.weights);
    }
    assert!(reports.last().unwrap().weights != vec![1.0, 1.0], "weights moved");
}

#[test]
fn early_stopping_stops_and_restores_the_best_epoch() {
    let options = TrainOptions {
        epochs: 40,
        lr: 0.5,
        optimizer: OptimizerSpec::sgd(0.9, 0.0),
        validation_fraction: 0.3,
        early_stopping: Some(EarlyStopping { patience: 2, min_delta: 0.0, restore_best: true }),
        ..TrainOptions::default()
    };
    let (mut trainer, reports) = fit(options, &both);
    assert!(reports.len() < 40, "stopped early after {} epochs", reports.len());
    let val = |r: &hydrant::train::EpochReport| r.validation.iter().map(|m| m.loss).sum::<f64>();
    let best = reports.iter().map(val).fold(f64::INFINITY, f64::min);
    let now: f64 = trainer.evaluate().unwrap().iter().map(|m| m.loss).sum();
    assert!((now - best).abs() < 1e-6 * best.max(1.0), "restored {now} vs best {best}");
}

#[test]
fn labels_of_the_wrong_kind_or_shape_are_clear_errors() {
    let (x, cls, reg) = features_and_labels(10);
    let mut t = Trainer::new(two_heads(), TrainOptions::default()).unwrap();
    let e =
        t.add_features(&[("x", &x)], &[("cls", Labels::new(reg.clone()))]).unwrap_err().to_string();
    assert!(e.contains("cls"), "{e}");
    let e = t
        .add_features(&[("x", &x)], &[("nope", Labels::new(cls.clone()))])
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown head `nope`"), "{e}");
    let e = t.add_features(&[("y", &x)], &[]).unwrap_err().to_string();
    assert!(e.contains("`x`"), "{e}");
    let short = reg.slice_rows(0, 5).unwrap();
    assert!(t.add_features(&[("x", &x)], &[("reg", Labels::new(short))]).is_err());
    assert!(t
        .fit(Some(1), |_| ControlFlow::Continue(()))
        .unwrap_err()
        .to_string()
        .contains("no samples"));
}

fn without_times(mut r: Vec<hydrant::train::EpochReport>) -> Vec<hydrant::train::EpochReport> {
    r.iter_mut().for_each(|e| e.seconds = 0.0);
    r
}

#[test]
fn a_run_resumed_from_a_checkpoint_equals_an_uninterrupted_one() {
    let (x, cls, reg) = features_and_labels(200);
    let mut heads = two_heads();
    // Dropout makes the random stream matter.
    let spec = heads[1].spec().clone();
    let mut layers = spec.layers.clone();
    layers.insert(2, LayerSpec::Dropout { p: 0.2 });
    heads[1] = Head::init(HeadSpec { layers, ..spec }, Init::PyTorch, 9).unwrap();
    let options = TrainOptions {
        epochs: 6,
        batch_size: 24,
        lr: 0.02,
        optimizer: OptimizerSpec::adamw(0.01),
        schedule: hydrant::train::Schedule::Cosine { min_lr: 0.001 },
        warmup_steps: 5,
        weighting: Weighting::Uncertainty,
        validation_fraction: 0.2,
        early_stopping: Some(EarlyStopping { patience: 100, min_delta: 0.0, restore_best: false }),
        threads: 2,
        ..TrainOptions::default()
    };
    let labels = both(&cls, &reg);
    let mut straight = Trainer::new(heads.clone(), options.clone()).unwrap();
    straight.add_features(&[("x", &x)], &labels).unwrap();
    straight.fit(None, |_| ControlFlow::Continue(())).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt.safetensors");
    let mut first = Trainer::new(heads, options.clone()).unwrap();
    first.add_features(&[("x", &x)], &labels).unwrap();
    first.fit(Some(3), |_| ControlFlow::Continue(())).unwrap();
    first.save_checkpoint(&path).unwrap();
    drop(first);
    let mut resumed = Trainer::resume(&path, options.clone()).unwrap();
    let short = x.slice_rows(0, 100).unwrap();
    let mut wrong = Trainer::resume(&path, options).unwrap();
    wrong.add_features(&[("x", &short)], &[]).unwrap();
    assert!(wrong
        .fit(Some(1), |_| ControlFlow::Continue(()))
        .unwrap_err()
        .to_string()
        .contains("200 samples"));
    resumed.add_features(&[("x", &x)], &labels).unwrap();
    resumed.fit(Some(3), |_| ControlFlow::Continue(())).unwrap();
    assert_eq!(resumed.heads().unwrap(), straight.heads().unwrap(), "weights after 6 epochs");
    assert_eq!(
        without_times(resumed.history().to_vec()),
        without_times(straight.history().to_vec())
    );
}

#[test]
fn heads_written_back_into_onnx_compute_what_the_model_computes() {
    let model = hydranet();
    let box_head = model.trainable_head("box").unwrap();
    let gelu_box = {
        let mut spec = box_head.spec().clone();
        spec.layers[1] = LayerSpec::Gelu;
        Head::new(spec, box_head.tensors().to_vec()).unwrap()
    };
    model.swap_head("box", &gelu_box).unwrap();
    model.add_head(&pooled_linear("texture", MID, 16, 4, 8)).unwrap();
    let x = npy("hydranet_input_b3.npy");
    let now = model.run(&[("image", &x)], &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("written.onnx");
    model.save_onnx(&path).unwrap();
    let back = Model::load(&path, LoadOptions::new().threads(2)).unwrap();
    assert_eq!(back.head_names(), ["cls", "box", "seg", "texture"]);
    let out = back.run(&[("image", &x)], &[]).unwrap();
    for h in ["cls", "box", "seg", "texture"] {
        assert_close(&format!("written {h}"), out.get(h).unwrap(), now.get(h).unwrap(), 1e-5);
    }
    // The written heads import again as the same trainable heads.
    assert_eq!(back.trainable_head("box").unwrap().spec().layers, gelu_box.spec().layers);
    assert_eq!(
        back.trainable_head("texture").unwrap().tensors(),
        model.trainable_head("texture").unwrap().tensors()
    );
}

#[test]
fn a_whole_model_loads_from_one_safetensors_file() {
    let path = fixture("train/whole.safetensors");
    let model = Model::load_safetensors(&path, LoadOptions::new().threads(1)).unwrap();
    assert_eq!(model.head_names(), ["cls", "seg"]);
    let split = model.split();
    assert_eq!(split.cut_points, ["stem", "features"]);
    let x = npy("train/whole_input.npy");
    let out = model.run(&[("image", &x)], &[]).unwrap();
    assert_close("cls vs PyTorch", out.get("cls").unwrap(), &npy("train/whole_cls.npy"), 1e-4);
    assert_close("seg vs PyTorch", out.get("seg").unwrap(), &npy("train/whole_seg.npy"), 1e-4);
    // The heads import back as the file's heads, and the file round-trips.
    let set = HeadSet::load(&path).unwrap();
    for h in &set.heads {
        let imported = model.trainable_head(h.name()).unwrap();
        assert_eq!(imported.spec().layers, h.spec().layers, "{}", h.name());
        assert_eq!(imported.tensors(), h.tensors(), "{}", h.name());
    }
    assert_eq!(HeadSet::from_bytes(&set.to_bytes().unwrap()).unwrap(), set);
    // A head reading a tensor the trunk does not have is refused, naming what it has.
    let mut bad = set.clone();
    bad.heads.push(pooled_linear("lost", "trunk.9", 16, 2, 0));
    let e = Model::from_head_set(&bad, LoadOptions::new()).unwrap_err().to_string();
    assert!(e.contains("`trunk.9`") && e.contains("features"), "{e}");
    // Without a trunk, the file needs an ONNX model beside it.
    let heads_only = HeadSet::load(fixture("train/parity_mlp_init.safetensors")).unwrap();
    assert!(Model::from_head_set(&heads_only, LoadOptions::new())
        .unwrap_err()
        .to_string()
        .contains("no trunk"));
}
