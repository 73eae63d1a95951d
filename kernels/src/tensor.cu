// Data movement and element-wise epilogues: concatenation, resizing, residual add + activation,
// bias + activation after a GEMM, and conversion between storage types.

#define HY_GRID_STRIDE(i, total)                                                                 \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (total);            \
         i += (long long)gridDim.x * blockDim.x)

// Copies one input of a concatenation into its place: the tensors are viewed as
// [outer, inner] with the input's `src_inner` elements landing at `offset` of each of the
// output's `dst_inner`.
template <typename T>
__device__ void concat_copy(const T* src, T* dst, long long outer, long long src_inner,
                            long long dst_inner, long long offset) {
    HY_GRID_STRIDE(i, outer * src_inner) {
        long long o = i / src_inner, k = i % src_inner;
        dst[o * dst_inner + offset + k] = src[i];
    }
}

// Nearest-neighbour resize of NCHW planes (ONNX `asymmetric` + `floor`, PyTorch `nearest`).
template <typename T>
__device__ void resize_nearest(const T* x, T* y, long long planes, int h, int w, int oh, int ow) {
    HY_GRID_STRIDE(i, planes * oh * ow) {
        int ox = (int)(i % ow);
        long long t = i / ow;
        int oy = (int)(t % oh);
        long long p = t / oh;
        int iy = min((int)((long long)oy * h / oh), h - 1);
        int ix = min((int)((long long)ox * w / ow), w - 1);
        y[i] = x[(p * h + iy) * w + ix];
    }
}

// Bilinear resize of NCHW planes: `align_corners` 1 maps corner to corner, 0 is half-pixel
// (PyTorch's default, ONNX `half_pixel`/`pytorch_half_pixel` for sizes above 1).
template <typename T>
__device__ void resize_bilinear(const T* x, T* y, long long planes, int h, int w, int oh, int ow,
                                int align_corners) {
    HY_GRID_STRIDE(i, planes * oh * ow) {
        int ox = (int)(i % ow);
        long long t = i / ow;
        int oy = (int)(t % oh);
        long long p = t / oh;
        float sy, sx;
        if (align_corners) {
            sy = oh > 1 ? oy * (float)(h - 1) / (float)(oh - 1) : 0.0f;
            sx = ow > 1 ? ox * (float)(w - 1) / (float)(ow - 1) : 0.0f;
        } else {
            sy = fmaxf((oy + 0.5f) * (float)h / (float)oh - 0.5f, 0.0f);
            sx = fmaxf((ox + 0.5f) * (float)w / (float)ow - 0.5f, 0.0f);
        }
        int y0 = min((int)sy, h - 1), x0 = min((int)sx, w - 1);
        int y1 = min(y0 + 1, h - 1), x1 = min(x0 + 1, w - 1);
        float fy = sy - y0, fx = sx - x0;
        long long b = p * h;
        float v00 = hy_ld(x, (b + y0) * w + x0), v01 = hy_ld(x, (b + y0) * w + x1);
        float v10 = hy_ld(x, (b + y1) * w + x0), v11 = hy_ld(x, (b + y1) * w + x1);
        float top = v00 + (v01 - v00) * fx, bottom = v10 + (v11 - v10) * fx;
        hy_st(y, i, top + (bottom - top) * fy);
    }
}

// y = act(a + b): a residual Add (and its activation) that follows no fusable convolution.
template <typename T>
__device__ void add_act(const T* a, const T* b, T* y, long long total, int act, float alpha) {
    HY_GRID_STRIDE(i, total) { hy_st(y, i, hy_activate(hy_ld(a, i) + hy_ld(b, i), act, alpha)); }
}

// In place, y[r, c] = act(y[r, c] + bias[c]) over `rows` rows of `cols` (a GEMM's epilogue).
template <typename T>
__device__ void bias_act_rows(T* y, const float* bias, long long rows, int cols, int act,
                              float alpha) {
    HY_GRID_STRIDE(i, rows * cols) {
        float v = hy_ld(y, i);
        if (bias) v += bias[i % cols];
        hy_st(y, i, hy_activate(v, act, alpha));
    }
}

// y[r, j] = act(x[r, offset + j]): columns offset..offset+y_cols of rows of x_cols (one head's
// share of a stacked GEMM).
template <typename T>
__device__ void columns_act(const T* x, T* y, long long rows, int x_cols, int y_cols, int offset,
                            int act, float alpha) {
    HY_GRID_STRIDE(i, rows * y_cols) {
        long long r = i / y_cols;
        int j = (int)(i % y_cols);
        hy_st(y, i, hy_activate(hy_ld(x, r * x_cols + offset + j), act, alpha));
    }
}

#define HY_TENSOR(T, sfx)                                                                        \
    extern "C" __global__ void concat_copy_##sfx(const T* src, T* dst, long long outer,          \
                                                 long long src_inner, long long dst_inner,       \
                                                 long long offset) {                             \
        concat_copy<T>(src, dst, outer, src_inner, dst_inner, offset);                           \
    }                                                                                            \
    extern "C" __global__ void resize_nearest_##sfx(const T* x, T* y, long long planes, int h,  \
                                                    int w, int oh, int ow) {                     \
        resize_nearest<T>(x, y, planes, h, w, oh, ow);                                           \
    }                                                                                            \
    extern "C" __global__ void resize_bilinear_##sfx(const T* x, T* y, long long planes, int h, \
                                                     int w, int oh, int ow, int align_corners) { \
        resize_bilinear<T>(x, y, planes, h, w, oh, ow, align_corners);                           \
    }                                                                                            \
    extern "C" __global__ void add_act_##sfx(const T* a, const T* b, T* y, long long total,     \
                                             int act, float alpha) {                             \
        add_act<T>(a, b, y, total, act, alpha);                                                  \
    }                                                                                            \
    extern "C" __global__ void bias_act_rows_##sfx(T* y, const float* bias, long long rows,     \
                                                   int cols, int act, float alpha) {             \
        bias_act_rows<T>(y, bias, rows, cols, act, alpha);                                       \
    }                                                                                            \
    extern "C" __global__ void columns_act_##sfx(const T* x, T* y, long long rows, int x_cols,  \
                                                 int y_cols, int offset, int act, float alpha) { \
        columns_act<T>(x, y, rows, x_cols, y_cols, offset, act, alpha);                          \
    }
HY_TYPED(HY_TENSOR)

// Conversions between f32 and the half-precision storage types.
#define HY_CONVERT(T, sfx)                                                                       \
    extern "C" __global__ void convert_f32_to_##sfx(const float* x, T* y, long long total) {    \
        HY_GRID_STRIDE(i, total) { hy_st(y, i, x[i]); }                                          \
    }                                                                                            \
    extern "C" __global__ void convert_##sfx##_to_f32(const T* x, float* y, long long total) {  \
        HY_GRID_STRIDE(i, total) { y[i] = hy_ld(x, i); }                                         \
    }
HY_CONVERT(hy_f16, f16)
HY_CONVERT(hy_bf16, bf16)
