//! # hydrant
//!
//! An embeddable runtime for multi-task neural networks. A model exported from PyTorch with a
//! shared **trunk** and several task **heads** is loaded from ONNX, split by itself into trunk and
//! heads, and run so that the trunk is computed once per input and only the heads asked for run.
//!
//! ```no_run
//! use hydrant::{LoadOptions, Model, Tensor};
//! let model = Model::load("hydranet.onnx", LoadOptions::new())?;
//! let image = Tensor::zeros::<f32>(&[1, 3, 32, 32])?;
//! // One trunk pass, one head.
//! let out = model.run(&[("image", &image)], &["cls"])?;
//! // Keep trunk features; run another head later on them.
//! let features = model.trunk(&[("image", &image)])?;
//! let seg = model.heads(&features, &["seg"])?;
//! # Ok::<(), hydrant::Error>(())
//! ```

pub mod backend;
pub mod error;
pub mod fsutil;
pub mod graph;
pub mod heads;
pub mod model;
pub mod npy;
pub mod safetensors_check;
pub mod tensor;
pub mod train;

pub use backend::profile::NodeTime;
pub use error::{Error, Result};
pub use graph::{Dim, Split, TensorSpec};
pub use heads::HeadSet;
pub use model::{Device, Features, LoadOptions, Model, Outputs, PartStats, Precision, Summary};
pub use npy::{read_npy, write_npy};
pub use safetensors_check::SafetensorsLimits;
pub use tensor::{DType, Tensor, TensorData};
pub use train::{Head, HeadSpec, Labels, LayerSpec, TaskSpec, TrainOptions, Trainer};
