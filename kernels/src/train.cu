// Training kernels of the trainable layer vocabulary that the inference modules lack, in f32:
// BatchNorm with batch statistics (forward with the running-statistics update, backward),
// LayerNorm saving what its backward needs (and that backward), dropout with a counter-based
// mask, bilinear ×2 upsampling backward, softmax along any axis, cross-entropy over the class
// axis of NCHW, element-wise helpers (activation, product, scale, sum of squares), the permute
// of NCHW and CNHW that convolution gradients need, and a row gather for device feature caches.
// Formulas are those of runtime/src/train/layers/*.rs.

#define HY_EACH(i, total)                                                                        \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (total);            \
         i += (long long)gridDim.x * blockDim.x)

// BatchNorm2d over [n, c, plane], one block per channel. With `batch_stats`, normalises with the
// batch mean and biased variance and updates the running statistics by `momentum` (unbiased
// variance, PyTorch's rule); else normalises with the running statistics. Writes x̂ (`xhat`, may
// be null at inference), 1/σ per channel (`inv_std`, may be null) and y = x̂·γ + β.
extern "C" __global__ void batchnorm_forward_f32(const float* x, const float* gamma,
                                                 const float* beta, float* running_mean,
                                                 float* running_var, float* xhat, float* inv_std,
                                                 float* y, int n, int c, int plane, float eps,
                                                 float momentum, int batch_stats) {
    int ch = blockIdx.x;
    long long count = (long long)n * plane;
    float mean, istd;
    if (batch_stats) {
        float sum = 0.0f;
        for (int b = 0; b < n; ++b) {
            long long base = ((long long)b * c + ch) * plane;
            for (int i = threadIdx.x; i < plane; i += blockDim.x) sum += x[base + i];
        }
        mean = hy_block_sum(sum) / (float)count;
        float sq = 0.0f;
        for (int b = 0; b < n; ++b) {
            long long base = ((long long)b * c + ch) * plane;
            for (int i = threadIdx.x; i < plane; i += blockDim.x) {
                float d = x[base + i] - mean;
                sq += d * d;
            }
        }
        float var = hy_block_sum(sq) / (float)count;
        istd = 1.0f / sqrtf(var + eps);
        if (threadIdx.x == 0) {
            float unbiased = var * ((float)count / (float)(count - 1));
            running_mean[ch] = (1.0f - momentum) * running_mean[ch] + momentum * mean;
            running_var[ch] = (1.0f - momentum) * running_var[ch] + momentum * unbiased;
        }
    } else {
        mean = running_mean[ch];
        istd = 1.0f / sqrtf(running_var[ch] + eps);
    }
    if (inv_std && threadIdx.x == 0) inv_std[ch] = istd;
    float g = gamma[ch], bt = beta[ch];
    for (int b = 0; b < n; ++b) {
        long long base = ((long long)b * c + ch) * plane;
        for (int i = threadIdx.x; i < plane; i += blockDim.x) {
            float h = (x[base + i] - mean) * istd;
            if (xhat) xhat[base + i] = h;
            y[base + i] = h * g + bt;
        }
    }
}

// BatchNorm2d backward, one block per channel: dγ = Σ dy·x̂, dβ = Σ dy (written, not added);
// dx = γ/σ·(dy − mean(dy) − x̂·mean(dy·x̂)) with batch statistics, else γ/σ·dy. `dx` may be null.
extern "C" __global__ void batchnorm_backward_f32(const float* dy, const float* xhat,
                                                  const float* inv_std, const float* gamma,
                                                  float* dx, float* dgamma, float* dbeta, int n,
                                                  int c, int plane, int batch_stats) {
    int ch = blockIdx.x;
    float s1 = 0.0f, s2 = 0.0f;
    for (int b = 0; b < n; ++b) {
        long long base = ((long long)b * c + ch) * plane;
        for (int i = threadIdx.x; i < plane; i += blockDim.x) {
            float g = dy[base + i];
            s1 += g;
            s2 += g * xhat[base + i];
        }
    }
    s1 = hy_block_sum(s1);
    s2 = hy_block_sum(s2);
    if (threadIdx.x == 0) {
        dgamma[ch] = s2;
        dbeta[ch] = s1;
    }
    if (!dx) return;
    float count = (float)((long long)n * plane);
    float k = gamma[ch] * inv_std[ch], m1 = s1 / count, m2 = s2 / count;
    for (int b = 0; b < n; ++b) {
        long long base = ((long long)b * c + ch) * plane;
        for (int i = threadIdx.x; i < plane; i += blockDim.x) {
            float g = dy[base + i];
            dx[base + i] = batch_stats ? k * (g - m1 - xhat[base + i] * m2) : k * g;
        }
    }
}

