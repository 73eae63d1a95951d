//! Launch geometry: grid and block sizes for every kernel, from tensor shapes, within the
//! device's limits. Shapes travel to the kernels as `#[repr(C)]` structs of `i32`; sizes that do
//! not fit are refused here, before anything is launched.

use crate::error::{Error, Result};

/// One kernel launch: grid and block dimensions and dynamic shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    /// Blocks in x, y, z.
    pub grid: (u32, u32, u32),
    /// Threads per block in x, y, z.
    pub block: (u32, u32, u32),
    /// Dynamic shared memory per block, in bytes.
    pub shared_bytes: u32,
}

/// What the device allows (defaults: every CUDA device of compute capability 7.5 and later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most blocks in x.
    pub max_grid_x: u32,
    /// Most blocks in y and z.
    pub max_grid_yz: u32,
    /// Most threads per block.
    pub max_threads: u32,
    /// Streaming multiprocessors (grid-stride kernels launch a few blocks per SM).
    pub sm_count: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_grid_x: i32::MAX as u32,
            max_grid_yz: 65_535,
            max_threads: 1024,
            sm_count: 132,
        }
    }
}

/// Threads per block of element-wise and grid-stride kernels.
pub const ELEMENTWISE_BLOCK: u32 = 256;
/// Blocks per SM that grid-stride kernels launch at most.
const BLOCKS_PER_SM: u32 = 32;
/// Output tile of `conv2d_igemm` (channels × pixels), as in kernels/src/conv2d.cu.
pub const IGEMM_TILE: (u64, u64) = (64, 64);
/// Output tile of `gemm_tiled`, as in kernels/src/gemm.cu.
pub const GEMM_TILE: u64 = 16;

fn to_i32(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        Error::InvalidArgument(format!("{what} = {v} is too large for the GPU kernels"))
    })
}

fn blocks(total: u64, per: u64) -> u64 {
    total.div_ceil(per)
}

/// A grid-stride kernel over `total` elements.
pub fn elementwise(total: u64, limits: &Limits) -> Result<Launch> {
    if total == 0 {
        return Err(Error::InvalidArgument("a GPU launch over 0 elements".into()));
    }
    let cap = u64::from(limits.sm_count.max(1) * BLOCKS_PER_SM).min(u64::from(limits.max_grid_x));
    let grid = blocks(total, u64::from(ELEMENTWISE_BLOCK)).min(cap) as u32;
    Ok(Launch { grid: (grid, 1, 1), block: (ELEMENTWISE_BLOCK, 1, 1), shared_bytes: 0 })
}

/// One block per row of `len` elements (softmax, layer norm, global pooling, cross-entropy):
/// the block is `len` rounded up to a warp multiple, between 32 and 1024 (and the device limit).
pub fn rows(rows: u64, len: u64, limits: &Limits) -> Result<Launch> {
    if rows == 0 || len == 0 {
        return Err(Error::InvalidArgument(format!("a GPU launch over {rows} rows of {len}")));
    }
    if rows > u64::from(limits.max_grid_x) {
        return Err(Error::InvalidArgument(format!("{rows} rows exceed the GPU grid limit")));
    }
    let max = u64::from(limits.max_threads.min(1024)) / 32 * 32;
    let block = (len.div_ceil(32) * 32).clamp(32, max) as u32;
    Ok(Launch { grid: (rows as u32, 1, 1), block: (block, 1, 1), shared_bytes: 0 })
}

/// A 2-D convolution's shape, as the kernels read it (`HyConvShape` in kernels/src/common.cuh).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    /// Batch, input channels, height, width.
    pub n: i32,
    /// Input channels.
    pub c: i32,
    /// Input height.
    pub h: i32,
    /// Input width.
    pub w: i32,
    /// Output channels.
    pub oc: i32,
    /// Output height.
    pub oh: i32,
    /// Output width.
    pub ow: i32,
    /// Kernel height.
    pub kh: i32,
    /// Kernel width.
    pub kw: i32,
    /// Stride (height).
    pub sh: i32,
    /// Stride (width).
    pub sw: i32,
    /// Padding at the top (and bottom: symmetric padding only).
    pub ph: i32,
    /// Padding at the left (and right).
    pub pw: i32,
    /// Dilation (height).
    pub dh: i32,
    /// Dilation (width).
    pub dw: i32,
    /// Groups (`c` for depthwise).
    pub groups: i32,
}

