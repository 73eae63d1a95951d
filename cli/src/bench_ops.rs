//! `hydrant bench-ops`: hydrant's own CPU ops against tract's on the convolutions of
//! ResNet-18 and MobileNet-V2 (224×224), timed side by side (interleaved runs, medians).

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
    /// Only the cases whose name contains this text (e.g. `mb`, `dw`, `layer1`).
    #[arg(long)]
    only: Option<String>,
}

/// ResNet-18's convolutions at 224×224 input that hydrant replaces, with their fusions: the
/// stem (Im2colConv) and the stride-1 3×3 ones (WinogradConv).
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
        relu6: false,
        depthwise: false,
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
        relu6: false,
        depthwise: false,
    };
    vec![
        ("stem 7x7/2 conv+relu", strided(3, 64, 224, 7)),
        ("layer2 3x3/2 conv+relu", ConvCase { kernel: 3, pads: [1; 4], ..strided(64, 128, 56, 3) }),
        (
            "layer3 3x3/2 conv+relu",
            ConvCase { kernel: 3, pads: [1; 4], ..strided(128, 256, 28, 3) },
        ),
        (
            "layer4 3x3/2 conv+relu",
            ConvCase { kernel: 3, pads: [1; 4], ..strided(256, 512, 14, 3) },
        ),
        ("layer1 conv+relu", c(64, 56, false)),
        ("layer1 conv+add+relu", c(64, 56, true)),
        ("layer2 conv+add+relu", c(128, 28, true)),
        ("layer3 conv+add+relu", c(256, 14, true)),
        ("layer4 conv+add+relu", c(512, 7, true)),
    ]
}

/// MobileNet-V2's stem and depthwise convolutions at 224×224 input, with the ReLU6 after them, and its
/// 1×1 convolutions (PointwiseConv): expansions with ReLU6, projections with the residual `Add`
/// where the block has one.
fn mobilenet_cases() -> Vec<(&'static str, ConvCase)> {
    let pw = |cin: usize, cout: usize, hw: usize, residual: bool| ConvCase {
        cin,
        cout,
        hw: (hw, hw),
        kernel: 1,
        stride: 1,
        pads: [0; 4],
        residual,
        relu: cin < cout,
        relu6: cin < cout,
        depthwise: false,
    };
    let dw = |ch: usize, hw: usize, stride: usize| ConvCase {
        cin: ch,
        cout: ch,
        hw: (hw, hw),
        kernel: 3,
        stride,
        pads: [1; 4],
        residual: false,
        relu: true,
        relu6: true,
        depthwise: true,
    };
    let stem = ConvCase { cin: 3, cout: 32, hw: (224, 224), depthwise: false, ..dw(3, 224, 2) };
    vec![
        ("mb stem 3x3/2 relu6", stem),
        ("mb dw32 112/1 relu6", dw(32, 112, 1)),
        ("mb dw96 112/2 relu6", dw(96, 112, 2)),
        ("mb dw144 56/1 relu6", dw(144, 56, 1)),
        ("mb dw144 56/2 relu6", dw(144, 56, 2)),
        ("mb dw192 28/1 relu6", dw(192, 28, 1)),
        ("mb dw192 28/2 relu6", dw(192, 28, 2)),
        ("mb dw384 14/1 relu6", dw(384, 14, 1)),
        ("mb dw576 14/1 relu6", dw(576, 14, 1)),
        ("mb dw576 14/2 relu6", dw(576, 14, 2)),
        ("mb dw960 7/1 relu6", dw(960, 7, 1)),
        ("mb pw 32>16 112", pw(32, 16, 112, false)),
        ("mb pw 16>96 112 relu6", pw(16, 96, 112, false)),
        ("mb pw 24>144 56 relu6", pw(24, 144, 56, false)),
        ("mb pw 144>24 56 add", pw(144, 24, 56, true)),
        ("mb pw 32>192 28 relu6", pw(32, 192, 28, false)),
        ("mb pw 192>32 28 add", pw(192, 32, 28, true)),
        ("mb pw 64>384 14 relu6", pw(64, 384, 14, false)),
        ("mb pw 384>64 14 add", pw(384, 64, 14, true)),
        ("mb pw 96>576 14 relu6", pw(96, 576, 14, false)),
        ("mb pw 576>96 14 add", pw(576, 96, 14, true)),
        ("mb pw 160>960 7 relu6", pw(160, 960, 7, false)),
        ("mb pw 960>160 7 add", pw(960, 160, 7, true)),
        ("mb pw 320>1280 7 relu6", pw(320, 1280, 7, false)),
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
        "{:<24} {:>8} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9}",
        "case", "isa", "tract", "hydrant", "ratio", "tract GF", "ours GF", "rel err"
    );
    let err = |e: hydrant::backend::cpu_ops::probe::TractError| Error::Backend {
        segment: "bench-ops".into(),
        message: format!("{e:#}"),
    };
    with_threads(args.threads, || {
        let chosen = |(name, _): &(&str, ConvCase)| {
            args.only.as_deref().is_none_or(|only| name.contains(only))
        };
        for (name, case) in cases().into_iter().chain(mobilenet_cases()).filter(chosen) {
            for &isa in &isas {
                let pair = Pair::new(&case, 1, isa).map_err(err)?;
                if pair.replaced != 1 {
                    // The patch leaves this shape to tract.
                    println!("{name:<26} {isa:>6?}   stays with tract");
                    continue;
                }
                let rel = pair.relative_error().map_err(err)?;
                let (t, o) = pair.time(args.iters, args.cpu_time).map_err(err)?;
                let gf = |ms: f64| 2.0 * case.macs() as f64 / ms / 1e6;
                println!(
                    "{name:<24} {:>8} {t:>9.3} {o:>9.3} {:>7.2}x {:>9.1} {:>9.1} {rel:>9.1e}",
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