// LayerNorm over rows of `len`, one block per row: x̂ (may be null), 1/σ per row (may be null)
// and y = x̂·γ + β.
extern "C" __global__ void layernorm_forward_f32(const float* x, const float* gamma,
                                                 const float* beta, float* xhat, float* inv_std,
                                                 float* y, int len, float eps) {
    long long base = (long long)blockIdx.x * len;
    float sum = 0.0f;
    for (int i = threadIdx.x; i < len; i += blockDim.x) sum += x[base + i];
    float mean = hy_block_sum(sum) / (float)len;
    float sq = 0.0f;
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
        float d = x[base + i] - mean;
        sq += d * d;
    }
    float istd = 1.0f / sqrtf(hy_block_sum(sq) / (float)len + eps);
    if (inv_std && threadIdx.x == 0) inv_std[blockIdx.x] = istd;
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
        float h = (x[base + i] - mean) * istd;
        if (xhat) xhat[base + i] = h;
        y[base + i] = h * gamma[i] + beta[i];
    }
}

// LayerNorm input gradient, one block per row: g = dy·γ; dx = (1/σ)(g − mean(g) − x̂·mean(g·x̂)).
extern "C" __global__ void layernorm_backward_f32(const float* dy, const float* xhat,
                                                  const float* inv_std, const float* gamma,
                                                  float* dx, int len) {
    long long base = (long long)blockIdx.x * len;
    float s1 = 0.0f, s2 = 0.0f;
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
        float g = dy[base + i] * gamma[i];
        s1 += g;
        s2 += g * xhat[base + i];
    }
    float m1 = hy_block_sum(s1) / (float)len;
    float m2 = hy_block_sum(s2) / (float)len;
    float is = inv_std[blockIdx.x];
    for (int i = threadIdx.x; i < len; i += blockDim.x)
        dx[base + i] = is * (dy[base + i] * gamma[i] - m1 - xhat[base + i] * m2);
}

// LayerNorm parameter gradients, one thread per column: dγ = Σ_rows dy·x̂, dβ = Σ_rows dy
// (written, not added).
extern "C" __global__ void layernorm_param_grads_f32(const float* dy, const float* xhat,
                                                     float* dgamma, float* dbeta, long long rows,
                                                     int len) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= len) return;
    float gw = 0.0f, gb = 0.0f;
    for (long long r = 0; r < rows; ++r) {
        float g = dy[r * len + j];
        gw += g * xhat[r * len + j];
        gb += g;
    }
    dgamma[j] = gw;
    dbeta[j] = gb;
}

