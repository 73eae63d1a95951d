//! The CUDA backend: hydrant's kernels (crate `hydrant-kernels`) compiled by NVRTC for the
//! device's compute capability, cuBLAS for matrix products.
//!
//! The planning half is plain Rust, built and tested everywhere: [`ir`] (the planner's view of a
//! segment), [`consts`] (constant tensors read on the host), [`fallback`] (which ops run on the GPU, else where and why), [`fusion`] (which nodes
//! become one launch), [`memory`] (buffer reuse by liveness), [`geometry`] (grids and blocks),
//! [`ptx_cache`] (compiled PTX kept on disk), [`train_plan`] (shapes and options of head
//! training on the device).
//! The executing half needs the `cuda` feature: [`probe`] (driver and devices; nothing touches
//! the driver before the driver library is known to load, as cudarc panics without it),
//! [`context`] (device, stream, cuBLAS, NVRTC module cache) and [`exec`] (device tensors, one
//! method per kernel, and the segment runner), [`train`] (head training on the device).

pub mod consts;
pub mod fallback;
pub mod fold;
pub mod fusion;
pub mod geometry;
pub mod ir;
pub mod memory;
pub mod ptx_cache;
pub mod train_plan;

#[cfg(feature = "cuda")]
pub mod context;
#[cfg(feature = "cuda")]
pub mod exec;
#[cfg(feature = "cuda")]
mod probe;
#[cfg(feature = "cuda")]
pub mod train;
#[cfg(feature = "cuda")]
pub(crate) use probe::probe;
