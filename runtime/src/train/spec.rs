//! Architecture descriptions of trainable heads: what `hydrant.heads` metadata holds (see
//! docs/FORMAT.md). These are plain data (serde); weights live beside them as named tensors
//! following PyTorch `state_dict` names: `<head>.<layer index>.<param>`.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// One layer of a trainable head, with its hyper-parameters. Parameter tensor names are
/// `<head>.<index>.weight` / `.bias` / `.running_mean` / `.running_var` (PyTorch's names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LayerSpec {
    /// `y = x Wᵀ + b`, W `[out, in]` (PyTorch `nn.Linear`).
    Linear {
        /// Input features.
        in_features: usize,
        /// Output features.
        out_features: usize,
        /// Whether there is a bias.
        #[serde(default = "yes")]
        bias: bool,
    },
    /// 2-D convolution, NCHW, W `[out, in/groups, k, k]` (PyTorch `nn.Conv2d`).
    Conv2d {
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Square kernel size.
        kernel_size: usize,
        /// Stride.
        #[serde(default = "one")]
        stride: usize,
        /// Zero padding on each side.
        #[serde(default)]
        padding: usize,
        /// Spacing between kernel taps.
        #[serde(default = "one")]
        dilation: usize,
        /// Groups (1, or `in_channels` for depthwise).
        #[serde(default = "one")]
        groups: usize,
        /// Whether there is a bias.
        #[serde(default = "yes")]
        bias: bool,
    },
    /// Batch normalisation over channels of NCHW (PyTorch `nn.BatchNorm2d`).
    BatchNorm2d {
        /// Channels.
        num_features: usize,
        /// Added to the variance.
        #[serde(default = "bn_eps")]
        eps: f32,
        /// Running-statistics momentum (PyTorch convention).
        #[serde(default = "bn_momentum")]
        momentum: f32,
    },
    /// Layer normalisation over the last dimension (PyTorch `nn.LayerNorm(normalized_shape)`).
    LayerNorm {
        /// Size of the normalised (last) dimension.
        normalized_shape: usize,
        /// Added to the variance.
        #[serde(default = "ln_eps")]
        eps: f32,
    },
    /// `max(x, 0)`.
    Relu,
    /// `x` if positive else `negative_slope · x`.
    LeakyRelu {
        /// Slope for negative inputs.
        #[serde(default = "leaky_slope")]
        negative_slope: f32,
    },
    /// Gaussian error linear unit (exact, erf form).
    Gelu,
    /// `x · sigmoid(x)`.
    Silu,
    /// Logistic sigmoid.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// Inverted dropout (identity at inference).
    Dropout {
        /// Probability of zeroing an element while training.
        p: f32,
    },
    /// Flattens all dimensions after the first.
    Flatten,
    /// Mean over H and W of NCHW, giving `[N, C]` (or `[N, C, 1, 1]` with `keep_dims`).
    GlobalAvgPool {
        /// Keep the pooled axes as size 1 (ONNX `GlobalAveragePool`).
        #[serde(default)]
        keep_dims: bool,
    },
    /// Max pooling with a square window (no padding).
    MaxPool2d {
        /// Window size.
        kernel_size: usize,
        /// Stride (defaults to the window size).
        #[serde(default)]
        stride: Option<usize>,
        /// Padding on each side (padded cells never win).
        #[serde(default)]
        padding: usize,
    },
    /// ×2 spatial upsampling of NCHW.
    Upsample2x {
        /// `nearest` or `bilinear` (bilinear uses `align_corners = false`).
        #[serde(default)]
        mode: UpsampleMode,
    },
    /// Softmax over one dimension, applied at inference only (losses take logits).
    Softmax {
        /// The dimension (negative counts from the end; `1` for per-pixel classes of NCHW).
        #[serde(default = "minus_one")]
        dim: i64,
    },
}

/// Interpolation of [`LayerSpec::Upsample2x`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpsampleMode {
    /// Nearest neighbour.
    #[default]
    Nearest,
    /// Bilinear, `align_corners = false`.
    Bilinear,
}

