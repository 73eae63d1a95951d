// Shared by every hydrant kernel: storage types, loads and stores that widen to f32, activations
// and block reductions. The thin Rust library prepends this file to each kernel source, so every
// module compiles on its own.
#include <cuda_fp16.h>
#include <cuda_bf16.h>

// Negative infinity (NVRTC has no <cmath> INFINITY).
#define HY_NEG_INF __int_as_float(0xff800000)

typedef __half hy_f16;
typedef __nv_bfloat16 hy_bf16;

// Storage is f32, f16 or bf16; arithmetic is always f32.
__device__ __forceinline__ float hy_ld(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float hy_ld(const hy_f16* p, long long i) { return __half2float(p[i]); }
__device__ __forceinline__ float hy_ld(const hy_bf16* p, long long i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void hy_st(float* p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void hy_st(hy_f16* p, long long i, float v) { p[i] = __float2half_rn(v); }
__device__ __forceinline__ void hy_st(hy_bf16* p, long long i, float v) { p[i] = __float2bfloat16_rn(v); }

// Activation codes, shared with the host (runtime/src/backend/cuda/ops.rs `Act`).
#define HY_ACT_NONE 0
#define HY_ACT_RELU 1
#define HY_ACT_RELU6 2
#define HY_ACT_SILU 3
#define HY_ACT_GELU 4
#define HY_ACT_SIGMOID 5
#define HY_ACT_TANH 6
#define HY_ACT_LEAKY_RELU 7

__device__ __forceinline__ float hy_sigmoid(float x) { return 1.0f / (1.0f + __expf(-x)); }

__device__ __forceinline__ float hy_activate(float x, int act, float alpha) {
    switch (act) {
    case HY_ACT_RELU: return fmaxf(x, 0.0f);
    case HY_ACT_RELU6: return fminf(fmaxf(x, 0.0f), 6.0f);
    case HY_ACT_SILU: return x * hy_sigmoid(x);
    case HY_ACT_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case HY_ACT_SIGMOID: return hy_sigmoid(x);
    case HY_ACT_TANH: return tanhf(x);
    case HY_ACT_LEAKY_RELU: return x > 0.0f ? x : alpha * x;
    default: return x;
    }
}

// d activate(x) / dx, from the input x (and the output y where cheaper).
__device__ __forceinline__ float hy_activate_grad(float x, float y, int act, float alpha) {
    switch (act) {
    case HY_ACT_RELU: return x > 0.0f ? 1.0f : 0.0f;
    case HY_ACT_RELU6: return (x > 0.0f && x < 6.0f) ? 1.0f : 0.0f;
    case HY_ACT_SILU: {
        float s = hy_sigmoid(x);
        return s * (1.0f + x * (1.0f - s));
    }
    case HY_ACT_GELU: {
        float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
        float pdf = 0.39894228040143268f * __expf(-0.5f * x * x);
        return cdf + x * pdf;
    }
    case HY_ACT_SIGMOID: return y * (1.0f - y);
    case HY_ACT_TANH: return 1.0f - y * y;
    case HY_ACT_LEAKY_RELU: return x > 0.0f ? 1.0f : alpha;
    default: return 1.0f;
    }
}

__device__ __forceinline__ float hy_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float hy_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over a block whose size is a multiple of 32 (at most 1024); every thread gets the result.
__device__ __forceinline__ float hy_block_sum(float v) {
    __shared__ float part[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = hy_warp_sum(v);
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    int warps = blockDim.x >> 5;
    v = lane < warps ? part[lane] : 0.0f;
    return hy_warp_sum(v);
}

// Maximum over a block, as hy_block_sum.
__device__ __forceinline__ float hy_block_max(float v) {
    __shared__ float part[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = hy_warp_max(v);
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    int warps = blockDim.x >> 5;
    v = lane < warps ? part[lane] : HY_NEG_INF;
    return hy_warp_max(v);
}

// Shape of a 2-D convolution (NCHW input, OIHW weight), shared with the host (`ConvShape`).
struct HyConvShape {
    int n, c, h, w;
    int oc, oh, ow;
    int kh, kw, sh, sw, ph, pw, dh, dw;
    int groups;
};

// Shape of a 2-D pooling window, shared with the host (`PoolShape`).
struct HyPoolShape {
    int n, c, h, w;
    int oh, ow;
    int kh, kw, sh, sw, ph, pw, dh, dw;
    int count_include_pad;
};

// Instantiates `name##_f32`, `name##_f16`, `name##_bf16` from a macro `M(T, sfx)`.
#define HY_TYPED(M) M(float, f32) M(hy_f16, f16) M(hy_bf16, bf16)
