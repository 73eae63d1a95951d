//! New heads from a layer list such as `linear:128,relu,linear:10`, sized to the features they
//! read (each layer's input size is the previous layer's output).

use hydrant::train::{Head, HeadSpec, Init, LayerSpec, UpsampleMode};
use hydrant::{Error, Result};

/// The layer words `--new` understands.
pub const HELP: &str = "linear:OUT, conv:OUT:K[:STRIDE] (padding K/2), bn, ln, relu, \
     leaky_relu[:SLOPE], gelu, silu, sigmoid, tanh, dropout:P, flatten, gap (global average \
     pool), maxpool:K[:STRIDE], up[:bilinear]";

/// Parses `init`: pytorch, kaiming, kaiming_uniform or xavier.
pub fn init(name: &str) -> Result<Init> {
    Ok(match name {
        "pytorch" => Init::PyTorch,
        "kaiming" | "kaiming_normal" => Init::KaimingNormal,
        "kaiming_uniform" => Init::KaimingUniform,
        "xavier" | "xavier_uniform" => Init::XavierUniform,
        o => {
            return Err(Error::InvalidArgument(format!(
                "--init {o}: expected pytorch, kaiming, kaiming_uniform or xavier"
            )))
        }
    })
}

/// A new head called `name` reading `input` (per-sample shape `row`), its layers from `list`,
/// weights drawn by `init` from `seed`.
pub fn new_head(
    name: &str,
    input: &str,
    row: &[usize],
    list: &str,
    init: Init,
    seed: u64,
) -> Result<Head> {
    let mut shape = row.to_vec();
    let mut layers = Vec::new();
    for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let layer = parse(word, &shape)?;
        let one = HeadSpec::new(name, input, vec![layer.clone()], None);
        let probe = Head::init(one, Init::PyTorch, 0)
            .map_err(|e| Error::InvalidArgument(format!("--new `{word}`: {e}")))?;
        shape = crate::training::output_row(&probe, &shape).map_err(|e| {
            Error::InvalidArgument(format!("--new `{word}` on per-sample shape {shape:?}: {e}"))
        })?;
        layers.push(layer);
    }
    if layers.is_empty() {
        return Err(Error::InvalidArgument(format!("--new: no layers given ({HELP})")));
    }
    Head::init(HeadSpec::new(name, input, layers, None), init, seed)
}

/// One layer word on input of per-sample shape `shape`.
fn parse(word: &str, shape: &[usize]) -> Result<LayerSpec> {
    let mut parts = word.split(':');
    let kind = parts.next().unwrap_or_default();
    let args: Vec<&str> = parts.collect();
    let bad = |why: &str| Error::InvalidArgument(format!("--new `{word}`: {why} ({HELP})"));
    let num = |i: usize| -> Result<usize> {
        args.get(i)
            .ok_or_else(|| bad("missing size"))?
            .parse()
            .map_err(|_| bad("sizes are positive integers"))
    };
    let real = |i: usize, default: f32| -> Result<f32> {
        args.get(i).map_or(Ok(default), |a| a.parse().map_err(|_| bad("expected a number")))
    };
    let channels = || -> Result<usize> {
        shape.first().copied().ok_or_else(|| bad("the input has no channel axis"))
    };
    Ok(match kind {
        "linear" => {
            if shape.len() != 1 {
                return Err(bad(&format!(
                    "linear needs flat features, these are {shape:?} per sample (add flatten or gap)"
                )));
            }
            LayerSpec::Linear { in_features: shape[0], out_features: num(0)?, bias: true }
        }
        "conv" => {
            let k = num(1)?;
            LayerSpec::Conv2d {
                in_channels: channels()?,
                out_channels: num(0)?,
                kernel_size: k,
                stride: if args.len() > 2 { num(2)? } else { 1 },
                padding: k / 2,
                dilation: 1,
                groups: 1,
                bias: true,
            }
        }
        "bn" => LayerSpec::BatchNorm2d { num_features: channels()?, eps: 1e-5, momentum: 0.1 },
        "ln" => LayerSpec::LayerNorm {
            normalized_shape: *shape.last().ok_or_else(|| bad("no axis to normalise"))?,
            eps: 1e-5,
        },
        "relu" => LayerSpec::Relu,
        "leaky_relu" => LayerSpec::LeakyRelu { negative_slope: real(0, 0.01)? },
        "gelu" => LayerSpec::Gelu,
        "silu" => LayerSpec::Silu,
        "sigmoid" => LayerSpec::Sigmoid,
        "tanh" => LayerSpec::Tanh,
        "dropout" => LayerSpec::Dropout { p: real(0, 0.5)? },
        "flatten" => LayerSpec::Flatten,
        "gap" => LayerSpec::GlobalAvgPool { keep_dims: false },
        "maxpool" => LayerSpec::MaxPool2d {
            kernel_size: num(0)?,
            stride: if args.len() > 1 { Some(num(1)?) } else { None },
            padding: 0,
        },
        "up" => LayerSpec::Upsample2x {
            mode: match args.first() {
                None | Some(&"nearest") => UpsampleMode::Nearest,
                Some(&"bilinear") => UpsampleMode::Bilinear,
                Some(_) => return Err(bad("mode is nearest or bilinear")),
            },
        },
        _ => return Err(bad("unknown layer")),
    })
}
