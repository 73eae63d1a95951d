//! `hydrant finetune`: the whole job from model inputs and labels in a folder. Trunk features
//! are computed once per sample and cached; several heads train at once under a weighting.

use crate::training::{read_npy_flag, TaskFlags, TrainFlags};
use crate::ModelArgs;
use hydrant::train::{Alternation, DeviceTrainer, TrainJob, Weighting};
use hydrant::{Error, Head, Labels, Model, Result, TaskSpec, Tensor};
use std::path::{Path, PathBuf};

/// Arguments of `hydrant finetune`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Folder with the inputs (`input.npy` for a one-input model, else `<input name>.npy` each)
    /// and per head its labels `<head>.npy` (optional `<head>.mask.npy`: which samples have one).
    #[arg(long)]
    data: PathBuf,
    /// Heads to train (comma-separated; default: every head with a label file in --data).
    #[arg(long, value_delimiter = ',')]
    heads: Vec<String>,
    /// How the heads' losses combine: static, uncertainty, dwa or gradnorm.
    #[arg(long, default_value = "static")]
    weighting: String,
    /// Static weights, one per head in --heads order (default: all 1).
    #[arg(long, value_delimiter = ',')]
    weights: Vec<f32>,
    /// One head per step instead: round-robin or proportional (to each head's labelled data).
    #[arg(long)]
    alternate: Option<String>,
    #[command(flatten)]
    task: TaskFlags,
    #[command(flatten)]
    train: TrainFlags,
    /// Samples per trunk pass while computing features.
    #[arg(long, default_value_t = 64)]
    chunk: usize,
    /// Where the trained heads go (written atomically).
    #[arg(long)]
    out: PathBuf,
    /// Swap the trained heads into the model and report its outputs' accuracy (or MAE) on the
    /// labelled samples before and after.
    #[arg(long)]
    swap_check: bool,
}

pub fn main(args: Args) -> Result<()> {
    let mut options = args.train.options(args.model.threads)?;
    options.weighting = weighting(&args)?;
    let model = args.model.load()?;
    let inputs = read_inputs(&model, &args.data)?;
    let names = head_names(&model, &args)?;
    let bound: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let first: Vec<(String, Tensor)> =
        inputs.iter().map(|(n, t)| Ok((n.clone(), t.slice_rows(0, 1)?))).collect::<Result<_>>()?;
    let first: Vec<(&str, &Tensor)> = first.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut heads = Vec::new();
    let mut labels = Vec::new();
    for name in &names {
        let head = model.trainable_head(name)?;
        let values = read_npy_flag("--data", &args.data.join(format!("{name}.npy")))?;
        let mask_file = args.data.join(format!("{name}.mask.npy"));
        let l = if mask_file.exists() {
            Labels::masked(values, crate::train_head::mask(&hydrant::read_npy(&mask_file)?)?)?
        } else {
            Labels::new(values)
        };
        let feature = model.tensors(&first, &[head.spec().input()])?.get(head.spec().input())?;
        let channels = crate::training::output_row(&head, &feature.shape()[1..])?
            .first()
            .copied()
            .unwrap_or(1);
        let task = args.task.task(name, head.spec().task.as_ref(), channels, l.values().dtype())?;
        heads.push(crate::training::with_task(&head, task)?);
        labels.push(l);
    }
    let before =
        if args.swap_check { Some(scores(&model, &bound, &heads, &labels)?) } else { None };
    let job = TrainJob {
        options: &options,
        heads: heads.len(),
        optimizer_state: args.train.with_optimizer,
    };
    let choice = crate::device::trainer(args.model.device.as_deref(), &job)?;
    println!("training {} head(s) on {} ({})", heads.len(), choice.kind, choice.reason);
    let epochs = options.epochs;
    let mut trainer = DeviceTrainer::new(&choice, heads, options)?;
    let start = std::time::Instant::now();
    let named: Vec<(&str, Labels)> =
        names.iter().map(String::as_str).zip(labels.iter().cloned()).collect();
    add_samples(&mut trainer, &model, &bound, &named, args.chunk, args.train.quiet)?;
    println!(
        "features of {} samples ({}) computed once in {:.2} s, cached in {}",
        trainer.samples(),
        trainer.inputs().join(", "),
        start.elapsed().as_secs_f64(),
        trainer.cache_place()
    );
    crate::training::fit(&mut trainer, epochs, args.train.quiet, args.train.plot.as_deref())?;
    let set = trainer.head_set(args.train.with_optimizer)?;
    set.save(&args.out)?;
    println!("{} head(s) trained on {} -> {}", set.heads.len(), trainer.kind(), args.out.display());
    if let Some(before) = before {
        model.set_heads(&set)?;
        let after = scores(&model, &bound, &set.heads, &labels)?;
        println!("swap-check: the model's own outputs on the labelled samples");
        for ((h, b), a) in set.heads.iter().zip(&before).zip(&after) {
            println!(
                "  {:<12} {} {:.4} -> {:.4} (trained heads swapped in)",
                h.name(),
                a.0,
                b.1,
                a.1
            );
        }
    }
    Ok(())
}

