//! [`LoadOptions`], [`Device`] and [`Precision`]: how a model is loaded, where it runs and in
//! which element type the GPU stores its tensors.

use crate::error::{Error, Result};

/// Most intra-op threads a model accepts.
pub const MAX_THREADS: usize = 256;

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// A GPU when one is usable, else the CPU.
    #[default]
    Auto,
    /// The CPU (tract).
    Cpu,
    /// The CUDA device with this ordinal.
    Cuda(usize),
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Auto => f.write_str("auto"),
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = Error;
    fn from_str(s: &str) -> Result<Device> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            t => t.strip_prefix("cuda:").and_then(|n| n.parse().ok()).map(Device::Cuda).ok_or_else(
                || {
                    Error::InvalidArgument(format!(
                        "device `{s}`: expected auto, cpu, cuda or cuda:N"
                    ))
                },
            ),
        }
    }
}

/// The element type the GPU backend stores tensors and weights in (arithmetic is f32 in every
/// case). The CPU backend runs f32 only: a model loaded with f16 or bf16 on the CPU is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// 32-bit floats.
    #[default]
    F32,
    /// IEEE half floats (f32 accumulation).
    F16,
    /// bfloat16 (f32 accumulation).
    Bf16,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Precision> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(Precision::F16),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            _ => Err(Error::InvalidArgument(format!("precision `{s}`: expected f32, f16 or bf16"))),
        }
    }
}

/// Options for [`Model::load`](crate::Model::load).
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub(crate) threads: Option<usize>,
    pub(crate) cut_points: Vec<String>,
    pub(crate) device: Option<Device>,
    pub(crate) batch_as_rows: Option<bool>,
    pub(crate) max_bytes: Option<u64>,
    pub(crate) own_cpu_ops: Option<bool>,
    pub(crate) precision: Precision,
}

impl LoadOptions {
    /// Defaults: all cores, automatic split, automatic device.
    pub fn new() -> LoadOptions {
        LoadOptions::default()
    }

    /// Names the trunk tensors where heads attach; everything downstream of them becomes head(s).
    pub fn cut_at<S: Into<String>>(mut self, tensors: impl IntoIterator<Item = S>) -> LoadOptions {
        self.cut_points = tensors.into_iter().map(Into::into).collect();
        self
    }

    /// Intra-op threads (default: the machine's available parallelism).
    pub fn threads(mut self, n: usize) -> LoadOptions {
        self.threads = Some(n);
        self
    }

    /// The device to run on (default: `HYDRANT_DEVICE` — `auto`, `cpu`, `cuda` or `cuda:N` —
    /// else [`Device::Auto`]).
    pub fn device(mut self, device: Device) -> LoadOptions {
        self.device = Some(device);
        self
    }

    /// The element type of tensors on the GPU (default [`Precision::F32`]). f16 and bf16 need
    /// the CUDA backend: loading a model that runs on the CPU with them is an
    /// [`Error::InvalidArgument`]. Parts of a GPU model that fall back to the CPU run in f32.
    pub fn precision(mut self, precision: Precision) -> LoadOptions {
        self.precision = precision;
        self
    }

    /// Whether a batch of N runs as N batch-1 rows spread over the threads (`true`) or as one
    /// batch-N pass (`false`). Default: rows for models with convolutions, whose batch-N plans
    /// materialise im2col on one thread; one pass otherwise. Rows are used only when every
    /// tensor between segments carries the batch on axis 0 (checked once per model).
    pub fn batch_as_rows(mut self, rows: bool) -> LoadOptions {
        self.batch_as_rows = Some(rows);
        self
    }

    /// Whether hydrant's own CPU kernels (Winograd 3×3 convolutions with fused bias, residual
    /// and ReLU) replace tract's where they apply. Default: `HYDRANT_CPU_OPS` (`off`, `0` or
    /// `false` turn them off), else on.
    pub fn own_cpu_ops(mut self, on: bool) -> LoadOptions {
        self.own_cpu_ops = Some(on);
        self
    }

    /// Most bytes the model's stored tensors may declare, and the largest tensor any node may
    /// create (sizes computed by the graph from constants, and per plan from the concrete input
    /// shapes), checked before anything is allocated (default
    /// [`DEFAULT_MAX_BYTES`](crate::graph::DEFAULT_MAX_BYTES), 4 GiB).
    pub fn max_bytes(mut self, bytes: u64) -> LoadOptions {
        self.max_bytes = Some(bytes);
        self
    }

    pub(crate) fn byte_budget(&self) -> u64 {
        self.max_bytes.unwrap_or(crate::graph::DEFAULT_MAX_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_parses() {
        assert_eq!("cuda:2".parse::<Device>().unwrap(), Device::Cuda(2));
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda(0));
        assert_eq!("CUDA:1".parse::<Device>().unwrap(), Device::Cuda(1));
        assert_eq!("auto".parse::<Device>().unwrap(), Device::Auto);
        for bad in ["gpu", "cuda:", "cuda:-1", "cuda:x", "cuda1", ""] {
            let e = bad.parse::<Device>().unwrap_err();
            assert!(e.to_string().contains("expected auto, cpu, cuda or cuda:N"), "{bad}: {e}");
        }
    }

    #[test]
    fn precision_parses_and_prints() {
        assert_eq!(LoadOptions::new().precision, Precision::F32);
        for (text, p) in [
            ("f32", Precision::F32),
            ("F16", Precision::F16),
            (" bf16 ", Precision::Bf16),
            ("fp16", Precision::F16),
            ("bfloat16", Precision::Bf16),
        ] {
            assert_eq!(text.parse::<Precision>().unwrap(), p, "{text}");
        }
        for p in [Precision::F32, Precision::F16, Precision::Bf16] {
            assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
            assert_eq!(LoadOptions::new().precision(p).precision, p);
        }
        for bad in ["f64", "int8", "", "16"] {
            let e = bad.parse::<Precision>().unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{bad}: {e}");
            assert!(e.to_string().contains("expected f32, f16 or bf16"), "{bad}: {e}");
        }
    }

    #[test]
    fn device_prints_as_it_parses() {
        for d in [Device::Auto, Device::Cpu, Device::Cuda(0), Device::Cuda(7)] {
            assert_eq!(d.to_string().parse::<Device>().unwrap(), d);
        }
    }
}
