// Pooling over NCHW: max and average windows (padding, dilation) and global average.

template <typename T>
__device__ void pool2d(const T* x, T* y, HyPoolShape s, int is_max) {
    long long total = (long long)s.n * s.c * s.oh * s.ow;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        int ow = (int)(i % s.ow);
        long long t = i / s.ow;
        int oh = (int)(t % s.oh);
        long long nc = t / s.oh;
        long long base = nc * s.h * s.w;
        float acc = is_max ? HY_NEG_INF : 0.0f;
        int count = 0;
        for (int kh = 0; kh < s.kh; ++kh) {
            int ih = oh * s.sh - s.ph + kh * s.dh;
            for (int kw = 0; kw < s.kw; ++kw) {
                int iw = ow * s.sw - s.pw + kw * s.dw;
                bool inside = ih >= 0 && ih < s.h && iw >= 0 && iw < s.w;
                if (inside) {
                    float v = hy_ld(x, base + (long long)ih * s.w + iw);
                    acc = is_max ? fmaxf(acc, v) : acc + v;
                    ++count;
                } else if (s.count_include_pad && ih < s.h + s.ph && iw < s.w + s.pw) {
                    ++count;
                }
            }
        }
        if (!is_max) acc = count > 0 ? acc / (float)count : 0.0f;
        hy_st(y, i, acc);
    }
}

// One block per (n, c) plane.
template <typename T>
__device__ void global_avgpool(const T* x, T* y, int plane) {
    long long base = (long long)blockIdx.x * plane;
    float acc = 0.0f;
    for (int i = threadIdx.x; i < plane; i += blockDim.x) acc += hy_ld(x, base + i);
    acc = hy_block_sum(acc);
    if (threadIdx.x == 0) hy_st(y, blockIdx.x, acc / (float)plane);
}

#define HY_POOL(T, sfx)                                                                          \
    extern "C" __global__ void maxpool2d_##sfx(const T* x, T* y, HyPoolShape s) {               \
        pool2d<T>(x, y, s, 1);                                                                   \
    }                                                                                            \
    extern "C" __global__ void avgpool2d_##sfx(const T* x, T* y, HyPoolShape s) {               \
        pool2d<T>(x, y, s, 0);                                                                   \
    }                                                                                            \
    extern "C" __global__ void global_avgpool_##sfx(const T* x, T* y, int plane) {              \
        global_avgpool<T>(x, y, plane);                                                          \
    }
HY_TYPED(HY_POOL)
