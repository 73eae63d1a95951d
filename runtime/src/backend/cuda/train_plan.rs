//! Planning of head training on the GPU, in plain Rust (built and tested in every build): the
//! shapes each layer of a head sees, the kernel dimensions derived from them, which layers need
//! an input gradient, which training options the device trainer honours, the dropout draw the
//! `dropout_forward_f32` kernel makes, and whether a feature cache fits device memory.
//!
//! Shapes come from the CPU layers themselves ([`layers::build`] and `output_shape`), so the
//! device network accepts exactly what [`Network`](crate::train::Network) accepts.

use super::fusion::Act;
use crate::error::{Error, Result};
use crate::train::layers::{self, Layer};
use crate::train::spec::{HeadSpec, LayerSpec};
use crate::train::{TrainOptions, Weighting};

/// One layer of a head as the device network runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerPlan {
    /// The layer.
    pub spec: LayerSpec,
    /// Its input shape.
    pub input: Vec<usize>,
    /// Its output shape.
    pub output: Vec<usize>,
    /// Whether backward must compute the input gradient (false at and below the lowest layer
    /// with weights: the trunk is frozen, nobody reads it).
    pub input_grad: bool,
}

/// The layers of `spec` for a batch of shape `input`, in order; an error names the first layer
/// that refuses its input, as the CPU network's does.
pub fn plan(spec: &HeadSpec, input: &[usize]) -> Result<Vec<LayerPlan>> {
    let lowest = spec.layers.iter().position(|l| !l.param_names().is_empty());
    let mut shape = input.to_vec();
    let mut out = Vec::with_capacity(spec.layers.len());
    for (i, l) in spec.layers.iter().enumerate() {
        let layer: Box<dyn Layer<f32>> = layers::build(l)?;
        let next = layer.output_shape(&shape).map_err(|e| match e {
            Error::BadTensor(m) => {
                Error::BadTensor(format!("head `{}`, layer {i} ({}): {m}", spec.name, l.kind()))
            }
            e => e,
        })?;
        let input_grad = lowest.is_some_and(|low| i > low);
        out.push(LayerPlan { spec: l.clone(), input: shape, output: next.clone(), input_grad });
        shape = next;
    }
    Ok(out)
}

/// The element-wise activation of a layer, if it is one.
pub fn activation(spec: &LayerSpec) -> Option<Act> {
    Some(match *spec {
        LayerSpec::Relu => Act::Relu,
        LayerSpec::LeakyRelu { negative_slope } => Act::LeakyRelu(negative_slope),
        LayerSpec::Gelu => Act::Gelu,
        LayerSpec::Silu => Act::Silu,
        LayerSpec::Sigmoid => Act::Sigmoid,
        LayerSpec::Tanh => Act::Tanh,
        _ => return None,
    })
}

/// Whether an activation's backward reads its output rather than its input (as the CPU layer
/// saves one or the other).
pub fn grad_from_output(act: Act) -> bool {
    matches!(act, Act::Sigmoid | Act::Tanh)
}

/// `(N, C, spatial)` of a BatchNorm input `[N, C]` or `[N, C, H, W]`.
pub fn channel_dims(shape: &[usize]) -> (usize, usize, usize) {
    match shape {
        [n, c, rest @ ..] => (*n, *c, rest.iter().product()),
        [n] => (*n, 1, 1),
        [] => (0, 0, 0),
    }
}

/// `(rows, last)` of a shape whose last axis is a row (Linear, LayerNorm).
pub fn row_dims(shape: &[usize]) -> (usize, usize) {
    let last = shape.last().copied().unwrap_or(0);
    (shape.iter().product::<usize>() / last.max(1), last)
}

/// `(outer, len, inner)` of a softmax over `dim` (negative counts from the end).
pub fn softmax_dims(shape: &[usize], dim: i64) -> Result<(usize, usize, usize)> {
    let rank = shape.len() as i64;
    let d = if dim < 0 { rank + dim } else { dim };
    if !(0..rank).contains(&d) {
        return Err(Error::BadTensor(format!("softmax: no dimension {dim} in shape {shape:?}")));
    }
    let d = d as usize;
    Ok((shape[..d].iter().product(), shape[d], shape[d + 1..].iter().product()))
}

