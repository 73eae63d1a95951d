//! `hydrant run`: inputs from .npy files, outputs to .npy files.

use crate::ModelArgs;
use hydrant::{Error, Tensor};
use std::path::PathBuf;

/// Arguments of `hydrant run`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// An input as NAME=FILE.npy (or FILE.npy for a single-input model); repeatable.
    #[arg(long = "input", required = true)]
    inputs: Vec<String>,
    /// Heads to run (comma-separated; default: all).
    #[arg(long, value_delimiter = ',')]
    heads: Vec<String>,
    /// Folder receiving `<output name>.npy` for every output of the requested heads.
    #[arg(long)]
    out: PathBuf,
}

pub fn main(args: Args) -> hydrant::Result<()> {
    let model = args.model.load()?;
    let mut inputs: Vec<(String, Tensor)> = Vec::new();
    for spec in &args.inputs {
        let (name, file) = match spec.split_once('=') {
            Some((n, f)) => (n.to_string(), f),
            None => match model.inputs() {
                [only] => (only.name.clone(), spec.as_str()),
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "--input {spec}: the model has several inputs, write NAME=FILE.npy"
                    )))
                }
            },
        };
        inputs.push((name, hydrant::read_npy(file)?));
    }
    let bound: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let heads: Vec<&str> = args.heads.iter().map(String::as_str).collect();
    let outputs = model.run(&bound, &heads)?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| Error::Io { path: args.out.clone(), source: e })?;
    for (name, tensor) in outputs.iter() {
        let file = args.out.join(format!("{}.npy", file_name(name)));
        hydrant::write_npy(&file, &tensor.to_f32())?;
        println!("{} {:?} -> {}", name, tensor.shape(), file.display());
    }
    Ok(())
}

/// An output name made safe as a file name (path separators replaced).
pub fn file_name(name: &str) -> String {
    name.chars().map(|c| if matches!(c, '/' | '\\' | '\0') { '_' } else { c }).collect()
}
