//! Training heads on the device: architecture descriptions, layers with forward and backward,
//! losses, optimizers, multi-task weighting and the trainer.
//!
//! The trunk stays frozen: its features are computed once per sample and cached; epochs touch
//! only the heads. Layers compute in a [`Real`] type — f32 for training, f64 for the
//! finite-difference checks of every gradient.

pub mod array;
pub mod cache;
pub mod data;
pub mod device;
pub mod dot;
pub mod head;
pub mod import;
pub mod layers;
pub mod loss;
pub mod metrics;
pub mod network;
pub mod optim;
pub mod real;
pub mod spec;
pub mod trainer;
pub mod trunk;
pub mod weighting;

pub use array::Array;
pub use cache::FeatureCache;
pub use data::Labels;
pub use device::{choose_trainer, DeviceTrainer, TrainJob, TrainerChoice, TrainerKind};
pub use head::{Head, Init};
pub use import::NotTrainable;
pub use metrics::TaskMetrics;
pub use network::Network;
pub use optim::{OptimizerSpec, Schedule};
pub use real::Real;
pub use spec::{HeadSpec, LayerSpec, TaskSpec, UpsampleMode};
pub use trainer::{EarlyStopping, EpochReport, TrainOptions, Trainer};
pub use trunk::{Residual, Trunk, TrunkLayer, TrunkSpec};
pub use weighting::{Alternation, Weighting};