/// The three matrix products of a grouped convolution, per group: the forward
/// `y[og, cols] = W[og, kg] · col[kg, cols]`, the weight gradient `dW[og, kg] = dy[og, cols] ·
/// col[kg, cols]ᵀ` and the column gradient `dcol[kg, cols] = W[og, kg]ᵀ · dy[og, cols]`, with
/// `cols = N·Ho·Wo` (the CPU layer's unfolding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGemm {
    /// Groups.
    pub groups: usize,
    /// Output channels per group.
    pub og: usize,
    /// Reduction length per group: input channels per group × kernel area.
    pub kg: usize,
    /// Columns: batch × output pixels.
    pub cols: usize,
}

impl ConvGemm {
    /// The products of a `Conv2d` layer with input `[N, C, H, W]` and output `[N, O, Ho, Wo]`.
    pub fn new(spec: &LayerSpec, input: &[usize], output: &[usize]) -> Result<ConvGemm> {
        let (
            LayerSpec::Conv2d { in_channels, out_channels, kernel_size, groups, .. },
            [n, ..],
            [_, _, ho, wo],
        ) = (spec, input, output)
        else {
            return Err(Error::InvalidArgument(format!(
                "conv2d plan for {spec:?} with input {input:?} and output {output:?}"
            )));
        };
        Ok(ConvGemm {
            groups: *groups,
            og: out_channels / groups,
            kg: in_channels / groups * kernel_size * kernel_size,
            cols: n * ho * wo,
        })
    }
}

/// Why the device trainer cannot run `options` for `heads` heads, if it cannot. It trains one
/// head (multi-task weighting stays on the CPU trainer) without a validation split.
pub fn unsupported_options(options: &TrainOptions, heads: usize) -> Option<String> {
    if heads != 1 {
        return Some(format!("the GPU trainer trains one head at a time ({heads} given)"));
    }
    if options.weighting != Weighting::default() {
        return Some("multi-task weighting runs on the CPU trainer".into());
    }
    if options.validation_fraction != 0.0 || options.early_stopping.is_some() {
        return Some(
            "validation splits and early stopping run on the CPU trainer (evaluate the trained \
             head instead)"
                .into(),
        );
    }
    None
}