// The dropout draw of element `i` under `seed`: a uniform in [0, 1) with 24 bits, from the
// SplitMix64 finaliser of seed + (i + 1)·golden gamma. The host has the same function
// (backend::cuda::train_plan::dropout_uniform), so masks are reproducible and checkable.
__device__ __forceinline__ float hy_dropout_uniform(unsigned long long seed, long long i) {
    unsigned long long z = seed + (unsigned long long)(i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * 5.9604644775390625e-8f;  // 2^-24
}

// Inverted dropout: mask = 0 where the draw is below p, else 1/(1−p); y = x·mask.
extern "C" __global__ void dropout_forward_f32(const float* x, float* y, float* mask,
                                               long long total, float p, float keep_scale,
                                               unsigned long long seed) {
    HY_EACH(i, total) {
        float m = hy_dropout_uniform(seed, i) < p ? 0.0f : keep_scale;
        mask[i] = m;
        y[i] = x[i] * m;
    }
}

// y = a·b element-wise (dropout backward: dy·mask).
extern "C" __global__ void mul_f32(const float* a, const float* b, float* y, long long total) {
    HY_EACH(i, total) { y[i] = a[i] * b[i]; }
}

// x *= s in place (gradient clipping, loss weights).
extern "C" __global__ void scale_f32(float* x, long long total, float s) {
    HY_EACH(i, total) { x[i] *= s; }
}

// y = act(x) (activation codes of common.cuh).
extern "C" __global__ void act_forward_f32(const float* x, float* y, long long total, int act,
                                           float alpha) {
    HY_EACH(i, total) { y[i] = hy_activate(x[i], act, alpha); }
}

// out[blockIdx.x] = Σ x² over the block's grid-stride share (the host sums the partials in f64).
extern "C" __global__ void sum_squares_f32(const float* x, float* out, long long total) {
    float acc = 0.0f;
    HY_EACH(i, total) { acc += x[i] * x[i]; }
    acc = hy_block_sum(acc);
    if (threadIdx.x == 0) out[blockIdx.x] = acc;
}

// The weight of input index `i` in output `o` of a ×2 bilinear upsampling (half-pixel centres,
// clamped at the borders) along an axis of input size `n`.
__device__ __forceinline__ float hy_bilinear2x_weight(int o, int i, int n) {
    float src = fmaxf((o + 0.5f) * 0.5f - 0.5f, 0.0f);
    int i0 = min((int)src, n - 1);
    int i1 = min(i0 + 1, n - 1);
    float l = src - (float)i0;
    return (i0 == i ? 1.0f - l : 0.0f) + (i1 == i ? l : 0.0f);
}

// Bilinear ×2 upsampling backward by gather: each input sums the outputs that read it, weighted.
extern "C" __global__ void upsample_bilinear2x_backward_f32(const float* dy, float* dx,
                                                            long long planes, int h, int w) {
    int oh = 2 * h, ow = 2 * w;
    HY_EACH(i, planes * h * w) {
        int ix = (int)(i % w);
        long long t = i / w;
        int iy = (int)(t % h);
        long long p = t / h;
        float acc = 0.0f;
        for (int oy = max(0, 2 * iy - 2); oy <= min(oh - 1, 2 * iy + 2); ++oy) {
            float wy = hy_bilinear2x_weight(oy, iy, h);
            if (wy == 0.0f) continue;
            for (int ox = max(0, 2 * ix - 2); ox <= min(ow - 1, 2 * ix + 2); ++ox) {
                float wx = hy_bilinear2x_weight(ox, ix, w);
                if (wx != 0.0f) acc += dy[(p * oh + oy) * ow + ox] * (wy * wx);
            }
        }
        dx[i] = acc;
    }
}

// Softmax along the middle axis of [outer, len, inner], one thread per (outer, inner) pair.
extern "C" __global__ void softmax_axis_f32(const float* x, float* y, long long outer, int len,
                                            long long inner) {
    HY_EACH(r, outer * inner) {
        long long base = (r / inner) * len * inner + r % inner;
        float m = HY_NEG_INF;
        for (int k = 0; k < len; ++k) m = fmaxf(m, x[base + k * inner]);
        float sum = 0.0f;
        for (int k = 0; k < len; ++k) sum += expf(x[base + k * inner] - m);
        for (int k = 0; k < len; ++k) y[base + k * inner] = expf(x[base + k * inner] - m) / sum;
    }
}

// Softmax + cross-entropy over the class axis of [n, classes, inner] logits in one pass, one
// block per (n, position) row: loss[r] = logsumexp − logit of the label; grad = (softmax −
// onehot)·grad_scale. Negative labels are ignored (loss and gradient 0).
extern "C" __global__ void softmax_xent_axis_f32(const float* logits, const int* labels,
                                                 float* loss, float* grad, int classes,
                                                 long long inner, float grad_scale) {
    long long r = blockIdx.x;
    long long base = (r / inner) * classes * inner + r % inner;
    int label = labels[r];
    float m = HY_NEG_INF;
    for (int j = threadIdx.x; j < classes; j += blockDim.x) m = fmaxf(m, logits[base + j * inner]);
    m = hy_block_max(m);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < classes; j += blockDim.x) sum += expf(logits[base + j * inner] - m);
    sum = hy_block_sum(sum);
    for (int j = threadIdx.x; j < classes; j += blockDim.x) {
        float g = 0.0f;
        if (label >= 0)
            g = (expf(logits[base + j * inner] - m) / sum - (j == label ? 1.0f : 0.0f)) * grad_scale;
        grad[base + j * inner] = g;
    }
    if (threadIdx.x == 0)
        loss[r] = label >= 0 ? logf(sum) + m - logits[base + (long long)label * inner] : 0.0f;
}

// Swaps the first two axes of [a, b, inner]: y[j, i, k] = x[i, j, k] (NCHW ↔ CNHW).
extern "C" __global__ void swap01_f32(const float* x, float* y, int a, int b, long long inner) {
    HY_EACH(t, (long long)a * b * inner) {
        long long k = t % inner;
        long long ij = t / inner;
        long long j = ij % b, i = ij / b;
        y[(j * a + i) * inner + k] = x[t];
    }
}

// y[r, :] = x[rows[r], :] for rows of `len` (a batch from a device feature cache).
extern "C" __global__ void gather_rows_f32(const float* x, const long long* rows, float* y,
                                           long long count, long long len) {
    HY_EACH(t, count * len) { y[t] = x[rows[t / len] * len + t % len]; }
}
