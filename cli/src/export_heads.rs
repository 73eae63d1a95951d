//! `hydrant export-heads`: every trainable head of a model, as a head file.

use crate::ModelArgs;
use hydrant::{Error, HeadSet, Result};
use std::path::PathBuf;

/// Arguments of `hydrant export-heads`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Where the heads go (written atomically).
    #[arg(long)]
    out: PathBuf,
}

pub fn main(args: Args) -> Result<()> {
    let model = args.model.load()?;
    let mut heads = Vec::new();
    for (name, result) in model.trainability() {
        match result {
            Ok(head) => {
                let output = head.spec().output().to_string();
                println!(
                    "{output}: {} layer(s), {} parameters, reads {}",
                    head.spec().layers.len(),
                    head.param_count(),
                    head.spec().input()
                );
                heads.push(head.renamed(&output));
            }
            Err(why) => eprintln!("not trainable: head `{name}`: {why}"),
        }
    }
    if heads.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{}: no head of this model is trainable",
            args.model.model.display()
        )));
    }
    let n = heads.len();
    HeadSet::new(heads).save(&args.out)?;
    println!("{n} head(s) -> {}", args.out.display());
    Ok(())
}
