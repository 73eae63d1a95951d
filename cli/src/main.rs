//! `hydrant`: inspect, run, benchmark and fine-tune multi-task models from the command line.
//!
//! Every failure prints one line on stderr and exits with status 2.

mod bench;
mod bench_ops;
mod bench_train;
mod demo;
mod device;
mod export_heads;
mod finetune;
mod inspect;
mod layers;
mod peer;
mod plot;
mod plot_font;
mod run;
mod train_head;
mod training;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "hydrant",
    version,
    about = "Run multi-task neural networks: trunk once, heads on demand"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a model's inputs, its trunk and its heads (params, FLOPs, cut points).
    Inspect(inspect::Args),
    /// Run a model on .npy inputs and write each requested head's outputs as .npy files.
    Run(run::Args),
    /// Measure latency: full graph, each head, heads on stored features, separate models.
    Bench(bench::Args),
    /// Time hydrant's own CPU ops against tract's on ResNet-18's and MobileNet-V2's convolutions.
    BenchOps(bench_ops::Args),
    /// Time head training steps and a whole fine-tune, optionally beside PyTorch.
    BenchTrain(bench_train::Args),
    /// Run the built-in demo: a multi-task model on scikit-learn's handwritten digits.
    Demo(demo::Args),
    /// Train one head on stored features (.npy) and write it as a head file.
    TrainHead(train_head::Args),
    /// Fine-tune a model's heads from inputs and labels in a folder (trunk frozen).
    Finetune(finetune::Args),
    /// Write every trainable head of a model as a head file.
    ExportHeads(export_heads::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => inspect::main(a),
        Command::Run(a) => run::main(a),
        Command::Bench(a) => bench::main(a),
        Command::BenchOps(a) => bench_ops::main(a),
        Command::BenchTrain(a) => bench_train::main(a),
        Command::Demo(a) => demo::main(a),
        Command::TrainHead(a) => train_head::main(a),
        Command::Finetune(a) => finetune::main(a),
        Command::ExportHeads(a) => export_heads::main(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Options shared by the commands that load a model.
#[derive(clap::Args, Clone)]
pub struct ModelArgs {
    /// The model file: ONNX, or a whole model in one `.safetensors` file (trunk and heads).
    pub model: std::path::PathBuf,
    /// A head file (.safetensors) whose heads replace the model's heads of the same name or are
    /// added.
    #[arg(long)]
    pub heads_file: Option<std::path::PathBuf>,
    /// Trunk tensors to cut at (comma-separated); everything downstream becomes head(s).
    #[arg(long, value_delimiter = ',')]
    pub cut: Vec<String>,
    /// Intra-op threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// auto, cpu, cuda or cuda:N (default: $HYDRANT_DEVICE, else auto).
    #[arg(long)]
    pub device: Option<String>,
    /// Element type of tensors on the GPU: f32, f16 or bf16 (default f32; f16 and bf16 need
    /// the CUDA backend).
    #[arg(long)]
    pub precision: Option<String>,
}

impl ModelArgs {
    /// Loads the model these options describe.
    pub fn load(&self) -> hydrant::Result<hydrant::Model> {
        let mut options = hydrant::LoadOptions::new().cut_at(self.cut.iter().cloned());
        if let Some(n) = self.threads {
            options = options.threads(n);
        }
        let device = self.device.clone().or_else(|| std::env::var("HYDRANT_DEVICE").ok());
        if let Some(d) = device {
            options = options.device(d.parse()?);
        }
        if let Some(p) = &self.precision {
            options = options.precision(p.parse()?);
        }
        let whole = self.model.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
        let model = if whole {
            hydrant::Model::load_safetensors(&self.model, options)?
        } else {
            hydrant::Model::load(&self.model, options)?
        };
        if let Some(file) = &self.heads_file {
            model.set_heads(&hydrant::HeadSet::load(file)?)?;
        }
        Ok(model)
    }
}

/// Formats a count with a k/M/G suffix.
pub fn human(n: f64) -> String {
    match n {
        n if n >= 1e9 => format!("{:.2} G", n / 1e9),
        n if n >= 1e6 => format!("{:.2} M", n / 1e6),
        n if n >= 1e3 => format!("{:.1} k", n / 1e3),
        n => format!("{n:.0} "),
    }
}
