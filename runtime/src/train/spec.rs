//! Architecture descriptions of trainable heads: what `hydrant.heads` metadata holds (see
//! docs/FORMAT.md). These are plain data (serde); weights live beside them as named tensors
//! following PyTorch `state_dict` names: `<head>.<layer index>.<param>`.

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
    /// Mean over H and W of NCHW, giving `[N, C]`.
    GlobalAvgPool,
    /// Max pooling with a square window (no padding).
    MaxPool2d {
        /// Window size.
        kernel_size: usize,
        /// Stride (defaults to the window size).
        #[serde(default)]
        stride: Option<usize>,
    },
    /// ×2 spatial upsampling of NCHW.
    Upsample2x {
        /// `nearest` or `bilinear` (bilinear uses `align_corners = false`).
        #[serde(default)]
        mode: UpsampleMode,
    },
    /// Softmax over the last (class) dimension, applied at inference only (losses take logits).
    Softmax,
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

/// What a head is trained for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "loss", rename_all = "snake_case")]
pub enum TaskSpec {
    /// Multi-class classification (per pixel when the output is NCHW) with cross-entropy.
    CrossEntropy {
        /// Number of classes.
        classes: usize,
    },
    /// Multi-label classification with BCE-with-logits.
    Bce {
        /// Number of labels.
        labels: usize,
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
    /// Regression with Huber / smooth-L1 loss.
    Huber {
        /// Output size.
        outputs: usize,
        /// Transition point between quadratic and linear.
        #[serde(default = "one_f")]
        delta: f32,
    },
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