/// [`DeviceTrainer::add_samples`] in chunks of `chunk` samples, with a progress bar.
fn add_samples(
    trainer: &mut DeviceTrainer,
    model: &Model,
    inputs: &[(&str, &Tensor)],
    labels: &[(&str, Labels)],
    chunk: usize,
    quiet: bool,
) -> Result<()> {
    let n = inputs.first().map_or(0, |(_, t)| t.shape().first().copied().unwrap_or(0));
    for (h, l) in labels {
        if l.rows() != n {
            return Err(Error::BadTensor(format!(
                "labels of head `{h}` have {} rows for {n} input samples",
                l.rows()
            )));
        }
    }
    let chunk = chunk.max(1);
    let bar = crate::training::progress_bar(n, quiet, "{bar:30} features {pos}/{len} [{elapsed}]")?;
    for start in (0..n).step_by(chunk) {
        let end = (start + chunk).min(n);
        let part: Vec<(&str, Tensor)> = inputs
            .iter()
            .map(|(k, t)| Ok((*k, t.slice_rows(start, end)?)))
            .collect::<Result<_>>()?;
        let part: Vec<(&str, &Tensor)> = part.iter().map(|(k, t)| (*k, t)).collect();
        let mut part_labels = Vec::with_capacity(labels.len());
        for (h, l) in labels {
            let values = l.values().slice_rows(start, end)?;
            let l = match l.mask() {
                Some(m) => Labels::masked(values, m[start..end].to_vec())?,
                None => Labels::new(values),
            };
            part_labels.push((*h, l));
        }
        trainer.add_samples(model, &part, &part_labels, chunk)?;
        bar.set_position(end as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

fn weighting(args: &Args) -> Result<Weighting> {
    if let Some(order) = &args.alternate {
        let order = match order.as_str() {
            "round-robin" | "round_robin" => Alternation::RoundRobin,
            "proportional" => Alternation::Proportional,
            o => {
                return Err(Error::InvalidArgument(format!(
                    "--alternate {o}: expected round-robin or proportional"
                )))
            }
        };
        return Ok(Weighting::Alternating { order });
    }
    if !args.weights.is_empty() && args.weighting != "static" {
        return Err(Error::InvalidArgument("--weights goes with --weighting static".into()));
    }
    Ok(match args.weighting.as_str() {
        "static" => Weighting::Static { weights: args.weights.clone() },
        "uncertainty" => Weighting::Uncertainty,
        "dwa" => Weighting::Dwa { temperature: 2.0 },
        "gradnorm" => Weighting::GradNorm { alpha: 1.5, lr: 0.025 },
        w => {
            return Err(Error::InvalidArgument(format!(
                "--weighting {w}: expected static, uncertainty, dwa or gradnorm"
            )))
        }
    })
}

/// The model's inputs from `dir`: `<input>.npy` each, or `input.npy` for a one-input model.
fn read_inputs(model: &Model, dir: &Path) -> Result<Vec<(String, Tensor)>> {
    if !dir.is_dir() {
        return Err(Error::InvalidArgument(format!("--data {}: not a folder", dir.display())));
    }
    let specs = model.inputs();
    let mut out = Vec::new();
    for spec in specs {
        let named = dir.join(format!("{}.npy", crate::run::file_name(&spec.name)));
        let file = if !named.exists() && specs.len() == 1 { dir.join("input.npy") } else { named };
        if !file.exists() {
            return Err(Error::InvalidArgument(format!(
                "--data {}: no {} for model input `{}`",
                dir.display(),
                file.file_name().map_or(String::new(), |f| f.to_string_lossy().into_owned()),
                spec.name
            )));
        }
        out.push((spec.name.clone(), hydrant::read_npy(&file)?));
    }
    Ok(out)
}

/// The heads to train: those asked for, else every head with a label file.
fn head_names(model: &Model, args: &Args) -> Result<Vec<String>> {
    let all = model.head_names();
    if !args.heads.is_empty() {
        for h in &args.heads {
            if !all.contains(h) {
                return Err(Error::UnknownHead { name: h.clone(), available: all.join(", ") });
            }
        }
        return Ok(args.heads.clone());
    }
    let found: Vec<String> = all
        .into_iter()
        .filter(|h| args.data.join(format!("{}.npy", crate::run::file_name(h))).exists())
        .collect();
    if found.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "--data {}: no `<head>.npy` label file for any head (heads: {})",
            args.data.display(),
            model.head_names().join(", ")
        )));
    }
    Ok(found)
}

