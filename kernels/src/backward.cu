// Backward kernels of the trainable layer vocabulary. Linear and the GEMM halves of Conv2d run
// on cuBLAS; these kernels do the rest: activation gradients, bias-gradient reductions, im2col /
// col2im for convolution weight and input gradients, pooling and upsampling gradients.

#define HY_LOOP(i, total)                                                                        \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (total);            \
         i += (long long)gridDim.x * blockDim.x)

// dx = dy * act'(x) (y is the forward output; sigmoid and tanh use it).
template <typename T>
__device__ void act_backward(const T* x, const T* y, const T* dy, T* dx, long long total, int act,
                             float alpha) {
    HY_LOOP(i, total) {
        float xi = x ? hy_ld(x, i) : 0.0f;
        float yi = y ? hy_ld(y, i) : 0.0f;
        hy_st(dx, i, hy_ld(dy, i) * hy_activate_grad(xi, yi, act, alpha));
    }
}

// db[c] = sum_r dy[r, c] over `rows` rows of `cols`: one thread per column.
template <typename T>
__device__ void bias_grad_rows(const T* dy, float* db, long long rows, int cols) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float acc = 0.0f;
    for (long long r = 0; r < rows; ++r) acc += hy_ld(dy, r * cols + c);
    db[c] = acc;
}

// db[c] = sum over n and the plane of dy[n, c, :]: one block per channel.
template <typename T>
__device__ void bias_grad_channels(const T* dy, float* db, int n, int channels, int plane) {
    int c = blockIdx.x;
    float acc = 0.0f;
    for (int b = 0; b < n; ++b) {
        long long base = ((long long)b * channels + c) * plane;
        for (int i = threadIdx.x; i < plane; i += blockDim.x) acc += hy_ld(dy, base + i);
    }
    acc = hy_block_sum(acc);
    if (threadIdx.x == 0) db[c] = acc;
}

// col[k, p] for group g, k = (c, kh, kw) over the group's channels, p = (n, oh, ow).
template <typename T>
__device__ void im2col(const T* x, T* col, HyConvShape s, int g) {
    int cg = s.c / s.groups;
    long long pixels = (long long)s.n * s.oh * s.ow;
    long long k_len = (long long)cg * s.kh * s.kw;
    HY_LOOP(i, k_len * pixels) {
        long long p = i % pixels;
        int k = (int)(i / pixels);
        int ow = (int)(p % s.ow);
        long long t = p / s.ow;
        int oh = (int)(t % s.oh);
        int n = (int)(t / s.oh);
        int kw = k % s.kw, kh = (k / s.kw) % s.kh, c = k / (s.kw * s.kh);
        int ih = oh * s.sh - s.ph + kh * s.dh, iw = ow * s.sw - s.pw + kw * s.dw;
        float v = 0.0f;
        if (ih >= 0 && ih < s.h && iw >= 0 && iw < s.w)
            v = hy_ld(x, (((long long)n * s.c + g * cg + c) * s.h + ih) * s.w + iw);
        hy_st(col, i, v);
    }
}

// dx[n, g*cg + c, ih, iw] = sum of dcol[k, p] over the (k, p) that read it (a gather: no atomics).
template <typename T>
__device__ void col2im(const T* dcol, T* dx, HyConvShape s, int g) {
    int cg = s.c / s.groups;
    long long pixels = (long long)s.n * s.oh * s.ow;
    HY_LOOP(i, (long long)s.n * cg * s.h * s.w) {
        int iw = (int)(i % s.w);
        long long t = i / s.w;
        int ih = (int)(t % s.h);
        t /= s.h;
        int c = (int)(t % cg);
        int n = (int)(t / cg);
        float acc = 0.0f;
        for (int kh = 0; kh < s.kh; ++kh) {
            int yy = ih + s.ph - kh * s.dh;
            if (yy < 0 || yy % s.sh) continue;
            int oh = yy / s.sh;
            if (oh >= s.oh) continue;
            for (int kw = 0; kw < s.kw; ++kw) {
                int xx = iw + s.pw - kw * s.dw;
                if (xx < 0 || xx % s.sw) continue;
                int ow = xx / s.sw;
                if (ow >= s.ow) continue;
                long long k = ((long long)c * s.kh + kh) * s.kw + kw;
                long long p = ((long long)n * s.oh + oh) * s.ow + ow;
                acc += hy_ld(dcol, k * pixels + p);
            }
        }
        hy_st(dx, (((long long)n * s.c + g * cg + c) * s.h + ih) * s.w + iw, acc);
    }
}

