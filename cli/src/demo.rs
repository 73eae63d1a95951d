//! `hydrant demo`: the built-in demo on scikit-learn's handwritten digits.
//!
//! The model (trained by scripts/make_fixtures.py: one trunk, heads `digit`, `parity`, `ge5`) and
//! the 1797 real 8×8 digit images are compiled into the binary, so the demo runs anywhere.

use crate::bench::median_ms;
use hydrant::{Error, LoadOptions, Model};
use serde_json::Value;

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

/// The label of `task` for digit `y` (the rules the model was trained with).
fn label(task: &str, y: i64) -> i64 {
    match task {
        "parity" => y % 2,
        "ge5" => (y >= 5) as i64,
        _ => y,
    }
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

    let one = images.slice_rows(n - 1, n)?;
    let single = [("image", &one)];
    let head_names = model.head_names();
    let heads: Vec<&str> = head_names.iter().map(String::as_str).collect();
    let trunk_once = median_ms(50, || model.run(&single, &[]).map(drop))?;
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