/// Per head, the name of its score and the score of the model's current output against the
/// labels: accuracy for cross-entropy (per position, ignored labels left out), else MAE.
fn scores(
    model: &Model,
    inputs: &[(&str, &Tensor)],
    heads: &[Head],
    labels: &[Labels],
) -> Result<Vec<(&'static str, f64)>> {
    let names: Vec<&str> = heads.iter().map(Head::name).collect();
    let outputs = model.run(inputs, &names)?;
    let mut out = Vec::new();
    for (head, l) in heads.iter().zip(labels) {
        let y = outputs
            .get(head.spec().output())
            .ok_or_else(|| Error::MissingFeature(head.spec().output().to_string()))?
            .to_f32();
        let y = y.as_slice::<f32>().unwrap_or_default();
        let n = l.rows().max(1);
        let has = |i: usize| l.mask().is_none_or(|m| m[i]);
        match head.spec().task.as_ref() {
            Some(TaskSpec::CrossEntropy { classes, ignore_index, .. }) => {
                let classes = (*classes).max(1);
                let target = l.values().as_slice::<i64>().unwrap_or_default();
                let inner = target.len() / n;
                let (mut right, mut total) = (0usize, 0usize);
                for i in (0..n).filter(|&i| has(i)) {
                    for p in 0..inner {
                        let t = target[i * inner + p];
                        if t == *ignore_index {
                            continue;
                        }
                        let at = |c: usize| y.get((i * classes + c) * inner + p).copied();
                        let best = (0..classes).max_by(|&a, &b| {
                            at(a).partial_cmp(&at(b)).unwrap_or(std::cmp::Ordering::Equal)
                        });
                        right += usize::from(best == Some(t as usize));
                        total += 1;
                    }
                }
                out.push(("accuracy", right as f64 / total.max(1) as f64));
            }
            _ => {
                let target = l.values().to_f32();
                let target = target.as_slice::<f32>().unwrap_or_default();
                let inner = target.len() / n;
                let (mut sum, mut count) = (0f64, 0usize);
                for i in (0..n).filter(|&i| has(i)) {
                    let rows = y.iter().zip(target).skip(i * inner).take(inner);
                    sum += rows.map(|(a, b)| (a - b).abs() as f64).sum::<f64>();
                    count += inner;
                }
                out.push(("mae", sum / count.max(1) as f64));
            }
        }
    }
    Ok(out)
}