/// Hyper-parameters of a convolution, as ONNX states them (symmetric padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvParams {
    /// Kernel (height, width).
    pub kernel: (usize, usize),
    /// Stride (height, width).
    pub stride: (usize, usize),
    /// Padding (height, width), the same on both sides.
    pub pad: (usize, usize),
    /// Dilation (height, width).
    pub dilation: (usize, usize),
    /// Groups.
    pub groups: usize,
}

fn out_size(what: &str, input: usize, k: usize, s: usize, p: usize, d: usize) -> Result<usize> {
    let span = d * (k - 1) + 1;
    if input + 2 * p < span {
        return Err(Error::InvalidArgument(format!(
            "{what}: window {span} exceeds the padded input {}",
            input + 2 * p
        )));
    }
    Ok((input + 2 * p - span) / s + 1)
}

impl ConvShape {
    /// The shape of a convolution of an `[n, c, h, w]` input into `oc` channels.
    pub fn new(input: [usize; 4], oc: usize, p: &ConvParams) -> Result<ConvShape> {
        let [n, c, h, w] = input;
        let bad = |m: String| Err(Error::InvalidArgument(format!("convolution: {m}")));
        let zero = [p.kernel.0, p.kernel.1, p.stride.0, p.stride.1, p.dilation.0, p.dilation.1];
        if zero.contains(&0) || p.groups == 0 || [n, c, h, w, oc].contains(&0) {
            return bad(format!("a zero size in input {input:?}, {oc} outputs, {p:?}"));
        }
        if !c.is_multiple_of(p.groups) || !oc.is_multiple_of(p.groups) {
            return bad(format!("{c} input and {oc} output channels in {} groups", p.groups));
        }
        let oh = out_size("convolution height", h, p.kernel.0, p.stride.0, p.pad.0, p.dilation.0)?;
        let ow = out_size("convolution width", w, p.kernel.1, p.stride.1, p.pad.1, p.dilation.1)?;
        let biggest =
            [n * c * h * w, n * oc * oh * ow, oc * (c / p.groups) * p.kernel.0 * p.kernel.1];
        for (what, v) in
            ["input elements", "output elements", "weight elements"].iter().zip(biggest)
        {
            to_i32(what, v)?;
        }
        let i = |what: &str, v: usize| to_i32(what, v);
        Ok(ConvShape {
            n: i("batch", n)?,
            c: i("channels", c)?,
            h: i("height", h)?,
            w: i("width", w)?,
            oc: i("output channels", oc)?,
            oh: i("output height", oh)?,
            ow: i("output width", ow)?,
            kh: i("kernel height", p.kernel.0)?,
            kw: i("kernel width", p.kernel.1)?,
            sh: i("stride", p.stride.0)?,
            sw: i("stride", p.stride.1)?,
            ph: i("padding", p.pad.0)?,
            pw: i("padding", p.pad.1)?,
            dh: i("dilation", p.dilation.0)?,
            dw: i("dilation", p.dilation.1)?,
            groups: i("groups", p.groups)?,
        })
    }

    /// Output elements.
    pub fn output_len(&self) -> u64 {
        [self.n, self.oc, self.oh, self.ow].iter().map(|&v| v as u64).product()
    }

    /// The reduction length of one output: input channels per group × kernel area.
    pub fn k_len(&self) -> u64 {
        (self.c / self.groups) as u64 * self.kh as u64 * self.kw as u64
    }
}

/// Which convolution kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvKernel {
    /// `conv2d_direct`: one thread per output (depthwise, tiny reductions or channel counts).
    Direct,
    /// `conv2d_igemm`: tiled implicit GEMM.
    ImplicitGemm,
}

/// The kernel and launch for a convolution: implicit GEMM when each group has at least 16 output
/// channels and a reduction of at least 16 and the grid fits, else the direct kernel.
pub fn conv(shape: &ConvShape, limits: &Limits) -> Result<(ConvKernel, Launch)> {
    let ocg = (shape.oc / shape.groups) as u64;
    let pixels = [shape.n, shape.oh, shape.ow].iter().map(|&v| v as u64).product::<u64>();
    let grid = (blocks(pixels, IGEMM_TILE.1), blocks(ocg, IGEMM_TILE.0), shape.groups as u64);
    let fits = grid.0 <= u64::from(limits.max_grid_x)
        && grid.1 <= u64::from(limits.max_grid_yz)
        && grid.2 <= u64::from(limits.max_grid_yz);
    if ocg >= 16 && shape.k_len() >= 16 && fits && limits.max_threads >= 256 {
        let launch = Launch {
            grid: (grid.0 as u32, grid.1 as u32, grid.2 as u32),
            block: (16, 16, 1),
            shared_bytes: 0,
        };
        return Ok((ConvKernel::ImplicitGemm, launch));
    }
    Ok((ConvKernel::Direct, elementwise(shape.output_len(), limits)?))
}

