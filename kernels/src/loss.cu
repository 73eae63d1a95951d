// Softmax + cross-entropy, forward and backward in one pass: one block per row of `classes`
// logits. loss[r] = logsumexp(x[r]) - x[r, label[r]]; grad[r, j] = (softmax(x[r])_j -
// [j == label[r]]) * grad_scale (grad_scale is 1/rows for a mean). A negative label marks a row
// to ignore: its loss and gradient are 0. Labels at or above `classes` are refused on the host.

template <typename T>
__device__ void softmax_xent(const T* logits, const int* labels, float* loss, T* grad,
                             int classes, float grad_scale) {
    long long base = (long long)blockIdx.x * classes;
    int label = labels[blockIdx.x];
    float m = HY_NEG_INF;
    for (int j = threadIdx.x; j < classes; j += blockDim.x) m = fmaxf(m, hy_ld(logits, base + j));
    m = hy_block_max(m);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < classes; j += blockDim.x) sum += __expf(hy_ld(logits, base + j) - m);
    sum = hy_block_sum(sum);
    float inv = 1.0f / sum;
    for (int j = threadIdx.x; j < classes; j += blockDim.x) {
        float g = 0.0f;
        if (label >= 0) {
            g = __expf(hy_ld(logits, base + j) - m) * inv - (j == label ? 1.0f : 0.0f);
            g *= grad_scale;
        }
        hy_st(grad, base + j, g);
    }
    if (threadIdx.x == 0)
        loss[blockIdx.x] = label >= 0 ? logf(sum) + m - hy_ld(logits, base + label) : 0.0f;
}

#define HY_LOSS(T, sfx)                                                                          \
    extern "C" __global__ void softmax_xent_##sfx(const T* logits, const int* labels,            \
                                                  float* loss, T* grad, int classes,             \
                                                  float grad_scale) {                            \
        softmax_xent<T>(logits, labels, loss, grad, classes, grad_scale);                        \
    }
HY_TYPED(HY_LOSS)
