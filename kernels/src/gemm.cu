// Row-major GEMM with a fused epilogue, C[m, n] = act(sum_k A[m, k] * B(k, n) + bias[n]), where
// B is stored [N, K] (`trans_b` 1, a Linear weight) or [K, N] (`trans_b` 0). cuBLAS does large
// products; this tiled kernel serves the small ones and machines without cuBLAS.
// Block 16×16 threads, one output each; grid (ceil(N/16), ceil(M/16)).

#define HY_GT 16
template <typename T>
__device__ void gemm_tiled(const T* a, const T* b, const float* bias, T* c, int m, int n, int k,
                           int trans_b, int act, float alpha) {
    __shared__ float at[HY_GT][HY_GT + 1];
    __shared__ float bt[HY_GT][HY_GT + 1];
    int row = blockIdx.y * HY_GT + threadIdx.y;
    int col = blockIdx.x * HY_GT + threadIdx.x;
    float acc = 0.0f;
    for (int k0 = 0; k0 < k; k0 += HY_GT) {
        int ka = k0 + threadIdx.x;
        at[threadIdx.y][threadIdx.x] = (row < m && ka < k) ? hy_ld(a, (long long)row * k + ka) : 0.0f;
        int kb = k0 + threadIdx.y;
        float bv = 0.0f;
        if (col < n && kb < k)
            bv = trans_b ? hy_ld(b, (long long)col * k + kb) : hy_ld(b, (long long)kb * n + col);
        bt[threadIdx.y][threadIdx.x] = bv;
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < HY_GT; ++kk) acc += at[threadIdx.y][kk] * bt[kk][threadIdx.x];
        __syncthreads();
    }
    if (row < m && col < n) {
        if (bias) acc += bias[col];
        hy_st(c, (long long)row * n + col, hy_activate(acc, act, alpha));
    }
}

#define HY_GEMM(T, sfx)                                                                          \
    extern "C" __global__ void gemm_tiled_##sfx(const T* a, const T* b, const float* bias, T* c, \
                                                int m, int n, int k, int trans_b, int act,       \
                                                float alpha) {                                   \
        gemm_tiled<T>(a, b, bias, c, m, n, k, trans_b, act, alpha);                              \
    }
HY_TYPED(HY_GEMM)
