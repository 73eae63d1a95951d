//! The model graph: loading ONNX into a validated, indexed form ([`OnnxGraph`]) and cutting it into
//! trunk and head segments ([`split`]).

pub(crate) mod bounds;
pub(crate) mod build;
pub(crate) mod limits;
mod onnx;
pub mod split;

pub use limits::DEFAULT_MAX_BYTES;

pub(crate) use onnx::all_inputs;
pub(crate) use onnx::dtype_to_onnx as onnx_dtype;
pub use onnx::{Dim, OnnxGraph, TensorSpec};
pub use split::{HeadPart, Split, TrunkSegment};