/// A pooling window's shape, as the kernels read it (`HyPoolShape` in kernels/src/common.cuh).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolShape {
    /// Batch.
    pub n: i32,
    /// Channels.
    pub c: i32,
    /// Input height.
    pub h: i32,
    /// Input width.
    pub w: i32,
    /// Output height.
    pub oh: i32,
    /// Output width.
    pub ow: i32,
    /// Window height.
    pub kh: i32,
    /// Window width.
    pub kw: i32,
    /// Stride (height).
    pub sh: i32,
    /// Stride (width).
    pub sw: i32,
    /// Padding (height).
    pub ph: i32,
    /// Padding (width).
    pub pw: i32,
    /// Dilation (height).
    pub dh: i32,
    /// Dilation (width).
    pub dw: i32,
    /// 1: average pooling counts padding cells.
    pub count_include_pad: i32,
}

impl PoolShape {
    /// The shape of a pooling of an `[n, c, h, w]` input (`groups` of `p` is ignored).
    pub fn new(input: [usize; 4], p: &ConvParams, count_include_pad: bool) -> Result<PoolShape> {
        let conv = ConvShape::new(input, input[1], &ConvParams { groups: input[1], ..*p })?;
        if p.pad.0 * 2 > p.kernel.0 || p.pad.1 * 2 > p.kernel.1 {
            return Err(Error::InvalidArgument(format!(
                "pooling: padding {:?} exceeds half the window {:?}",
                p.pad, p.kernel
            )));
        }
        Ok(PoolShape {
            n: conv.n,
            c: conv.c,
            h: conv.h,
            w: conv.w,
            oh: conv.oh,
            ow: conv.ow,
            kh: conv.kh,
            kw: conv.kw,
            sh: conv.sh,
            sw: conv.sw,
            ph: conv.ph,
            pw: conv.pw,
            dh: conv.dh,
            dw: conv.dw,
            count_include_pad: i32::from(count_include_pad),
        })
    }
}

/// The launch of `gemm_tiled` for an `m × n` output.
pub fn gemm_tiled(m: u64, n: u64, limits: &Limits) -> Result<Launch> {
    let grid = (blocks(n, GEMM_TILE), blocks(m, GEMM_TILE));
    if m == 0
        || n == 0
        || grid.0 > u64::from(limits.max_grid_x)
        || grid.1 > u64::from(limits.max_grid_yz)
    {
        return Err(Error::InvalidArgument(format!("a {m}×{n} GEMM does not fit the GPU grid")));
    }
    Ok(Launch { grid: (grid.0 as u32, grid.1 as u32, 1), block: (16, 16, 1), shared_bytes: 0 })
}

