//! `hydrant demo`: the built-in demo on scikit-learn's handwritten digits.
//!
//! The model (trained by scripts/make_fixtures.py: one trunk, heads `digit`, `parity`, `ge5`) and
//! the 1797 real 8×8 digit images are compiled into the binary, so the demo runs anywhere.
//!
//! After the three trained tasks, a new head learns a task the trunk never saw ("is the digit
//! prime") from a couple of hundred labelled images, once on the trunk's features and once, with
//! the same architecture and budget, on raw pixels; both are added to the running model.

use crate::bench::median_ms;
use hydrant::train::{Head, OptimizerSpec};
use hydrant::{Error, Labels, LoadOptions, Model, Tensor, TrainOptions, Trainer};
use serde_json::Value;
use std::ops::ControlFlow;

const MODEL: &[u8] = include_bytes!("../../tests/fixtures/digits.onnx");
const IMAGES: &[u8] = include_bytes!("../../tests/fixtures/digits_images.npy");
const LABELS: &[u8] = include_bytes!("../../tests/fixtures/digits_labels.npy");
const META: &str = include_str!("../../tests/fixtures/digits_meta.json");

/// Arguments of `hydrant demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Intra-op threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

/// The label of `task` for digit `y` (the rules the model was trained with, and `prime`, a task
/// it never saw).
fn label(task: &str, y: i64) -> i64 {
    match task {
        "parity" => y % 2,
        "ge5" => (y >= 5) as i64,
        t if t.starts_with("prime") => matches!(y, 2 | 3 | 5 | 7) as i64,
        _ => y,
    }
}

/// Labelled samples the new head learns from.
const NEW_TASK_SAMPLES: usize = 200;
/// The new head's layers (the same for trunk features and for raw pixels).
const NEW_HEAD: &str = "flatten,linear:32,relu,linear:2";
/// Training budget of the new head.
const NEW_HEAD_EPOCHS: usize = 30;

/// Accuracy of the class scores `logits` `[n, classes]` against `task`'s labels of `digits`.
fn accuracy(task: &str, logits: &Tensor, digits: &[i64]) -> hydrant::Result<f64> {
    let classes = logits.shape().get(1).copied().unwrap_or(1);
    let scores = logits.as_slice::<f32>().ok_or_else(|| Error::BadTensor("f32 logits".into()))?;
    let correct = scores
        .chunks(classes)
        .zip(digits)
        .filter(|(row, &y)| argmax(row) == label(task, y))
        .count();
    Ok(correct as f64 / digits.len().max(1) as f64)
}

/// Trains a new `prime` head called `name` that reads `tensor` (a trunk tensor or the model
/// input) on the first [`NEW_TASK_SAMPLES`] training images; returns it, its training time and
/// the number of values it reads per image.
fn new_task_head(
    model: &Model,
    name: &str,
    tensor: &str,
    images: &Tensor,
    digits: &[i64],
) -> hydrant::Result<(Head, f64, usize)> {
    let row = model.tensors(&[("image", &images.slice_rows(0, 1)?)], &[tensor])?.get(tensor)?;
    let init = crate::layers::init("kaiming")?;
    let head = crate::layers::new_head(name, tensor, &row.shape()[1..], NEW_HEAD, init, 7)?;
    let head = crate::training::with_task(&head, hydrant::TaskSpec::from_loss_name("ce", 2)?)?;
    let options = TrainOptions {
        epochs: NEW_HEAD_EPOCHS,
        batch_size: 32,
        lr: 0.005,
        optimizer: OptimizerSpec::adamw(0.01),
        seed: 7,
        threads: 1,
        ..TrainOptions::default()
    };
    let start = std::time::Instant::now();
    let mut trainer = Trainer::new(vec![head], options)?;
    let train = images.slice_rows(0, NEW_TASK_SAMPLES)?;
    let labels: Vec<i64> = digits[..NEW_TASK_SAMPLES].iter().map(|&y| label("prime", y)).collect();
    let labels = Labels::new(Tensor::new(&[labels.len()], labels)?);
    trainer.add_samples(model, &[("image", &train)], &[(name, labels)], 100)?;
    trainer.fit(None, |_| ControlFlow::Continue(()))?;
    let head = trainer.heads()?.remove(0);
    Ok((head, start.elapsed().as_secs_f64(), row.len()))
}

fn fmt_row(v: &[i64]) -> String {
    v.iter().map(|x| format!("{x:>3}")).collect::<Vec<_>>().join("")
}

fn argmax(row: &[f32]) -> i64 {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
        .0 as i64
}

