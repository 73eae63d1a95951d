//! hydrant's own CPU ops, substituted into tract's typed graph where they beat tract's.
//!
//! [`patch`] runs on a segment's decluttered model, before tract optimizes it: it replaces every
//! ungrouped convolution it can (with its bias, and a residual `Add` and a `Relu` that follow
//! it) by a [`WinogradConv`](winograd::WinogradConv) (stride-1 3×3) or an
//! [`Im2colConv`](im2col_conv::Im2colConv) (other strides and kernels; not 1×1, nor strided 3×3
//! with 64+ input channels without AVX-512, where tract computes them faster). The rest of the graph is optimized by
//! tract as before. 3×3 depthwise convolutions (stride 1 or 2) become
//! a [`DepthwiseConv`](depthwise::DepthwiseConv), with a following ReLU or ReLU6 fused, and 2-D
//! max poolings a [`MaxPool2d`](maxpool::MaxPool2d).
//! [`patch_pointwise`] runs earlier, before tract's declutter, and replaces unpadded stride-1
//! 1×1 convolutions (with a residual `Add` and ReLU/ReLU6 after them) by a
//! [`PointwiseConv`](pointwise::PointwiseConv) (see [`fuse`] for why before declutter).
//!
//! Kernels are chosen at run time ([`Isa`]): AVX-512F or AVX2+FMA on x86_64, a portable path
//! (auto-vectorised, the one used on aarch64) elsewhere. `HYDRANT_CPU_OPS=off` (or
//! [`LoadOptions::own_cpu_ops(false)`](crate::LoadOptions::own_cpu_ops)) runs tract's ops only;
//! `HYDRANT_CPU_ISA=portable|avx2|avx512` caps the kernel choice (for comparisons and tests).

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub(crate) mod copy;
pub mod depthwise;
#[cfg(target_arch = "x86_64")]
mod depthwise_avx2;
#[cfg(target_arch = "x86_64")]
mod depthwise_avx512;
mod depthwise_lanes;
pub mod fuse;
pub(crate) mod gemm;
pub mod im2col_conv;
pub mod maxpool;
pub(crate) mod parallel;
mod plane_op;
pub mod pointwise;
pub mod probe;
mod scratch;
pub(crate) mod spin_pool;
pub(crate) mod winograd;
pub(crate) mod winograd_transform;

pub(crate) use fuse::{patch, patch_pointwise};

/// Defines `pub fn $name(isa: Isa, args…)` calling `$body(args…)` compiled for that ISA: the
/// same portable code, auto-vectorised with AVX2+FMA where the CPU has it (also for
/// `Isa::Avx512`: these loops run over one tile row, 4–56 values, where 512-bit vectors lose
/// more to remainders than they gain; measured slower). `$body` must be `#[inline(always)]` so
/// that it is compiled inside each variant.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident : $t:ty),* $(,)?) => $body:path) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(isa: $crate::backend::cpu_ops::Isa, $($a: $t),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($a: $t),*) {
                    $body($($a),*)
                }
                if isa != $crate::backend::cpu_ops::Isa::Portable {
                    // SAFETY: `Isa::Avx512` and `Isa::Avx2` are only handed out where the CPU
                    // has AVX2 and FMA (`Isa::available`).
                    return unsafe { avx2($($a),*) };
                }
            }
            let _ = isa;
            $body($($a),*)
        }
    };
}
pub(crate) use multiversion;

/// The clamp a fused op applies last: `min(max(x, lo), hi)`. ReLU is `lo = 0`; ReLU6 (ONNX
/// `Clip(0, 6)`, a `Max` then a `Min` with constants in tract's graph) also has `hi = 6`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Activation {
    /// Lower bound (`-∞`: none).
    pub lo: f32,
    /// Upper bound (`+∞`: none).
    pub hi: f32,
}

impl Activation {
    /// No clamp.
    pub const NONE: Activation = Activation { lo: f32::NEG_INFINITY, hi: f32::INFINITY };
    /// `max(x, 0)`.
    pub const RELU: Activation = Activation { lo: 0.0, hi: f32::INFINITY };
    /// `min(max(x, 0), 6)`.
    pub const RELU6: Activation = Activation { lo: 0.0, hi: 6.0 };

    /// `x` clamped; a NaN stays NaN. Written as selects, which compile to one `maxps` and one
    /// `minps` (`f32::max` would drop the NaN and need a compare and a blend).
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        let x = if self.lo > x { self.lo } else { x };
        if self.hi < x {
            self.hi
        } else {
            x
        }
    }
}

/// Instruction sets the kernels are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust written to auto-vectorise; runs everywhere.
    Portable,
    /// x86_64 AVX2 with FMA.
    Avx2,
    /// x86_64 AVX-512F.
    Avx512,
}

impl Isa {
    /// Every ISA this CPU can run, fastest last.
    pub fn available() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                v.push(Isa::Avx2);
            }
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            if avx2 && is_x86_feature_detected!("avx512f") {
                v.push(Isa::Avx512);
            }
        }
        v
    }

    /// The fastest available ISA, capped by `HYDRANT_CPU_ISA` when it is set.
    pub fn best() -> Isa {
        let cap = match std::env::var("HYDRANT_CPU_ISA").as_deref() {
            Ok("portable") => Isa::Portable,
            Ok("avx2") => Isa::Avx2,
            _ => Isa::Avx512,
        };
        let rank = |i: Isa| i as u8;
        Isa::available().into_iter().rfind(|&i| rank(i) <= rank(cap)).unwrap_or(Isa::Portable)
    }
}

/// Whether hydrant's own ops are on: the load option if given, else `HYDRANT_CPU_OPS`
/// (`off`, `0` or `false` turn them off), else on.
pub(crate) fn enabled(option: Option<bool>) -> bool {
    option.unwrap_or_else(|| {
        !matches!(std::env::var("HYDRANT_CPU_OPS").as_deref(), Ok("off" | "0" | "false"))
    })
}

#[cfg(test)]
mod tests {
    use super::Activation;

    #[test]
    fn clamps_keep_nan_and_infinities_where_they_apply() {
        for act in [Activation::NONE, Activation::RELU, Activation::RELU6] {
            assert!(act.apply(f32::NAN).is_nan(), "{act:?}");
        }
        let none = Activation::NONE;
        assert_eq!(
            (none.apply(f32::NEG_INFINITY), none.apply(f32::INFINITY)),
            (f32::NEG_INFINITY, f32::INFINITY)
        );
        assert_eq!(
            (Activation::RELU.apply(-3.0), Activation::RELU.apply(f32::INFINITY)),
            (0.0, f32::INFINITY)
        );
        assert_eq!((Activation::RELU6.apply(-0.5), Activation::RELU6.apply(6.5)), (0.0, 6.0));
    }
}
