// Row-wise softmax and layer normalisation: one block per row of `len` elements (block size a
// multiple of 32).

template <typename T>
__device__ void softmax_rows(const T* x, T* y, int len) {
    long long base = (long long)blockIdx.x * len;
    float m = HY_NEG_INF;
    for (int i = threadIdx.x; i < len; i += blockDim.x) m = fmaxf(m, hy_ld(x, base + i));
    m = hy_block_max(m);
    float sum = 0.0f;
    for (int i = threadIdx.x; i < len; i += blockDim.x) sum += __expf(hy_ld(x, base + i) - m);
    sum = hy_block_sum(sum);
    float inv = 1.0f / sum;
    for (int i = threadIdx.x; i < len; i += blockDim.x)
        hy_st(y, base + i, __expf(hy_ld(x, base + i) - m) * inv);
}

// y = (x - mean) / sqrt(var + eps) * gamma + beta; gamma and beta (f32) may be null.
template <typename T>
__device__ void layernorm_rows(const T* x, const float* gamma, const float* beta, T* y, int len,
                               float eps) {
    long long base = (long long)blockIdx.x * len;
    float sum = 0.0f;
    for (int i = threadIdx.x; i < len; i += blockDim.x) sum += hy_ld(x, base + i);
    float mean = hy_block_sum(sum) / (float)len;
    float sq = 0.0f;
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
        float d = hy_ld(x, base + i) - mean;
        sq += d * d;
    }
    float rstd = rsqrtf(hy_block_sum(sq) / (float)len + eps);
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
        float v = (hy_ld(x, base + i) - mean) * rstd;
        if (gamma) v *= gamma[i];
        if (beta) v += beta[i];
        hy_st(y, base + i, v);
    }
}

// y = act(x * scale[c] + shift[c]) over NCHW planes of `plane` elements: a BatchNorm with frozen
// statistics that follows no convolution it could be folded into.
template <typename T>
__device__ void scale_shift_channels(const T* x, const float* scale, const float* shift, T* y,
                                     long long total, int channels, int plane, int act,
                                     float alpha) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        int c = (int)((i / plane) % channels);
        hy_st(y, i, hy_activate(hy_ld(x, i) * scale[c] + shift[c], act, alpha));
    }
}

#define HY_NORM(T, sfx)                                                                          \
    extern "C" __global__ void softmax_rows_##sfx(const T* x, T* y, int len) {                  \
        softmax_rows<T>(x, y, len);                                                              \
    }                                                                                            \
    extern "C" __global__ void layernorm_rows_##sfx(const T* x, const float* gamma,             \
                                                    const float* beta, T* y, int len,            \
                                                    float eps) {                                 \
        layernorm_rows<T>(x, gamma, beta, y, len, eps);                                          \
    }                                                                                            \
    extern "C" __global__ void scale_shift_channels_##sfx(                                       \
        const T* x, const float* scale, const float* shift, T* y, long long total,               \
        int channels, int plane, int act, float alpha) {                                         \
        scale_shift_channels<T>(x, scale, shift, y, total, channels, plane, act, alpha);         \
    }
HY_TYPED(HY_NORM)