// Max-pool gradient by gather: each input takes the gradient of every window whose (first)
// maximum it is.
template <typename T>
__device__ void maxpool2d_backward(const T* x, const T* dy, T* dx, HyPoolShape s) {
    HY_LOOP(i, (long long)s.n * s.c * s.h * s.w) {
        int iw = (int)(i % s.w);
        long long t = i / s.w;
        int ih = (int)(t % s.h);
        long long nc = t / s.h;
        long long base = nc * s.h * s.w;
        float acc = 0.0f;
        for (int oh = 0; oh < s.oh; ++oh) {
            int y0 = oh * s.sh - s.ph;
            if (ih < y0 || ih > y0 + (s.kh - 1) * s.dh) continue;
            for (int ow = 0; ow < s.ow; ++ow) {
                int x0 = ow * s.sw - s.pw;
                if (iw < x0 || iw > x0 + (s.kw - 1) * s.dw) continue;
                float best = HY_NEG_INF;
                long long arg = -1;
                for (int kh = 0; kh < s.kh; ++kh) {
                    int yy = y0 + kh * s.dh;
                    if (yy < 0 || yy >= s.h) continue;
                    for (int kw = 0; kw < s.kw; ++kw) {
                        int xx = x0 + kw * s.dw;
                        if (xx < 0 || xx >= s.w) continue;
                        float v = hy_ld(x, base + (long long)yy * s.w + xx);
                        if (v > best) {
                            best = v;
                            arg = (long long)yy * s.w + xx;
                        }
                    }
                }
                if (arg == (long long)ih * s.w + iw)
                    acc += hy_ld(dy, (nc * s.oh + oh) * s.ow + ow);
            }
        }
        hy_st(dx, i, acc);
    }
}

// dx[nc, i] = dy[nc] / plane.
template <typename T>
__device__ void global_avgpool_backward(const T* dy, T* dx, long long planes, int plane) {
    HY_LOOP(i, planes * plane) { hy_st(dx, i, hy_ld(dy, i / plane) / (float)plane); }
}

// Nearest upsampling by an integer factor: each input sums the factor×factor outputs it fed.
template <typename T>
__device__ void upsample_nearest_backward(const T* dy, T* dx, long long planes, int h, int w,
                                          int factor) {
    int oh = h * factor, ow = w * factor;
    HY_LOOP(i, planes * h * w) {
        int ix = (int)(i % w);
        long long t = i / w;
        int iy = (int)(t % h);
        long long p = t / h;
        float acc = 0.0f;
        for (int a = 0; a < factor; ++a)
            for (int b = 0; b < factor; ++b)
                acc += hy_ld(dy, (p * oh + iy * factor + a) * ow + ix * factor + b);
        hy_st(dx, i, acc);
    }
}

#define HY_BACKWARD(T, sfx)                                                                      \
    extern "C" __global__ void act_backward_##sfx(const T* x, const T* y, const T* dy, T* dx,    \
                                                  long long total, int act, float alpha) {       \
        act_backward<T>(x, y, dy, dx, total, act, alpha);                                        \
    }                                                                                            \
    extern "C" __global__ void bias_grad_rows_##sfx(const T* dy, float* db, long long rows,      \
                                                    int cols) {                                  \
        bias_grad_rows<T>(dy, db, rows, cols);                                                   \
    }                                                                                            \
    extern "C" __global__ void bias_grad_channels_##sfx(const T* dy, float* db, int n,           \
                                                        int channels, int plane) {               \
        bias_grad_channels<T>(dy, db, n, channels, plane);                                       \
    }                                                                                            \
    extern "C" __global__ void im2col_##sfx(const T* x, T* col, HyConvShape s, int g) {         \
        im2col<T>(x, col, s, g);                                                                 \
    }                                                                                            \
    extern "C" __global__ void col2im_##sfx(const T* dcol, T* dx, HyConvShape s, int g) {       \
        col2im<T>(dcol, dx, s, g);                                                               \
    }                                                                                            \
    extern "C" __global__ void maxpool2d_backward_##sfx(const T* x, const T* dy, T* dx,          \
                                                        HyPoolShape s) {                         \
        maxpool2d_backward<T>(x, dy, dx, s);                                                     \
    }                                                                                            \
    extern "C" __global__ void global_avgpool_backward_##sfx(const T* dy, T* dx,                 \
                                                             long long planes, int plane) {      \
        global_avgpool_backward<T>(dy, dx, planes, plane);                                       \
    }                                                                                            \
    extern "C" __global__ void upsample_nearest_backward_##sfx(                                  \
        const T* dy, T* dx, long long planes, int h, int w, int factor) {                        \
        upsample_nearest_backward<T>(dy, dx, planes, h, w, factor);                              \
    }
HY_TYPED(HY_BACKWARD)
