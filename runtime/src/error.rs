//! The one error type of the `hydrant` crate.
//!
//! Every variant names what was wrong (the file, node, tensor, head or shape involved) so that a
//! message alone is enough to act on. Each variant maps to one stable [`Error::code`], which the C
//! ABI exposes as its status code.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in hydrant.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A model file is not a well-formed model (bad protobuf, missing graph, cycles, dangling inputs…).
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// A node uses an operator hydrant cannot run.
    #[error("unsupported op `{op_type}` in node `{node}`")]
    UnsupportedOp {
        /// Name of the node.
        node: String,
        /// ONNX operator type (with its domain when not the default one).
        op_type: String,
    },
    /// A head name that the model does not have.
    #[error("unknown head `{name}` (the model has: {available})")]
    UnknownHead {
        /// The name asked for.
        name: String,
        /// Comma-separated names of the model's heads.
        available: String,
    },
    /// A tensor name that the model graph does not have (for example a cut point).
    #[error("unknown tensor `{0}` in the model graph")]
    UnknownTensor(String),
    /// An input is missing, unknown, or has the wrong shape or data type.
    #[error("input `{name}`: {reason}")]
    BadInput {
        /// The input's name.
        name: String,
        /// What is wrong with it, with the shapes or types involved.
        reason: String,
    },
    /// A tensor's shape and data do not agree, or a shape is not acceptable.
    #[error("bad tensor: {0}")]
    BadTensor(String),
    /// A `.npy` file is malformed or unsupported.
    #[error("{path}: invalid .npy file: {reason}")]
    Npy {
        /// The file involved (empty for in-memory data).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Trunk features lack a tensor a head needs.
    #[error("features do not contain `{0}`, which the requested head needs")]
    MissingFeature(String),
    /// A value outside what an option accepts.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A head cannot be trained (an op outside the trainable vocabulary, several inputs…).
    #[error("head `{head}` is not trainable: {reason}")]
    NotTrainable {
        /// The head.
        head: String,
        /// What prevents it (the node and op, when one does).
        reason: String,
    },
    /// The inference engine failed while preparing or running a segment.
    #[error("{segment}: {message}")]
    Backend {
        /// Which segment (trunk part or head) was being prepared or run.
        segment: String,
        /// The engine's message.
        message: String,
    },
}

impl Error {
    /// A stable small integer per variant (the C ABI's status codes; 0 is success).
    pub fn code(&self) -> i32 {
        match self {
            Error::Io { .. } => 1,
            Error::InvalidModel(_) => 2,
            Error::UnsupportedOp { .. } => 3,
            Error::UnknownHead { .. } => 4,
            Error::UnknownTensor(_) => 5,
            Error::BadInput { .. } => 6,
            Error::BadTensor(_) => 7,
            Error::Npy { .. } => 8,
            Error::MissingFeature(_) => 9,
            Error::InvalidArgument(_) => 10,
            Error::Backend { .. } => 11,
            Error::NotTrainable { .. } => 12,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }

    pub(crate) fn backend(segment: impl Into<String>, e: impl std::fmt::Display) -> Error {
        // tract's errors carry a context chain; `{:#}` prints all of it on one line.
        Error::Backend { segment: segment.into(), message: format!("{e:#}") }
    }
}