/// The uniform in [0, 1) that dropout draws for element `index` under `seed`: the SplitMix64
/// finaliser of `seed + (index + 1)·0x9E3779B97F4A7C15`, top 24 bits (`hy_dropout_uniform` in
/// kernels/src/train.cu computes the same).
pub fn dropout_uniform(seed: u64, index: u64) -> f32 {
    (splitmix(seed, index) >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
}

/// The dropout mask value of element `index`: 0 when dropped (draw below `p`), else 1/(1−p).
pub fn dropout_mask(seed: u64, index: u64, p: f32) -> f32 {
    if dropout_uniform(seed, index) < p {
        0.0
    } else {
        1.0 / (1.0 - p)
    }
}

/// The dropout seed of layer `layer` at optimizer step `step` of a run seeded `seed` (distinct
/// per layer and step, reproducible across runs).
pub fn dropout_seed(seed: u64, step: u64, layer: usize) -> u64 {
    splitmix(seed ^ splitmix(step, layer as u64), 0)
}

/// SplitMix64's finaliser of `seed + (index + 1)·γ` (γ the golden-ratio increment).
fn splitmix(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add(index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The weight of input `i` in output `o` of a ×2 bilinear upsampling (half-pixel centres,
/// clamped at the borders) along an axis of `n` inputs: `hy_bilinear2x_weight` of
/// kernels/src/train.cu, whose backward gathers over [`bilinear2x_readers`].
pub fn bilinear2x_weight(o: usize, i: usize, n: usize) -> f32 {
    let src = ((o as f32 + 0.5) * 0.5 - 0.5).max(0.0);
    let i0 = (src as usize).min(n - 1);
    let i1 = (i0 + 1).min(n - 1);
    let l = src - i0 as f32;
    (if i0 == i { 1.0 - l } else { 0.0 }) + if i1 == i { l } else { 0.0 }
}

/// The outputs that may read input `i` of an axis of `n` inputs upsampled ×2 bilinearly (the
/// bounds of the backward kernel's gather).
pub fn bilinear2x_readers(i: usize, n: usize) -> std::ops::RangeInclusive<usize> {
    (2 * i).saturating_sub(2)..=(2 * n - 1).min(2 * i + 2)
}

/// Whether `rows` feature rows of `row_len` f32 values fit a device budget of `budget` bytes
/// (else batches are gathered on the host and uploaded per step).
pub fn cache_fits(rows: usize, row_len: usize, budget: usize) -> bool {
    rows.checked_mul(row_len).and_then(|n| n.checked_mul(4)).is_some_and(|bytes| bytes <= budget)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg_head() -> HeadSpec {
        let layers = vec![
            LayerSpec::Conv2d {
                in_channels: 8,
                out_channels: 16,
                kernel_size: 3,
                stride: 1,
                padding: 1,
                dilation: 1,
                groups: 1,
                bias: false,
            },
            LayerSpec::BatchNorm2d { num_features: 16, eps: 1e-5, momentum: 0.1 },
            LayerSpec::Relu,
            LayerSpec::Conv2d {
                in_channels: 16,
                out_channels: 3,
                kernel_size: 1,
                stride: 1,
                padding: 0,
                dilation: 1,
                groups: 1,
                bias: true,
            },
            LayerSpec::Upsample2x { mode: crate::train::UpsampleMode::Nearest },
        ];
        HeadSpec::new("seg", "features", layers, None)
    }

    #[test]
    fn shapes_follow_the_cpu_layers_and_input_gradients_stop_at_the_lowest_weights() {
        let p = plan(&seg_head(), &[4, 8, 6, 6]).unwrap();
        let shapes: Vec<_> = p.iter().map(|l| l.output.clone()).collect();
        assert_eq!(shapes[0], [4, 16, 6, 6]);
        assert_eq!(shapes[4], [4, 3, 12, 12]);
        assert_eq!(p[3].input, [4, 16, 6, 6]);
        let grads: Vec<bool> = p.iter().map(|l| l.input_grad).collect();
        assert_eq!(grads, [false, true, true, true, true]);
        let g = ConvGemm::new(&p[0].spec, &p[0].input, &p[0].output).unwrap();
        assert_eq!(g, ConvGemm { groups: 1, og: 16, kg: 72, cols: 144 });
        // A head that pools first: nothing below the Linear needs a gradient.
        let head = HeadSpec::new(
            "cls",
            "features",
            vec![
                LayerSpec::GlobalAvgPool { keep_dims: false },
                LayerSpec::Linear { in_features: 8, out_features: 2, bias: true },
            ],
            None,
        );
        let p = plan(&head, &[2, 8, 3, 3]).unwrap();
        assert_eq!(p.iter().map(|l| l.input_grad).collect::<Vec<_>>(), [false, false]);
    }

    #[test]
    fn a_refused_input_names_the_layer() {
        let e = plan(&seg_head(), &[4, 5, 6, 6]).unwrap_err().to_string();
        assert!(e.contains("layer 0 (conv2d)"), "{e}");
    }

    #[test]
    fn depthwise_products_are_per_channel() {
        let spec = LayerSpec::Conv2d {
            in_channels: 8,
            out_channels: 8,
            kernel_size: 3,
            stride: 2,
            padding: 1,
            dilation: 1,
            groups: 8,
            bias: true,
        };
        let g = ConvGemm::new(&spec, &[2, 8, 9, 9], &[2, 8, 5, 5]).unwrap();
        assert_eq!(g, ConvGemm { groups: 8, og: 1, kg: 9, cols: 50 });
        assert!(ConvGemm::new(&LayerSpec::Relu, &[1], &[1]).is_err());
    }

    #[test]
    fn dims_of_rows_channels_and_softmax_axes() {
        assert_eq!(row_dims(&[2, 3, 5]), (6, 5));
        assert_eq!(channel_dims(&[2, 3, 4, 5]), (2, 3, 20));
        assert_eq!(channel_dims(&[7, 3]), (7, 3, 1));
        assert_eq!(softmax_dims(&[2, 4, 3, 3], 1).unwrap(), (2, 4, 9));
        assert_eq!(softmax_dims(&[5, 10], -1).unwrap(), (5, 10, 1));
        assert!(softmax_dims(&[5, 10], 2).is_err());
    }

    #[test]
    fn activations_map_to_kernel_codes() {
        assert_eq!(
            activation(&LayerSpec::LeakyRelu { negative_slope: 0.2 }),
            Some(Act::LeakyRelu(0.2))
        );
        assert_eq!(activation(&LayerSpec::Flatten), None);
        assert!(grad_from_output(Act::Tanh) && !grad_from_output(Act::Gelu));
    }

    #[test]
    fn dropout_draws_are_reproducible_uniform_and_drop_about_p() {
        let n = 100_000u64;
        let draws: Vec<f32> = (0..n).map(|i| dropout_uniform(42, i)).collect();
        assert!(draws.iter().all(|&u| (0.0..1.0).contains(&u)));
        assert_eq!(draws[..100], (0..100).map(|i| dropout_uniform(42, i)).collect::<Vec<_>>());
        let mean = draws.iter().map(|&u| u as f64).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.005, "mean {mean}");
        let dropped = (0..n).filter(|&i| dropout_mask(42, i, 0.3) == 0.0).count() as f64;
        assert!((dropped / n as f64 - 0.3).abs() < 0.01, "dropped {dropped}");
        assert_eq!(dropout_mask(42, 7, 0.0), 1.0);
        // Another seed gives another mask; seeds differ per layer and step.
        let other = (0..1000).filter(|&i| dropout_uniform(43, i) != draws[i as usize]).count();
        assert!(other > 990);
        assert_ne!(dropout_seed(0, 1, 0), dropout_seed(0, 1, 1));
        assert_ne!(dropout_seed(0, 1, 0), dropout_seed(0, 2, 0));
        assert_eq!(dropout_seed(5, 9, 2), dropout_seed(5, 9, 2));
    }

    #[test]
    fn the_device_trainer_names_what_it_leaves_to_the_cpu() {
        let o = TrainOptions::default();
        assert_eq!(unsupported_options(&o, 1), None);
        assert!(unsupported_options(&o, 2).unwrap().contains("one head"));
        let v = TrainOptions { validation_fraction: 0.2, ..TrainOptions::default() };
        assert!(unsupported_options(&v, 1).unwrap().contains("validation"));
    }

    #[test]
    fn the_bilinear_gather_equals_the_cpu_layers_scatter() {
        use crate::train::layers::{Pass, Upsample2x};
        use crate::train::{Array, UpsampleMode};
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for (h, w) in [(1, 1), (1, 4), (3, 2), (5, 6)] {
            // Every output's weights sum to 1, and only readers have a weight.
            for n in [h, w] {
                for o in 0..2 * n {
                    let total: f32 = (0..n).map(|i| bilinear2x_weight(o, i, n)).sum();
                    assert!((total - 1.0).abs() < 1e-6);
                    for i in 0..n {
                        let reads = bilinear2x_weight(o, i, n) != 0.0;
                        assert!(!reads || bilinear2x_readers(i, n).contains(&o), "{o} {i} {n}");
                    }
                }
            }
            let mut layer = Upsample2x::new(UpsampleMode::Bilinear);
            let mut pass = Pass { training: true, frozen_batchnorm: false, rng: &mut rng.clone() };
            let x = Array::<f32>::zeros(&[1, 1, h, w]).unwrap();
            layer.forward(x, &mut pass).unwrap();
            let dy: Vec<f32> = (0..4 * h * w).map(|_| rng.random_range(-1.0..1.0)).collect();
            let want = layer.backward(Array::new(&[1, 1, 2 * h, 2 * w], dy.clone()).unwrap());
            let want = want.unwrap();
            for iy in 0..h {
                for ix in 0..w {
                    let mut acc = 0.0f32;
                    for oy in bilinear2x_readers(iy, h) {
                        for ox in bilinear2x_readers(ix, w) {
                            let wt = bilinear2x_weight(oy, iy, h) * bilinear2x_weight(ox, ix, w);
                            acc += dy[oy * 2 * w + ox] * wt;
                        }
                    }
                    let cpu = want.data()[iy * w + ix];
                    assert!((acc - cpu).abs() < 1e-5, "{h}×{w} at ({iy}, {ix}): {acc} vs {cpu}");
                }
            }
        }
    }

    #[test]
    fn the_cache_goes_to_the_device_when_it_fits() {
        assert!(cache_fits(1000, 256, 1 << 20));
        assert!(!cache_fits(1000, 512, 1 << 20));
        assert!(!cache_fits(usize::MAX, 2, usize::MAX));
    }
}
