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
use crate::train::real::Op;
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

/// One row-major matrix product `c[m×n] = op(a)[m×k]·op(b)[k×n]` of the device network, with
/// element offsets into its operands (cuBLAS SGEMM on the device; [`matmul`] runs the same
/// description on the host, which is how the tests check it against the CPU layers).
///
/// [`matmul`]: crate::train::real::matmul
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Product {
    /// Rows of the result.
    pub m: usize,
    /// Columns of the result.
    pub n: usize,
    /// Reduction length.
    pub k: usize,
    /// Offset into `a` and how it is stored.
    pub a: (usize, Op),
    /// Offset into `b` and how it is stored.
    pub b: (usize, Op),
    /// Offset into `c`.
    pub c: usize,
}

/// The products of a `Linear` layer on `[rows, in]` (leading axes flattened into rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearGemm {
    /// Rows of the input.
    pub rows: usize,
    /// Input features.
    pub inf: usize,
    /// Output features.
    pub out: usize,
}

impl LinearGemm {
    /// The products of a `Linear` layer with input shape `input`.
    pub fn new(spec: &LayerSpec, input: &[usize]) -> Result<LinearGemm> {
        let LayerSpec::Linear { in_features, out_features, .. } = *spec else {
            return Err(Error::InvalidArgument(format!("linear plan for {spec:?}")));
        };
        let (rows, _) = row_dims(input);
        Ok(LinearGemm { rows, inf: in_features, out: out_features })
    }

    /// `y[rows, out] = x · Wᵀ` (a = x, b = W).
    pub fn forward(&self) -> Product {
        Product { m: self.rows, n: self.out, k: self.inf, a: (0, Op::N), b: (0, Op::T), c: 0 }
    }

    /// `dW[out, in] = dyᵀ · x` (a = dy, b = x).
    pub fn weight_grad(&self) -> Product {
        Product { m: self.out, n: self.inf, k: self.rows, a: (0, Op::T), b: (0, Op::N), c: 0 }
    }

    /// `dx[rows, in] = dy · W` (a = dy, b = W).
    pub fn input_grad(&self) -> Product {
        Product { m: self.rows, n: self.inf, k: self.out, a: (0, Op::N), b: (0, Op::N), c: 0 }
    }
}

