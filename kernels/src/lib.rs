//! CUDA C sources of hydrant's GPU kernels, exposed as strings for NVRTC.
//!
//! Each [`Module`] is one `.cu` file of `src/`; [`Module::source`] prepends the shared header
//! `common.cuh` (storage types, activations, reductions), so a module compiles on its own with
//! no include resolution beyond the CUDA headers `cuda_fp16.h` and `cuda_bf16.h`. Typed kernels
//! exist once per storage type, suffixed `_f32`, `_f16`, `_bf16` ([`Storage`]); arithmetic is f32.

/// The shared header prepended to every module.
pub const COMMON: &str = include_str!("common.cuh");

/// Element type of tensors in device memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Storage {
    /// 32-bit float.
    F32,
    /// IEEE half (`__half`).
    F16,
    /// bfloat16 (`__nv_bfloat16`).
    Bf16,
}

impl Storage {
    /// Every storage type.
    pub const ALL: [Storage; 3] = [Storage::F32, Storage::F16, Storage::Bf16];

    /// The suffix of kernel names for this type.
    pub fn suffix(self) -> &'static str {
        match self {
            Storage::F32 => "f32",
            Storage::F16 => "f16",
            Storage::Bf16 => "bf16",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Storage::F32 => 4,
            Storage::F16 | Storage::Bf16 => 2,
        }
    }
}

/// One kernel source file and the entry points it defines.
#[derive(Debug, Clone, Copy)]
pub struct Module {
    /// Module name (the file name without `.cu`).
    pub name: &'static str,
    /// The file's text (without [`COMMON`]).
    pub body: &'static str,
    /// Kernels defined for every [`Storage`] type, by base name (`conv2d_igemm` gives
    /// `conv2d_igemm_f32`, `conv2d_igemm_f16`, `conv2d_igemm_bf16`).
    pub typed: &'static [&'static str],
    /// Kernels defined once, by full name.
    pub plain: &'static [&'static str],
}

impl Module {
    /// The source to compile: [`COMMON`] then the module's file.
    pub fn source(&self) -> String {
        format!("{COMMON}\n// ---- {}.cu ----\n{}", self.name, self.body)
    }

    /// Every entry point's full name.
    pub fn entry_points(&self) -> Vec<String> {
        let typed = self.typed.iter().flat_map(|b| Storage::ALL.map(|s| typed_name(b, s)));
        typed.chain(self.plain.iter().map(|p| p.to_string())).collect()
    }
}

/// The full name of typed kernel `base` for `storage`.
pub fn typed_name(base: &str, storage: Storage) -> String {
    format!("{base}_{}", storage.suffix())
}

/// Every kernel module.
pub const MODULES: &[Module] = &[
    Module {
        name: "conv2d",
        body: include_str!("conv2d.cu"),
        typed: &["conv2d_direct", "conv2d_igemm"],
        plain: &[],
    },
    Module {
        name: "pool",
        body: include_str!("pool.cu"),
        typed: &["maxpool2d", "avgpool2d", "global_avgpool"],
        plain: &[],
    },
    Module {
        name: "norm",
        body: include_str!("norm.cu"),
        typed: &["softmax_rows", "layernorm_rows", "scale_shift_channels"],
        plain: &[],
    },
    Module {
        name: "tensor",
        body: include_str!("tensor.cu"),
        typed: &[
            "concat_copy",
            "resize_nearest",
            "resize_bilinear",
            "add_act",
            "bias_act_rows",
            "columns_act",
        ],
        plain: &[
            "convert_f32_to_f16",
            "convert_f16_to_f32",
            "convert_f32_to_bf16",
            "convert_bf16_to_f32",
        ],
    },
    Module { name: "gemm", body: include_str!("gemm.cu"), typed: &["gemm_tiled"], plain: &[] },
    Module { name: "loss", body: include_str!("loss.cu"), typed: &["softmax_xent"], plain: &[] },
    Module {
        name: "optim",
        body: include_str!("optim.cu"),
        typed: &[],
        plain: &["adamw_f32", "sgd_momentum_f32"],
    },
    Module {
        name: "backward",
        body: include_str!("backward.cu"),
        typed: &[
            "act_backward",
            "bias_grad_rows",
            "bias_grad_channels",
            "im2col",
            "col2im",
            "maxpool2d_backward",
            "global_avgpool_backward",
            "upsample_nearest_backward",
        ],
        plain: &[],
    },
    Module {
        name: "train",
        body: include_str!("train.cu"),
        typed: &[],
        plain: &[
            "batchnorm_forward_f32",
            "batchnorm_backward_f32",
            "layernorm_forward_f32",
            "layernorm_backward_f32",
            "layernorm_param_grads_f32",
            "dropout_forward_f32",
            "mul_f32",
            "scale_f32",
            "act_forward_f32",
            "sum_squares_f32",
            "upsample_bilinear2x_backward_f32",
            "softmax_axis_f32",
            "softmax_xent_axis_f32",
            "swap01_f32",
            "gather_rows_f32",
        ],
    },
];

/// The module defining entry point `entry`, if any.
pub fn module_of(entry: &str) -> Option<&'static Module> {
    MODULES.iter().find(|m| m.entry_points().iter().any(|e| e == entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_are_unique_and_found_by_name() {
        let all: Vec<String> = MODULES.iter().flat_map(|m| m.entry_points()).collect();
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len());
        assert_eq!(module_of("conv2d_igemm_bf16").map(|m| m.name), Some("conv2d"));
        assert_eq!(module_of("adamw_f32").map(|m| m.name), Some("optim"));
        assert!(module_of("conv2d_igemm_f64").is_none());
    }

    #[test]
    fn sources_start_with_the_shared_header() {
        for m in MODULES {
            let s = m.source();
            assert!(s.starts_with(COMMON) && s.ends_with(m.body), "{}", m.name);
        }
    }
}
