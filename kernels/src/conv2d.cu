// 2-D convolution, NCHW, any kernel size, stride, padding, dilation and groups (depthwise
// included), with the epilogue y = act(conv + bias + residual): BatchNorm is folded into the
// weight and bias on the host; bias and residual may be null.

// One thread per output element: for small channel counts and depthwise convolutions.
template <typename T>
__device__ void conv2d_direct(const T* x, const T* w, const float* bias, const T* res, T* y,
                              HyConvShape s, int act, float alpha) {
    long long total = (long long)s.n * s.oc * s.oh * s.ow;
    int cg = s.c / s.groups, ocg = s.oc / s.groups;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        int ow = (int)(i % s.ow);
        long long t = i / s.ow;
        int oh = (int)(t % s.oh);
        t /= s.oh;
        int oc = (int)(t % s.oc);
        int n = (int)(t / s.oc);
        int g = oc / ocg;
        float acc = 0.0f;
        for (int c = 0; c < cg; ++c) {
            long long xbase = ((long long)n * s.c + g * cg + c) * s.h;
            long long wbase = ((long long)oc * cg + c) * s.kh;
            for (int kh = 0; kh < s.kh; ++kh) {
                int ih = oh * s.sh - s.ph + kh * s.dh;
                if (ih < 0 || ih >= s.h) continue;
                for (int kw = 0; kw < s.kw; ++kw) {
                    int iw = ow * s.sw - s.pw + kw * s.dw;
                    if (iw < 0 || iw >= s.w) continue;
                    acc += hy_ld(x, (xbase + ih) * s.w + iw) * hy_ld(w, (wbase + kh) * s.kw + kw);
                }
            }
        }
        if (bias) acc += bias[oc];
        if (res) acc += hy_ld(res, i);
        hy_st(y, i, hy_activate(acc, act, alpha));
    }
}

// Implicit GEMM: per group, out[m, p] = sum_k w[m, k] * x_col[k, p] with m an output channel,
// p = (n, oh, ow) and k = (c, kh, kw); x_col is never materialised. Block 16×16 threads, tile
// 64 channels × 64 pixels × 16 of k, 4×4 outputs per thread. Grid (ceil(P/64), ceil(OCg/64), groups).
#define HY_TM 64
#define HY_TN 64
#define HY_TK 16
template <typename T>
__device__ void conv2d_igemm(const T* x, const T* w, const float* bias, const T* res, T* y,
                             HyConvShape s, int act, float alpha) {
    __shared__ float a_tile[HY_TK][HY_TM + 4];
    __shared__ float b_tile[HY_TK][HY_TN + 4];
    int cg = s.c / s.groups, ocg = s.oc / s.groups;
    int g = blockIdx.z;
    int k_len = cg * s.kh * s.kw;
    long long pixels = (long long)s.n * s.oh * s.ow;
    int m0 = blockIdx.y * HY_TM;
    long long p0 = (long long)blockIdx.x * HY_TN;
    int tx = threadIdx.x, ty = threadIdx.y, tid = ty * 16 + tx;
    float acc[4][4];
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < k_len; k0 += HY_TK) {
        for (int i = tid; i < HY_TK * HY_TM; i += 256) {
            int kk = i % HY_TK, mm = i / HY_TK;
            int m = m0 + mm, k = k0 + kk;
            a_tile[kk][mm] = (m < ocg && k < k_len) ? hy_ld(w, (long long)(g * ocg + m) * k_len + k) : 0.0f;
        }
        for (int i = tid; i < HY_TK * HY_TN; i += 256) {
            int pp = i % HY_TN, kk = i / HY_TN;
            long long p = p0 + pp;
            int k = k0 + kk;
            float v = 0.0f;
            if (p < pixels && k < k_len) {
                int ow = (int)(p % s.ow);
                long long t = p / s.ow;
                int oh = (int)(t % s.oh);
                int n = (int)(t / s.oh);
                int kw = k % s.kw;
                int t2 = k / s.kw;
                int kh = t2 % s.kh;
                int c = t2 / s.kh;
                int ih = oh * s.sh - s.ph + kh * s.dh;
                int iw = ow * s.sw - s.pw + kw * s.dw;
                if (ih >= 0 && ih < s.h && iw >= 0 && iw < s.w)
                    v = hy_ld(x, (((long long)n * s.c + g * cg + c) * s.h + ih) * s.w + iw);
            }
            b_tile[kk][pp] = v;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < HY_TK; ++kk) {
            float a[4], b[4];
            for (int i = 0; i < 4; ++i) a[i] = a_tile[kk][ty * 4 + i];
            for (int j = 0; j < 4; ++j) b[j] = b_tile[kk][tx * 4 + j];
            for (int i = 0; i < 4; ++i)
                for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
    for (int i = 0; i < 4; ++i) {
        int m = m0 + ty * 4 + i;
        if (m >= ocg) continue;
        int oc = g * ocg + m;
        for (int j = 0; j < 4; ++j) {
            long long p = p0 + tx * 4 + j;
            if (p >= pixels) continue;
            int ow = (int)(p % s.ow);
            long long t = p / s.ow;
            int oh = (int)(t % s.oh);
            int n = (int)(t / s.oh);
            long long o = (((long long)n * s.oc + oc) * s.oh + oh) * s.ow + ow;
            float v = acc[i][j];
            if (bias) v += bias[oc];
            if (res) v += hy_ld(res, o);
            hy_st(y, o, hy_activate(v, act, alpha));
        }
    }
}

#define HY_CONV(T, sfx)                                                                          \
    extern "C" __global__ void conv2d_direct_##sfx(const T* x, const T* w, const float* bias,    \
                                                   const T* res, T* y, HyConvShape s, int act,   \
                                                   float alpha) {                                \
        conv2d_direct<T>(x, w, bias, res, y, s, act, alpha);                                     \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(256)                                            \
        conv2d_igemm_##sfx(const T* x, const T* w, const float* bias, const T* res, T* y,        \
                           HyConvShape s, int act, float alpha) {                                \
        conv2d_igemm<T>(x, w, bias, res, y, s, act, alpha);                                      \
    }
HY_TYPED(HY_CONV)