pub fn main(args: Args) -> hydrant::Result<()> {
    let mut options = LoadOptions::new();
    if let Some(n) = args.threads {
        options = options.threads(n);
    }
    let model = Model::from_bytes(MODEL, options)?;
    let images = hydrant::npy::read_npy_bytes(IMAGES)?;
    let labels = hydrant::npy::read_npy_bytes(LABELS)?.into_vec::<i64>()?;
    let meta: Value = serde_json::from_str(META)
        .map_err(|e| Error::InvalidArgument(format!("demo metadata: {e}")))?;
    let n_train = meta["train"].as_u64().unwrap_or(0) as usize;
    let n = labels.len();

    println!("hydrant demo: one multi-task network on scikit-learn's handwritten digits");
    println!("({n} real 8x8 images; the last {} were never seen in training)\n", n - n_train);
    println!("How hydrant split the graph by itself:");
    print!("{}", crate::inspect::text(&crate::inspect::report(&model)));

    let test = images.slice_rows(n_train, n)?;
    let inputs = [("image", &test)];
    let features = model.trunk(&inputs)?;
    let outputs = model.heads(&features, &[])?;
    println!("\nHeld-out accuracy, one trunk pass feeding all three heads:");
    println!("  {:<8} {:>9} {:>22}", "task", "hydrant", "onnxruntime (export)");
    for (task, logits) in outputs.iter() {
        let classes = logits.shape()[1];
        let scores =
            logits.as_slice::<f32>().ok_or_else(|| Error::BadTensor("f32 logits".into()))?;
        let correct = scores
            .chunks(classes)
            .zip(&labels[n_train..])
            .filter(|(row, &y)| argmax(row) == label(task, y))
            .count();
        let reference = meta["tasks"][task]["test_accuracy"].as_f64().unwrap_or(f64::NAN);
        println!(
            "  {:<8} {:>9.3} {:>22.3}",
            task,
            correct as f64 / test.shape()[0] as f64,
            reference
        );
    }

    let cut = model
        .split()
        .cut_points
        .first()
        .cloned()
        .ok_or_else(|| Error::InvalidModel("the demo model has no trunk cut point".into()))?;
    println!(
        "\nA new task the trunk never saw: is the digit prime (2, 3, 5, 7)? {NEW_TASK_SAMPLES} labelled"
    );
    println!("images, one new head `{NEW_HEAD}`, {NEW_HEAD_EPOCHS} epochs of AdamW, trunk frozen:");
    let (on_trunk, t_trunk, trunk_values) = new_task_head(&model, "prime", &cut, &images, &labels)?;
    let (on_pixels, t_pixels, pixel_values) =
        new_task_head(&model, "prime_from_pixels", "image", &images, &labels)?;
    let head_names = model.head_names();
    model.add_head(&on_trunk)?;
    model.add_head(&on_pixels)?;
    let outputs = model.run(&inputs, &["prime", "prime_from_pixels"])?;
    let held_out = &labels[n_train..];
    let acc = |name: &str| -> hydrant::Result<f64> {
        let logits = outputs.get(name).ok_or_else(|| Error::MissingFeature(name.into()))?;
        accuracy(name, logits, held_out)
    };
    println!("  {:<28} {:>18} {:>10}", "the new head reads", "held-out accuracy", "training");
    let line = |what: String, accuracy: f64, seconds: f64| {
        println!("  {what:<28} {accuracy:>18.3} {seconds:>8.2} s")
    };
    line(format!("trunk features ({trunk_values} values)"), acc("prime")?, t_trunk);
    line(format!("raw pixels ({pixel_values} values)"), acc("prime_from_pixels")?, t_pixels);
    println!("  (trunk features: the cut point `{cut}`)");
    println!("\nThe new head added to the running model (trunk once, all five heads):");
    let sample = images.slice_rows(n_train, n_train + 8)?;
    let all = model.run(&[("image", &sample)], &[])?;
    let digit = all.get("digit").ok_or_else(|| Error::MissingFeature("digit".into()))?;
    let prime = all.get("prime").ok_or_else(|| Error::MissingFeature("prime".into()))?;
    let row = |t: &Tensor| -> Vec<i64> {
        let c = t.shape().get(1).copied().unwrap_or(1);
        t.as_slice::<f32>().unwrap_or_default().chunks(c).map(argmax).collect()
    };
    let (digits, primes) = (row(digit), row(prime));
    println!("  {:<12} {}", "true digit", fmt_row(&labels[n_train..n_train + 8]));
    println!("  {:<12} {}", "head digit", fmt_row(&digits));
    println!("  {:<12} {}", "head prime", fmt_row(&primes));

    let one = images.slice_rows(n - 1, n)?;
    let single = [("image", &one)];
    let heads: Vec<&str> = head_names.iter().map(String::as_str).collect();
    let trunk_once = median_ms(50, || model.run(&single, &heads).map(drop))?;
    let separate =
        median_ms(50, || heads.iter().try_for_each(|h| model.run(&single, &[h]).map(drop)))?;
    let feats = model.trunk(&single)?;
    let heads_only = median_ms(50, || model.heads(&feats, &["digit"]).map(drop))?;
    println!("\nLatency for one image (medians of 50 runs):");
    println!("  trunk once + 3 heads           {trunk_once:8.3} ms");
    println!(
        "  3 separate single-task models  {separate:8.3} ms  ({:.2}x the shared trunk)",
        separate / trunk_once
    );
    println!("  one head on stored features    {heads_only:8.3} ms");
    Ok(())
}
