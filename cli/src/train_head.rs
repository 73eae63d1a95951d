//! `hydrant train-head`: one head trained on stored features, written as a head file.

use crate::training::{read_npy_flag, TaskFlags, TrainFlags};
use hydrant::train::{DeviceTrainer, TrainJob};
use hydrant::{Error, HeadSet, Labels, Result};
use std::path::PathBuf;

/// Arguments of `hydrant train-head`.
#[derive(clap::Args)]
pub struct Args {
    /// The head file holding the head to train (see --new for a fresh head).
    #[arg(long, required_unless_present = "new", conflicts_with = "new")]
    head: Option<PathBuf>,
    /// A new head from a layer list instead, e.g. `linear:128,relu,linear:10`.
    #[arg(long, help = format!("A new head from a layer list instead: {}", crate::layers::HELP))]
    new: Option<String>,
    /// The head's name (default: the file's only head; required with --new).
    #[arg(long)]
    name: Option<String>,
    /// With --new: the trunk tensor the head reads when attached to a model.
    #[arg(long, default_value = "features")]
    reads: String,
    /// With --new: weight initialisation (pytorch, kaiming, kaiming_uniform, xavier).
    #[arg(long, default_value = "kaiming")]
    init: String,
    /// Features, float32 `[n, …]` (the tensor the head reads, one row per sample).
    #[arg(long)]
    features: PathBuf,
    /// Labels: int64 class ids `[n]` (or `[n, H, W]`), or float32 targets `[n, …]`.
    #[arg(long)]
    labels: PathBuf,
    /// Which samples have a label: bool, uint8 or int64 `[n]`, non-zero for labelled.
    #[arg(long)]
    mask: Option<PathBuf>,
    #[command(flatten)]
    task: TaskFlags,
    #[command(flatten)]
    train: TrainFlags,
    /// Training threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Where to train: auto, cpu, cuda or cuda:N (default: $HYDRANT_DEVICE, else auto).
    #[arg(long)]
    device: Option<String>,
    /// Where the trained head goes (written atomically).
    #[arg(long)]
    out: PathBuf,
}

pub fn main(args: Args) -> Result<()> {
    let options = args.train.options(args.threads)?;
    let job = TrainJob { options: &options, heads: 1, optimizer_state: args.train.with_optimizer };
    let choice = crate::device::trainer(args.device.as_deref(), &job)?;
    let features = read_npy_flag("--features", &args.features)?.to_f32();
    let labels = read_npy_flag("--labels", &args.labels)?;
    let row = features
        .shape()
        .get(1..)
        .filter(|_| features.rank() >= 2)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "--features {}: shape {:?}, expected [samples, …]",
                args.features.display(),
                features.shape()
            ))
        })?
        .to_vec();
    let head = match (&args.head, &args.new) {
        (Some(file), _) => pick(HeadSet::load(file)?, args.name.as_deref(), file)?,
        (None, Some(list)) => {
            let name = args.name.as_deref().ok_or_else(|| {
                Error::InvalidArgument("--new needs --name for the new head".into())
            })?;
            let init = crate::layers::init(&args.init)?;
            crate::layers::new_head(name, &args.reads, &row, list, init, args.train.seed)?
        }
        (None, None) => {
            return Err(Error::InvalidArgument("give --head FILE or --new LAYERS".into()))
        }
    };
    let out_row = crate::training::output_row(&head, &row).map_err(|e| {
        Error::InvalidArgument(format!(
            "head `{}` does not fit features of per-sample shape {row:?}: {e}",
            head.name()
        ))
    })?;
    let channels = out_row.first().copied().unwrap_or(1);
    let task = args.task.task(head.name(), head.spec().task.as_ref(), channels, labels.dtype())?;
    let head = crate::training::with_task(&head, task)?;
    let labels = match &args.mask {
        Some(m) => Labels::masked(labels, mask(&read_npy_flag("--mask", m)?)?)?,
        None => Labels::new(labels),
    };
    let name = head.name().to_string();
    let input = head.spec().input().to_string();
    println!(
        "training head `{name}` ({} parameters) on {} samples of {row:?} for {} epochs on {} ({})",
        head.param_count(),
        features.shape()[0],
        options.epochs,
        choice.kind,
        choice.reason
    );
    let epochs = options.epochs;
    let mut trainer = DeviceTrainer::new(&choice, vec![head], options)?;
    trainer.add_features(&[(&input, &features)], &[(&name, labels)])?;
    crate::training::fit(&mut trainer, epochs, args.train.quiet, args.train.plot.as_deref())?;
    trainer.head_set(args.train.with_optimizer)?.save(&args.out)?;
    println!("head `{name}` trained on {} -> {}", trainer.kind(), args.out.display());
    Ok(())
}

/// The head called `name` in `set` (or its only head).
fn pick(set: HeadSet, name: Option<&str>, file: &std::path::Path) -> Result<hydrant::Head> {
    let names: Vec<&str> = set.heads.iter().map(|h| h.name()).collect();
    let available = names.join(", ");
    match name {
        Some(n) => {
            set.get(n).cloned().ok_or_else(|| Error::UnknownHead { name: n.to_string(), available })
        }
        None if set.heads.len() == 1 => Ok(set.heads[0].clone()),
        None => Err(Error::InvalidArgument(format!(
            "{} holds {} heads ({available}): choose one with --name",
            file.display(),
            set.heads.len()
        ))),
    }
}

/// A label mask from a bool, uint8 or int64 tensor (non-zero: labelled).
pub fn mask(t: &hydrant::Tensor) -> Result<Vec<bool>> {
    use hydrant::TensorData;
    Ok(match t.data() {
        TensorData::Bool(v) => v.clone(),
        TensorData::U8(v) => v.iter().map(|&x| x != 0).collect(),
        TensorData::I64(v) => v.iter().map(|&x| x != 0).collect(),
        TensorData::I32(v) => v.iter().map(|&x| x != 0).collect(),
        _ => {
            return Err(Error::InvalidArgument(format!(
                "label mask: expected bool, uint8 or int64 values, got {}",
                t.dtype()
            )))
        }
    })
}