/// What a head is trained for: its loss and the size of its output's channel axis (axis 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "loss", rename_all = "snake_case")]
pub enum TaskSpec {
    /// Multi-class classification (per pixel when the output is NCHW) with cross-entropy on
    /// logits; labels are class indices.
    CrossEntropy {
        /// Number of classes.
        classes: usize,
        /// Per-class weights (PyTorch `weight`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        class_weights: Option<Vec<f32>>,
        /// Label smoothing ε in [0, 1).
        #[serde(default, skip_serializing_if = "is_zero")]
        label_smoothing: f32,
        /// Labels equal to this are ignored (per sample or per pixel).
        #[serde(default = "ignore_index")]
        ignore_index: i64,
    },
    /// Multi-label classification with BCE-with-logits; labels are 0/1 (or soft) floats.
    Bce {
        /// Number of labels.
        labels: usize,
        /// Weight of positive examples per label (PyTorch `pos_weight`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pos_weight: Option<Vec<f32>>,
    },
    /// Regression with mean squared error.
    Mse {
        /// Output size.
        outputs: usize,
    },
    /// Regression with mean absolute error.
    L1 {
        /// Output size.
        outputs: usize,
    },
    /// Regression with the Huber loss (PyTorch `HuberLoss(delta)`).
    Huber {
        /// Output size.
        outputs: usize,
        /// Transition point between quadratic and linear.
        #[serde(default = "one_f")]
        delta: f32,
    },
    /// Regression with smooth-L1 (PyTorch `SmoothL1Loss(beta)`: Huber divided by β).
    SmoothL1 {
        /// Output size.
        outputs: usize,
        /// Transition point between quadratic and linear.
        #[serde(default = "one_f")]
        beta: f32,
    },
}

impl TaskSpec {
    /// The size of the output's channel axis (classes, labels or outputs).
    pub fn channels(&self) -> usize {
        match *self {
            TaskSpec::CrossEntropy { classes, .. } => classes,
            TaskSpec::Bce { labels, .. } => labels,
            TaskSpec::Mse { outputs }
            | TaskSpec::L1 { outputs }
            | TaskSpec::Huber { outputs, .. }
            | TaskSpec::SmoothL1 { outputs, .. } => outputs,
        }
    }

    /// True for cross-entropy (labels are class indices, not values).
    pub fn is_classification(&self) -> bool {
        matches!(self, TaskSpec::CrossEntropy { .. })
    }

    /// The loss's name on the command line and in reports (`ce`, `bce`, `mse`, `l1`, `huber`,
    /// `smooth_l1`).
    pub fn loss_name(&self) -> &'static str {
        match self {
            TaskSpec::CrossEntropy { .. } => "ce",
            TaskSpec::Bce { .. } => "bce",
            TaskSpec::Mse { .. } => "mse",
            TaskSpec::L1 { .. } => "l1",
            TaskSpec::Huber { .. } => "huber",
            TaskSpec::SmoothL1 { .. } => "smooth_l1",
        }
    }

    /// A task for `loss` (one of [`TaskSpec::loss_name`]'s names) on `channels` outputs, with
    /// default options.
    pub fn from_loss_name(loss: &str, channels: usize) -> Result<TaskSpec> {
        Ok(match loss {
            "ce" | "cross_entropy" => TaskSpec::CrossEntropy {
                classes: channels,
                class_weights: None,
                label_smoothing: 0.0,
                ignore_index: ignore_index(),
            },
            "bce" => TaskSpec::Bce { labels: channels, pos_weight: None },
            "mse" => TaskSpec::Mse { outputs: channels },
            "l1" => TaskSpec::L1 { outputs: channels },
            "huber" => TaskSpec::Huber { outputs: channels, delta: 1.0 },
            "smooth_l1" => TaskSpec::SmoothL1 { outputs: channels, beta: 1.0 },
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "loss `{loss}`: expected ce, bce, mse, l1, huber or smooth_l1"
                )))
            }
        })
    }

    /// Checks the options: sizes positive, weights finite and of the right length, ε in [0, 1),
    /// δ and β positive.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |why: String| Err(Error::InvalidArgument(format!("{} task: {why}", self.loss_name())));
        let n = self.channels();
        if !(1..=MAX_LAYER_SIZE).contains(&n) {
            return bad(format!("size {n} out of range"));
        }
        let weights_ok = |w: &Option<Vec<f32>>| {
            w.as_ref().is_none_or(|w| w.len() == n && w.iter().all(|x| x.is_finite() && *x >= 0.0))
        };
        match self {
            TaskSpec::CrossEntropy { class_weights, label_smoothing, .. } => {
                if !weights_ok(class_weights) {
                    return bad(format!("class_weights must be {n} finite values ≥ 0"));
                }
                if !(0.0..1.0).contains(label_smoothing) {
                    return bad(format!("label_smoothing {label_smoothing} must be in [0, 1)"));
                }
            }
            TaskSpec::Bce { pos_weight, .. } if !weights_ok(pos_weight) => {
                return bad(format!("pos_weight must be {n} finite values ≥ 0"));
            }
            TaskSpec::Huber { delta: t, .. } | TaskSpec::SmoothL1 { beta: t, .. }
                if !(*t > 0.0 && t.is_finite()) =>
            {
                return bad(format!("transition point {t} must be > 0"));
            }
            _ => {}
        }
        Ok(())
    }
}