/// The gradient products of a grouped convolution, per group, on the CPU layer's unfolding:
/// `col[kg, cols]` (im2col of the group's input channels) and `dyt[O, cols]` (the output
/// gradient with batch and channel axes swapped), `cols = N·Ho·Wo`.
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

    /// Group `g`'s weight gradient `dW_g[og, kg] = dyt_g · col_gᵀ` (a = dyt, b = col, c = dW).
    pub fn weight_grad(&self, g: usize) -> Product {
        Product {
            m: self.og,
            n: self.kg,
            k: self.cols,
            a: (g * self.og * self.cols, Op::N),
            b: (0, Op::T),
            c: g * self.og * self.kg,
        }
    }

    /// Group `g`'s column gradient `dcol[kg, cols] = W_gᵀ · dyt_g` (a = W, b = dyt, c = dcol).
    pub fn column_grad(&self, g: usize) -> Product {
        Product {
            m: self.kg,
            n: self.cols,
            k: self.og,
            a: (g * self.og * self.kg, Op::T),
            b: (g * self.og * self.cols, Op::N),
            c: 0,
        }
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

    /// Runs `layer` forward (training) on random `x` and backward on random `dy`: y, dx and
    /// the parameter values and gradients.
    #[allow(clippy::type_complexity)]
    fn cpu_pass(
        spec: &LayerSpec,
        input: &[usize],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<(Vec<f64>, Vec<f64>)>, Vec<usize>) {
        use crate::train::layers::Pass;
        use crate::train::Array;
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut layer: Box<dyn Layer<f64>> = layers::build(spec).unwrap();
        for (_, p) in layer.params() {
            p.value.data_mut().iter_mut().for_each(|v| *v = rng.random_range(-1.0..1.0));
        }
        let x: Vec<f64> =
            (0..input.iter().product()).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut pass = Pass { training: true, frozen_batchnorm: false, rng: &mut rng.clone() };
        let y = layer.forward(Array::new(input, x.clone()).unwrap(), &mut pass).unwrap();
        let dy: Vec<f64> = (0..y.len()).map(|_| rng.random_range(-1.0..1.0)).collect();
        let dx = layer.backward(Array::new(y.shape(), dy.clone()).unwrap()).unwrap();
        let params = layer
            .params()
            .into_iter()
            .map(|(_, p)| (p.value.data().to_vec(), p.grad.data().to_vec()));
        let params = params.collect();
        (x, dy, dx.data().to_vec(), params, y.shape().to_vec())
    }

    fn run(p: &Product, a: &[f64], b: &[f64], c: &mut [f64]) {
        let (m, n, k) = (p.m, p.n, p.k);
        crate::train::real::matmul(
            m,
            n,
            k,
            &a[p.a.0..],
            p.a.1,
            &b[p.b.0..],
            p.b.1,
            &mut c[p.c..],
            false,
        );
    }

    fn close(what: &str, got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!((a - b).abs() < 1e-9 * (1.0 + b.abs()), "{what}[{i}]: {a} vs {b}");
        }
    }

    #[test]
    fn the_linear_products_reproduce_the_cpu_layer() {
        let spec = LayerSpec::Linear { in_features: 5, out_features: 3, bias: false };
        let (x, dy, dx, params, _) = cpu_pass(&spec, &[2, 4, 5]);
        let g = LinearGemm::new(&spec, &[2, 4, 5]).unwrap();
        assert_eq!(g, LinearGemm { rows: 8, inf: 5, out: 3 });
        let (w, dw) = &params[0];
        let mut got = vec![0.0; 15];
        run(&g.weight_grad(), &dy, &x, &mut got);
        close("linear dW", &got, dw);
        let mut got = vec![0.0; 40];
        run(&g.input_grad(), &dy, w, &mut got);
        close("linear dx", &got, &dx);
        let mut y = vec![0.0; 24];
        run(&g.forward(), &x, w, &mut y);
        let want: Vec<f64> =
            (0..24).map(|i| (0..5).map(|j| x[i / 3 * 5 + j] * w[i % 3 * 5 + j]).sum()).collect();
        close("linear y", &y, &want);
    }

    #[test]
    fn the_convolution_products_reproduce_the_cpu_layer() {
        let conv = |c, o, k, s, p, d, g| LayerSpec::Conv2d {
            in_channels: c,
            out_channels: o,
            kernel_size: k,
            stride: s,
            padding: p,
            dilation: d,
            groups: g,
            bias: false,
        };
        for (spec, input) in [
            (conv(3, 4, 3, 1, 1, 1, 1), [2, 3, 5, 4]),
            (conv(4, 6, 3, 2, 2, 2, 2), [3, 4, 7, 6]),
            (conv(4, 4, 3, 1, 1, 1, 4), [2, 4, 4, 5]),
        ] {
            let LayerSpec::Conv2d { kernel_size: k, stride: s, padding: pad, dilation: d, .. } =
                spec
            else {
                unreachable!()
            };
            let (x, dy, dx, params, out) = cpu_pass(&spec, &input);
            let g = ConvGemm::new(&spec, &input, &out).unwrap();
            let [n, c, h, w] = input;
            let (o, ho, wo) = (out[1], out[2], out[3]);
            let cg = c / g.groups;
            // dyt[o, n, p] = dy[n, o, p] (swap01_f32).
            let mut dyt = vec![0.0; dy.len()];
            for (t, &v) in dy.iter().enumerate() {
                let (sp, no) = (t % (ho * wo), t / (ho * wo));
                dyt[((no % o) * n + no / o) * ho * wo + sp] = v;
            }
            let (wv, dw) = &params[0];
            let mut got_dw = vec![0.0; dw.len()];
            let mut got_dx = vec![0.0; dx.len()];
            // The source of tap (kh, kw) at output (oh, ow), if inside (im2col_f32 / col2im_f32).
            let src = |oh: usize, ow: usize, kh: usize, kw: usize| {
                let iy = (oh * s + kh * d).checked_sub(pad).filter(|&v| v < h)?;
                let ix = (ow * s + kw * d).checked_sub(pad).filter(|&v| v < w)?;
                Some((iy, ix))
            };
            for grp in 0..g.groups {
                let mut col = vec![0.0; g.kg * g.cols];
                for (i, v) in col.iter_mut().enumerate() {
                    let (kk, pp) = (i / g.cols, i % g.cols);
                    let (ow, oh, b) = (pp % wo, pp / wo % ho, pp / (wo * ho));
                    let (kw, kh, ch) = (kk % k, kk / k % k, kk / (k * k));
                    if let Some((iy, ix)) = src(oh, ow, kh, kw) {
                        *v = x[((b * c + grp * cg + ch) * h + iy) * w + ix];
                    }
                }
                run(&g.weight_grad(grp), &dyt, &col, &mut got_dw);
                let mut dcol = vec![0.0; g.kg * g.cols];
                run(&g.column_grad(grp), wv, &dyt, &mut dcol);
                for (i, v) in dcol.iter().enumerate() {
                    let (kk, pp) = (i / g.cols, i % g.cols);
                    let (ow, oh, b) = (pp % wo, pp / wo % ho, pp / (wo * ho));
                    let (kw, kh, ch) = (kk % k, kk / k % k, kk / (k * k));
                    if let Some((iy, ix)) = src(oh, ow, kh, kw) {
                        got_dx[((b * c + grp * cg + ch) * h + iy) * w + ix] += v;
                    }
                }
            }
            close(&format!("{spec:?} dW"), &got_dw, dw);
            close(&format!("{spec:?} dx"), &got_dx, &dx);
        }
    }

    #[test]
    fn the_cache_goes_to_the_device_when_it_fits() {
        assert!(cache_fits(1000, 256, 1 << 20));
        assert!(!cache_fits(1000, 512, 1 << 20));
        assert!(!cache_fits(usize::MAX, 2, usize::MAX));
    }
}
