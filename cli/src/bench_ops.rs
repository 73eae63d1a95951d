//! `hydrant bench-ops`: hydrant's own CPU ops against tract's on the convolutions of
//! ResNet-18 (224×224), timed side by side (interleaved runs, medians).

use hydrant::backend::cpu_ops::probe::{with_threads, ConvCase, Pair};
use hydrant::backend::cpu_ops::Isa;
use hydrant::Error;

/// Arguments of `hydrant bench-ops`.
#[derive(clap::Args)]
pub struct Args {
    /// Threads (tract's executor, shared by both sides).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Timed runs per case.
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Time on-CPU time of the calling thread instead of wall time (with --threads 1: robust
    /// when other processes share the cores).
    #[arg(long)]
    cpu_time: bool,
    /// Time every available kernel ISA, not only the best.
    #[arg(long)]
    all_isas: bool,
}

/// ResNet-18's convolutions at 224×224 input, with the fusions they have: stride-2 ones
/// (Im2colConv) and stride-1 3×3 ones (WinogradConv).
fn cases() -> Vec<(&'static str, ConvCase)> {
    let c = |ch: usize, hw: usize, residual: bool| ConvCase {
        cin: ch,
        cout: ch,
        hw: (hw, hw),
        kernel: 3,
        stride: 1,
        pads: [1; 4],
        residual,
        relu: true,
    };
    let strided = |cin: usize, cout: usize, hw: usize, kernel: usize| ConvCase {
        cin,
        cout,
        hw: (hw, hw),
        kernel,
        stride: 2,
        pads: [kernel / 2; 4],
        residual: false,
        relu: true,
    };
    vec![
        ("stem 7x7/2 conv+relu", strided(3, 64, 224, 7)),
        ("layer2 3x3/2 conv+relu", strided(64, 128, 56, 3)),
        ("layer4 3x3/2 conv+relu", strided(256, 512, 14, 3)),
        ("layer1 conv+relu", c(64, 56, false)),
        ("layer1 conv+add+relu", c(64, 56, true)),
        ("layer2 conv+add+relu", c(128, 28, true)),
        ("layer3 conv+add+relu", c(256, 14, true)),
        ("layer4 conv+add+relu", c(512, 7, true)),
    ]
}

pub fn main(args: Args) -> hydrant::Result<()> {
    if args.threads == 0 || args.threads > hydrant::model::MAX_THREADS {
        return Err(Error::InvalidArgument(format!("threads = {}", args.threads)));
    }
    let isas = if args.all_isas { Isa::available() } else { vec![Isa::best()] };
    let clock = if args.cpu_time { "on-CPU" } else { "wall" };
    println!(
        "{} thread(s), {} timed runs each, medians ({clock} ms); GFLOP/s of the direct convolution",
        args.threads, args.iters
    );
    println!(
        "{:<22} {:>8} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9}",
        "case", "isa", "tract", "hydrant", "ratio", "tract GF", "ours GF", "rel err"
    );
    let err = |e: hydrant::backend::cpu_ops::probe::TractError| Error::Backend {
        segment: "bench-ops".into(),
        message: format!("{e:#}"),
    };
    with_threads(args.threads, || {
        for (name, case) in cases() {
            for &isa in &isas {
                let pair = Pair::new(&case, 1, isa).map_err(err)?;
                if pair.replaced != 1 {
                    return Err(Error::InvalidArgument(format!(
                        "{name}: no op of ours replaced it"
                    )));
                }
                let rel = pair.relative_error().map_err(err)?;
                let (t, o) = pair.time(args.iters, args.cpu_time).map_err(err)?;
                let gf = |ms: f64| 2.0 * case.macs() as f64 / ms / 1e6;
                println!(
                    "{name:<22} {:>8} {t:>9.3} {o:>9.3} {:>7.2}x {:>9.1} {:>9.1} {rel:>9.1e}",
                    format!("{isa:?}"),
                    o / t,
                    gf(t),
                    gf(o),
                );
            }
        }
        Ok(())
    })
}