fn ignore_index() -> i64 {
    -100
}

fn is_zero(x: &f32) -> bool {
    *x == 0.0
}

/// A trainable head: its name, the trunk tensor it reads, its layers and its task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadSpec {
    /// Head name (the prefix of its tensors' names).
    pub name: String,
    /// The trunk tensor(s) the head reads (one for a layer-list head).
    pub inputs: Vec<String>,
    /// Output tensor names (defaults to the head name).
    #[serde(default)]
    pub outputs: Vec<String>,
    /// The layers, applied in order.
    pub layers: Vec<LayerSpec>,
    /// What the head is trained for, when known.
    #[serde(default)]
    pub task: Option<TaskSpec>,
}

impl LayerSpec {
    /// The layer's name in the file format (`linear`, `conv2d`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            LayerSpec::Linear { .. } => "linear",
            LayerSpec::Conv2d { .. } => "conv2d",
            LayerSpec::BatchNorm2d { .. } => "batch_norm2d",
            LayerSpec::LayerNorm { .. } => "layer_norm",
            LayerSpec::Relu => "relu",
            LayerSpec::LeakyRelu { .. } => "leaky_relu",
            LayerSpec::Gelu => "gelu",
            LayerSpec::Silu => "silu",
            LayerSpec::Sigmoid => "sigmoid",
            LayerSpec::Tanh => "tanh",
            LayerSpec::Dropout { .. } => "dropout",
            LayerSpec::Flatten => "flatten",
            LayerSpec::GlobalAvgPool { .. } => "global_avg_pool",
            LayerSpec::MaxPool2d { .. } => "max_pool2d",
            LayerSpec::Upsample2x { .. } => "upsample2x",
            LayerSpec::Softmax { .. } => "softmax",
        }
    }

    /// Checks hyper-parameters: sizes positive and bounded, probabilities in range, groups
    /// dividing the channels.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |why: String| Err(Error::InvalidArgument(format!("{} layer: {why}", self.kind())));
        let size_ok = |n: usize| (1..=MAX_LAYER_SIZE).contains(&n);
        match *self {
            LayerSpec::Linear { in_features, out_features, .. }
                if (!size_ok(in_features) || !size_ok(out_features)) =>
            {
                return bad(format!("sizes {in_features} → {out_features} out of range"));
            }
            LayerSpec::Conv2d {
                in_channels,
                out_channels,
                kernel_size,
                stride,
                dilation,
                groups,
                padding,
                ..
            } => {
                let small = |n: usize| (1..=MAX_KERNEL).contains(&n);
                if !size_ok(in_channels) || !size_ok(out_channels) {
                    return bad(format!("channels {in_channels} → {out_channels} out of range"));
                }
                if !small(kernel_size) || !small(stride) || !small(dilation) || padding > MAX_KERNEL
                {
                    return bad(format!(
                        "kernel {kernel_size}, stride {stride}, dilation {dilation}, padding                          {padding}: each must be in 1..={MAX_KERNEL} (padding 0..={MAX_KERNEL})"
                    ));
                }
                if groups == 0 || in_channels % groups != 0 || out_channels % groups != 0 {
                    return bad(format!(
                        "groups {groups} must divide both {in_channels} and {out_channels}"
                    ));
                }
            }
            LayerSpec::BatchNorm2d { num_features, eps, momentum }
                if (!size_ok(num_features)
                    || !is_positive(eps)
                    || !(0.0..=1.0).contains(&momentum)) =>
            {
                return bad(format!("num_features {num_features}, eps {eps}, momentum {momentum}"));
            }
            LayerSpec::LayerNorm { normalized_shape, eps }
                if (!size_ok(normalized_shape) || !is_positive(eps)) =>
            {
                return bad(format!("normalized_shape {normalized_shape}, eps {eps}"));
            }
            LayerSpec::LeakyRelu { negative_slope } if !negative_slope.is_finite() => {
                return bad(format!("negative_slope {negative_slope}"));
            }
            LayerSpec::Dropout { p } if !(0.0..1.0).contains(&p) => {
                return bad(format!("p = {p} must be in [0, 1)"));
            }
            LayerSpec::MaxPool2d { kernel_size, stride, padding } => {
                let s = stride.unwrap_or(kernel_size);
                if !(1..=MAX_KERNEL).contains(&kernel_size)
                    || !(1..=MAX_KERNEL).contains(&s)
                    || 2 * padding > kernel_size
                {
                    return bad(format!(
                        "kernel {kernel_size}, stride {s}, padding {padding} (padding at most                          half the kernel)"
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Names of the layer's learnable tensors, in PyTorch `state_dict` order.
    pub fn param_names(&self) -> &'static [&'static str] {
        match self {
            LayerSpec::Linear { bias: true, .. } | LayerSpec::Conv2d { bias: true, .. } => {
                &["weight", "bias"]
            }
            LayerSpec::Linear { bias: false, .. } | LayerSpec::Conv2d { bias: false, .. } => {
                &["weight"]
            }
            LayerSpec::BatchNorm2d { .. } | LayerSpec::LayerNorm { .. } => &["weight", "bias"],
            _ => &[],
        }
    }
}

/// Largest channel or feature count a layer may declare.
pub const MAX_LAYER_SIZE: usize = 1 << 20;
/// Largest kernel size, stride, dilation or padding a layer may declare.
pub const MAX_KERNEL: usize = 64;

fn minus_one() -> i64 {
    -1
}

fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn one_f() -> f32 {
    1.0
}
fn bn_eps() -> f32 {
    1e-5
}
fn bn_momentum() -> f32 {
    0.1
}
fn ln_eps() -> f32 {
    1e-5
}
fn leaky_slope() -> f32 {
    0.01
}

/// Longest head or tensor name accepted.
pub const MAX_NAME_LEN: usize = 256;
/// Most layers a head may have.
pub const MAX_LAYERS: usize = 1024;

impl HeadSpec {
    /// A head called `name` reading trunk tensor `input`, with `layers` and an optional task.
    pub fn new(
        name: &str,
        input: &str,
        layers: Vec<LayerSpec>,
        task: Option<TaskSpec>,
    ) -> HeadSpec {
        HeadSpec {
            name: name.to_string(),
            inputs: vec![input.to_string()],
            outputs: vec![name.to_string()],
            layers,
            task,
        }
    }

    /// The name of the head's output tensor (its first output, else the head name).
    pub fn output(&self) -> &str {
        self.outputs.first().unwrap_or(&self.name)
    }

    /// The trunk tensor the head reads.
    pub fn input(&self) -> &str {
        self.inputs.first().map_or("", String::as_str)
    }

    /// Checks names, the layer list and the task (shapes are checked when an input shape is
    /// known).
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(Error::InvalidArgument(format!("head `{}`: {why}", self.name)));
        let name_ok = |n: &str| !n.is_empty() && n.len() <= MAX_NAME_LEN && !n.contains('\0');
        if !name_ok(&self.name) {
            return bad(format!("a head name must be 1..={MAX_NAME_LEN} characters"));
        }
        if self.inputs.len() != 1 || !name_ok(&self.inputs[0]) {
            return bad(format!(
                "a trainable head reads exactly one trunk tensor, this one lists {:?}",
                self.inputs
            ));
        }
        if self.outputs.len() > 1 || self.outputs.iter().any(|o| !name_ok(o)) {
            return bad(format!(
                "a trainable head has one output, this one lists {:?}",
                self.outputs
            ));
        }
        if self.layers.is_empty() || self.layers.len() > MAX_LAYERS {
            return bad(format!("{} layers (expected 1..={MAX_LAYERS})", self.layers.len()));
        }
        for (i, l) in self.layers.iter().enumerate() {
            l.validate().or_else(|e| bad(format!("layer {i}: {e}")))?;
        }
        if let Some(t) = &self.task {
            t.validate().or_else(|e| bad(e.to_string()))?;
        }
        Ok(())
    }
}

/// True for finite values above zero (false for NaN).
pub(crate) fn is_positive(x: f32) -> bool {
    x > 0.0 && x.is_finite()
}