/// The launch of `bias_grad_rows` over `cols` columns (one thread each).
pub fn columns(cols: u64, limits: &Limits) -> Result<Launch> {
    let grid = blocks(cols, u64::from(ELEMENTWISE_BLOCK));
    if cols == 0 || grid > u64::from(limits.max_grid_x) {
        return Err(Error::InvalidArgument(format!("{cols} columns do not fit the GPU grid")));
    }
    Ok(Launch { grid: (grid as u32, 1, 1), block: (ELEMENTWISE_BLOCK, 1, 1), shared_bytes: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(k: usize, s: usize, p: usize, d: usize, g: usize) -> ConvParams {
        ConvParams { kernel: (k, k), stride: (s, s), pad: (p, p), dilation: (d, d), groups: g }
    }

    #[test]
    fn conv_output_sizes_follow_onnx() {
        // 3×3, stride 2, pad 1 on 32×32: (32 + 2 - 3) / 2 + 1 = 16.
        let s = ConvShape::new([2, 8, 32, 32], 16, &params(3, 2, 1, 1, 1)).unwrap();
        assert_eq!((s.oh, s.ow), (16, 16));
        // Dilation 2 widens a 3×3 window to 5: (10 - 5) / 1 + 1 = 6.
        let s = ConvShape::new([1, 4, 10, 10], 4, &params(3, 1, 0, 2, 4)).unwrap();
        assert_eq!((s.oh, s.ow, s.k_len()), (6, 6, 9));
        assert!(ConvShape::new([1, 4, 2, 2], 4, &params(5, 1, 0, 1, 1)).is_err());
        assert!(ConvShape::new([1, 6, 8, 8], 4, &params(3, 1, 1, 1, 4)).is_err());
        assert!(ConvShape::new([1, 4, 8, 8], 4, &params(3, 0, 1, 1, 1)).is_err());
        let e = ConvShape::new([70_000, 64, 100, 100], 64, &params(1, 1, 0, 1, 1)).unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
    }

    #[test]
    fn conv_picks_implicit_gemm_for_wide_layers_and_direct_for_depthwise() {
        let l = Limits::default();
        let wide = ConvShape::new([1, 64, 56, 56], 128, &params(3, 1, 1, 1, 1)).unwrap();
        let (k, launch) = conv(&wide, &l).unwrap();
        assert_eq!(k, ConvKernel::ImplicitGemm);
        // 56·56 = 3136 pixels → 49 tiles of 64; 128 channels → 2 tiles; 1 group.
        assert_eq!(launch.grid, (49, 2, 1));
        assert_eq!(launch.block, (16, 16, 1));
        let dw = ConvShape::new([1, 64, 56, 56], 64, &params(3, 1, 1, 1, 64)).unwrap();
        let (k, launch) = conv(&dw, &l).unwrap();
        assert_eq!(k, ConvKernel::Direct);
        assert_eq!(launch.block.0, ELEMENTWISE_BLOCK);
        // A grid whose y would exceed the limit falls back to the direct kernel.
        let tight = Limits { max_grid_yz: 1, ..l };
        assert_eq!(conv(&wide, &tight).unwrap().0, ConvKernel::Direct);
    }

    #[test]
    fn grid_stride_launches_are_capped_and_cover_small_inputs() {
        let l = Limits { sm_count: 10, ..Limits::default() };
        assert_eq!(elementwise(1, &l).unwrap().grid, (1, 1, 1));
        assert_eq!(elementwise(257, &l).unwrap().grid, (2, 1, 1));
        assert_eq!(elementwise(1 << 40, &l).unwrap().grid, (320, 1, 1));
        assert!(elementwise(0, &l).is_err());
    }

    #[test]
    fn row_blocks_are_warp_multiples_within_limits() {
        let l = Limits::default();
        assert_eq!(rows(8, 10, &l).unwrap().block, (32, 1, 1));
        assert_eq!(rows(8, 100, &l).unwrap().block, (128, 1, 1));
        assert_eq!(rows(8, 1 << 20, &l).unwrap().block, (1024, 1, 1));
        let small = Limits { max_threads: 512, ..l };
        assert_eq!(
            rows(3, 1 << 20, &small).unwrap(),
            Launch { grid: (3, 1, 1), block: (512, 1, 1), shared_bytes: 0 }
        );
        assert!(rows(0, 4, &l).is_err());
    }

    #[test]
    fn gemm_and_column_grids() {
        let l = Limits::default();
        assert_eq!(gemm_tiled(33, 16, &l).unwrap().grid, (1, 3, 1));
        assert!(gemm_tiled(16 * 70_000, 4, &l).is_err());
        assert_eq!(columns(257, &l).unwrap().grid, (2, 1, 1));
    }

    #[test]
    fn pool_shapes_refuse_padding_beyond_half_the_window() {
        let p = params(3, 2, 1, 1, 1);
        let s = PoolShape::new([1, 8, 16, 16], &p, false).unwrap();
        assert_eq!((s.oh, s.ow, s.c), (8, 8, 8));
        assert!(PoolShape::new([1, 8, 16, 16], &params(2, 2, 2, 1, 1), false).is_err());
    }

    #[test]
    fn shapes_match_the_kernels_struct_layout() {
        // HyConvShape has 16 ints, HyPoolShape 15 (kernels/src/common.cuh).
        assert_eq!(std::mem::size_of::<ConvShape>(), 16 * 4);
        assert_eq!(std::mem::size_of::<PoolShape>(), 15 * 4);
    }
}
