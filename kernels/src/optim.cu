// Optimizer updates, one kernel each, on f32 master weights, matching hydrant's CPU optimizer
// (runtime/src/train/optim.rs) step for step.

// AdamW (decoupled weight decay): p *= 1 - lr*wd; m += (g - m)(1 - b1); v = b2 v + (1 - b2) g²;
// p -= (lr / bc1) * m / (sqrt(v) / bc2_sqrt + eps), with bc1 = 1 - b1^t, bc2_sqrt = sqrt(1 - b2^t).
extern "C" __global__ void adamw_f32(float* p, const float* g, float* m, float* v, long long total,
                                     float lr, float beta1, float beta2, float eps,
                                     float weight_decay, float bc1, float bc2_sqrt) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        float gi = g[i];
        float pi = p[i] * (1.0f - lr * weight_decay);
        float mi = m[i] + (gi - m[i]) * (1.0f - beta1);
        float vi = v[i] * beta2 + (1.0f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - (lr / bc1) * mi / (sqrtf(vi) / bc2_sqrt + eps);
    }
}

// SGD with momentum: d = g + wd p; buf = first ? d : momentum buf + (1 - dampening) d;
// d = nesterov ? d + momentum buf : buf; p -= lr d. With momentum 0, `buf` is unused (may be null).
extern "C" __global__ void sgd_momentum_f32(float* p, const float* g, float* buf, long long total,
                                            float lr, float momentum, float dampening,
                                            float weight_decay, int nesterov, int first) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        float d = g[i] + weight_decay * p[i];
        if (momentum > 0.0f) {
            float b = first ? d : momentum * buf[i] + (1.0f - dampening) * d;
            buf[i] = b;
            d = nesterov ? d + momentum * b : b;
        }
        p[i] -= lr * d;
    }
}
