//! Training heads on the device: architecture descriptions, layers with forward and backward,
//! losses, optimizers, multi-task weighting and the trainer.

pub mod spec;

pub use spec::{HeadSpec, LayerSpec, TaskSpec, UpsampleMode};
