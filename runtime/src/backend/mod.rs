//! Execution backends. Each runs graph segments; the CPU backend uses tract, the CUDA backend
//! (feature `cuda`) hydrant's own kernels and cuBLAS. [`device`] decides which one a model uses.

pub mod cpu;
pub mod cpu_ops;
pub mod cuda;
pub mod device;
pub mod profile;
pub(crate) mod rows;
