// Batched GEMMs of the MLP (Hasenclever et al., JMLR 18 (2017), section 6) with fused
// epilogues, for every chain c of a leading chain axis:
//
//     out[c] = epilogue(A[c] @ B[c])      A (C, M, K), B (C, K, N), out (C, M, N)
//
// Operands are strided views given by a pointer and element strides (chain, row, column),
// so a transpose is a swap of two strides and the layer weights are read in place from the
// flat (C, P) parameter array (and the weight gradient written into the flat gradient).
// Epilogues (template EPI, the codes of python/snep/backends/cuda/gemm_common.py):
//   0 none; 1 + bias[c * bias_sc + bias_off + j]; 2 bias + ReLU (epilogues.bias_relu);
//   3 ReLU mask by aux (epilogues.relu_grad: acc if aux[c, i, j] > 0 else 0).
// The scalar maths mirrors python/snep/model/epilogues.py (the source of truth).
//
// gemm[_<epilogue>]_float32: fp32 shared-memory tiled GEMM, the same tiling and indexing as
// the numba.cuda kernel of python/snep/backends/cuda/gemm.py (one oracle checks both):
// 64 x 64 output tiles per block of 16 x 16 threads, each thread 4 x 4 outputs at rows
// ty + 16 i and columns tx + 16 j, reduction chunks of 16 staged in shared memory
// (zero-filled past the edges), loads coalesced along the operand's smaller stride, and a
// tile loop (tile t: chain t / (tiles_m tiles_n), row (t / tiles_n) % tiles_m, column
// t % tiles_n) so any grid covers any size.  Launch with GEMM_THREADS threads per block.
//
// gemm_tf32[_<epilogue>]_float32: opt-in tensor-core variant, TF32 inputs (rounded to
// nearest with wmma::__float_to_tf32) and fp32 accumulation through nvcuda::wmma
// m16n16k8 fragments: 8 warps in a 4 x 2 grid, each two 16 x 16 fragments of the same
// 64 x 64 tile; the accumulators are staged in shared memory and stored through the same
// epilogue and thread mapping as the fp32 kernel.  Compiled for __CUDA_ARCH__ >= 800;
// on older architectures (or with SNEP_GEMM_NO_WMMA, e.g. when NVRTC cannot find mma.h)
// these entry points run the fp32 kernel, and mlp_gemm_tf32_enabled is 0.
//
// The launcher is python/snep/backends/cuda/gemm_raw.py (its GEMM_ARGS is the parameter
// list below, checked by tests/backends/test_cuda_launch_args.py).
#ifndef SNEP_GEMM_NO_WMMA
#include <mma.h>
#endif

#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 800) && !defined(SNEP_GEMM_NO_WMMA)
#define SNEP_GEMM_TF32 1
#else
#define SNEP_GEMM_TF32 0
#endif

namespace snep_gemm {

// Tiling (python/snep/backends/cuda/gemm_common.py: TILES, SMEM_PAD; compared by a test).
constexpr int GEMM_BM = 64;
constexpr int GEMM_BN = 64;
constexpr int GEMM_BK = 16;
constexpr int GEMM_TM = 4;
constexpr int GEMM_TN = 4;
constexpr int GEMM_SMEM_PAD = 1;
constexpr int THR_M = GEMM_BM / GEMM_TM;
constexpr int THR_N = GEMM_BN / GEMM_TN;
constexpr int GEMM_THREADS = THR_M * THR_N;
constexpr int A_LOADS = GEMM_BM * GEMM_BK / GEMM_THREADS;
constexpr int B_LOADS = GEMM_BK * GEMM_BN / GEMM_THREADS;
static_assert(GEMM_BM % GEMM_TM == 0 && GEMM_BN % GEMM_TN == 0, "tile / micro-tile");
static_assert((GEMM_BM * GEMM_BK) % GEMM_THREADS == 0, "A tile loads");
static_assert((GEMM_BK * GEMM_BN) % GEMM_THREADS == 0, "B tile loads");

constexpr int EPI_NONE = 0;
constexpr int EPI_BIAS = 1;
constexpr int EPI_BIAS_RELU = 2;
constexpr int EPI_RELU_GRAD = 3;

struct GemmArgs {
    const float* a;
    long long a_sc, a_sm, a_sk;
    const float* b;
    long long b_sc, b_sk, b_sn;
    float* out;
    long long o_sc, o_sm, o_sn;
    long long n_chains, m, n, k;
    const float* bias;
    long long bias_sc, bias_off;
    const float* aux;
    long long x_sc, x_sm, x_sn;
};

// The one store of output (c, i, j), through the epilogue.
template <int EPI>
__device__ __forceinline__ void store(const GemmArgs& g, long long c, long long i, long long j,
                                      float acc) {
    float v = acc;
    if constexpr (EPI == EPI_BIAS) {
        v = acc + g.bias[c * g.bias_sc + g.bias_off + j];
    } else if constexpr (EPI == EPI_BIAS_RELU) {
        const float z = acc + g.bias[c * g.bias_sc + g.bias_off + j];
        v = z > 0.0f ? z : 0.0f;  // epilogues.bias_relu
    } else if constexpr (EPI == EPI_RELU_GRAD) {
        v = g.aux[c * g.x_sc + i * g.x_sm + j * g.x_sn] > 0.0f ? acc : 0.0f;  // relu_grad
    }
    g.out[c * g.o_sc + i * g.o_sm + j * g.o_sn] = v;
}

// The (chain, first row, first column) of tile t.
struct TileOrigin {
    long long c, m0, n0;
};

__device__ __forceinline__ TileOrigin tile_origin(long long t, long long tiles_m,
                                                  long long tiles_n) {
    const long long col = t % tiles_n;
    const long long r = t / tiles_n;
    return {r / tiles_m, (r % tiles_m) * GEMM_BM, col * GEMM_BN};
}

// One thread's share of a BK-wide chunk of both operands: element e = tid + q * THREADS
// of the A tile (BM x BK) and of the B tile (BK x BN), zero past the matrix edges, with its
// place in the tile.  Consecutive threads take consecutive elements along the operand's
// smaller stride (coalesced loads).  All loads are issued before any shared-memory store.
struct Chunk {
    float va[A_LOADS], vb[B_LOADS];
    int am[A_LOADS], ak[A_LOADS];  // (row, k) of va[q] in the A tile
    int bk[B_LOADS], bn[B_LOADS];  // (k, column) of vb[q] in the B tile
};

__device__ __forceinline__ void load_chunk(const GemmArgs& g, bool a_k_fast, bool b_n_fast,
                                           int tid, const TileOrigin& o, long long k0,
                                           Chunk& r) {
#pragma unroll
    for (int q = 0; q < A_LOADS; ++q) {
        const int e = tid + q * GEMM_THREADS;
        int mm, kk;
        if (a_k_fast) {
            mm = e / GEMM_BK;
            kk = e - mm * GEMM_BK;
        } else {
            kk = e / GEMM_BM;
            mm = e - kk * GEMM_BM;
        }
        const long long gm = o.m0 + mm, gk = k0 + kk;
        r.va[q] = (gm < g.m && gk < g.k) ? g.a[o.c * g.a_sc + gm * g.a_sm + gk * g.a_sk] : 0.0f;
        r.am[q] = mm;
        r.ak[q] = kk;
    }
#pragma unroll
    for (int q = 0; q < B_LOADS; ++q) {
        const int e = tid + q * GEMM_THREADS;
        int kk, nn;
        if (b_n_fast) {
            kk = e / GEMM_BN;
            nn = e - kk * GEMM_BN;
        } else {
            nn = e / GEMM_BK;
            kk = e - nn * GEMM_BK;
        }
        const long long gn = o.n0 + nn, gk = k0 + kk;
        r.vb[q] = (gn < g.n && gk < g.k) ? g.b[o.c * g.b_sc + gk * g.b_sk + gn * g.b_sn] : 0.0f;
        r.bk[q] = kk;
        r.bn[q] = nn;
    }
}

template <int EPI>
__device__ void gemm_fp32(const GemmArgs& g) {
    __shared__ float a_s[GEMM_BK][GEMM_BM + GEMM_SMEM_PAD];
    __shared__ float b_s[GEMM_BK][GEMM_BN + GEMM_SMEM_PAD];
    const int tid = threadIdx.x;
    const int ty = tid / THR_N;
    const int tx = tid - ty * THR_N;
    const bool a_k_fast = g.a_sk <= g.a_sm;
    const bool b_n_fast = g.b_sn <= g.b_sk;
    const long long tiles_m = (g.m + GEMM_BM - 1) / GEMM_BM;
    const long long tiles_n = (g.n + GEMM_BN - 1) / GEMM_BN;
    const long long n_tiles = g.n_chains * tiles_m * tiles_n;
    for (long long t = blockIdx.x; t < n_tiles; t += gridDim.x) {
        const TileOrigin o = tile_origin(t, tiles_m, tiles_n);
        float acc[GEMM_TM][GEMM_TN];
#pragma unroll
        for (int i = 0; i < GEMM_TM; ++i)
#pragma unroll
            for (int j = 0; j < GEMM_TN; ++j) acc[i][j] = 0.0f;
        for (long long k0 = 0; k0 < g.k; k0 += GEMM_BK) {
Chunk r;
            load_chunk(g, a_k_fast, b_n_fast, tid, o, k0, r);
#pragma unroll
            for (int q = 0; q < A_LOADS; ++q) a_s[r.ak[q]][r.am[q]] = r.va[q];
#pragma unroll
            for (int q = 0; q < B_LOADS; ++q) b_s[r.bk[q]][r.bn[q]] = r.vb[q];
            __syncthreads();
#pragma unroll
            for (int kk = 0; kk < GEMM_BK; ++kk) {
                float a_r[GEMM_TM], b_r[GEMM_TN];
#pragma unroll
                for (int i = 0; i < GEMM_TM; ++i) a_r[i] = a_s[kk][ty + i * THR_M];
#pragma unroll
                for (int j = 0; j < GEMM_TN; ++j) b_r[j] = b_s[kk][tx + j * THR_N];
#pragma unroll
                for (int i = 0; i < GEMM_TM; ++i)
#pragma unroll
                    for (int j = 0; j < GEMM_TN; ++j) acc[i][j] += a_r[i] * b_r[j];
            }
            __syncthreads();
        }
#pragma unroll
        for (int i = 0; i < GEMM_TM; ++i) {
            const long long gm = o.m0 + ty + i * THR_M;
            if (gm < g.m) {
#pragma unroll
                for (int j = 0; j < GEMM_TN; ++j) {
                    const long long gn = o.n0 + tx + j * THR_N;
                    if (gn < g.n) store<EPI>(g, o.c, gm, gn, acc[i][j]);
                }
            }
        }
    }
}

#if SNEP_GEMM_TF32
// Tensor-core variant: the same tiles, tile loop, operand loads and epilogue mapping; the
// 64 x 64 x 16 chunk product runs on wmma m16n16k8 TF32 fragments.  Shared rows are padded
// by 4 floats so that every fragment starts on a 32-byte boundary (wmma's requirement) and
// the leading dimensions are multiples of 4.
constexpr int WM = 16, WN = 16, WK = 8;
constexpr int TF32_PAD = 4;
constexpr int WARPS_N = 2;                           // warps along the tile's columns
constexpr int FRAGS_N = GEMM_BN / (WARPS_N * WN);    // fragments per warp (2)
static_assert(GEMM_THREADS / 32 == (GEMM_BM / WM) * WARPS_N, "8 warps in a 4 x 2 grid");
static_assert(GEMM_BK % WK == 0, "chunk of whole k-steps");

template <int EPI>
__device__ void gemm_tf32(const GemmArgs& g) {
    using namespace nvcuda;
    __shared__ __align__(128) float a_s[GEMM_BM][GEMM_BK + TF32_PAD];  // row-major m x k
    __shared__ __align__(128) float b_s[GEMM_BK][GEMM_BN + TF32_PAD];  // row-major k x n
    __shared__ __align__(128) float c_s[GEMM_BM][GEMM_BN + TF32_PAD];
    const int tid = threadIdx.x;
    const int ty = tid / THR_N;
    const int tx = tid - ty * THR_N;
    const int warp = tid / 32;
    const int wy = warp / WARPS_N;
    const int wx = warp - wy * WARPS_N;
    const bool a_k_fast = g.a_sk <= g.a_sm;
    const bool b_n_fast = g.b_sn <= g.b_sk;
    const long long tiles_m = (g.m + GEMM_BM - 1) / GEMM_BM;
    const long long tiles_n = (g.n + GEMM_BN - 1) / GEMM_BN;
    const long long n_tiles = g.n_chains * tiles_m * tiles_n;
    for (long long t = blockIdx.x; t < n_tiles; t += gridDim.x) {
        const TileOrigin o = tile_origin(t, tiles_m, tiles_n);
        wmma::fragment<wmma::accumulator, WM, WN, WK, float> acc[FRAGS_N];
#pragma unroll
        for (int f = 0; f < FRAGS_N; ++f) wmma::fill_fragment(acc[f], 0.0f);
        for (long long k0 = 0; k0 < g.k; k0 += GEMM_BK) {
Chunk r;
            load_chunk(g, a_k_fast, b_n_fast, tid, o, k0, r);
#pragma unroll
            for (int q = 0; q < A_LOADS; ++q)
                a_s[r.am[q]][r.ak[q]] = wmma::__float_to_tf32(r.va[q]);
#pragma unroll
            for (int q = 0; q < B_LOADS; ++q)
                b_s[r.bk[q]][r.bn[q]] = wmma::__float_to_tf32(r.vb[q]);
            __syncthreads();
#pragma unroll
            for (int kk = 0; kk < GEMM_BK; kk += WK) {
                wmma::fragment<wmma::matrix_a, WM, WN, WK, wmma::precision::tf32,
                               wmma::row_major>
                    fa;
                wmma::load_matrix_sync(fa, &a_s[wy * WM][kk], GEMM_BK + TF32_PAD);
#pragma unroll
                for (int f = 0; f < FRAGS_N; ++f) {
                    wmma::fragment<wmma::matrix_b, WM, WN, WK, wmma::precision::tf32,
                                   wmma::row_major>
                        fb;
                    wmma::load_matrix_sync(fb, &b_s[kk][(wx * FRAGS_N + f) * WN],
                                           GEMM_BN + TF32_PAD);
                    wmma::mma_sync(acc[f], fa, fb, acc[f]);
                }
            }
            __syncthreads();
        }
#pragma unroll
        for (int f = 0; f < FRAGS_N; ++f)
            wmma::store_matrix_sync(&c_s[wy * WM][(wx * FRAGS_N + f) * WN], acc[f],
                                    GEMM_BN + TF32_PAD, wmma::mem_row_major);
        __syncthreads();
#pragma unroll
        for (int i = 0; i < GEMM_TM; ++i) {
            const long long gm = o.m0 + ty + i * THR_M;
            if (gm < g.m) {
#pragma unroll
                for (int j = 0; j < GEMM_TN; ++j) {
                    const long long gn = o.n0 + tx + j * THR_N;
                    if (gn < g.n) store<EPI>(g, o.c, gm, gn, c_s[ty + i * THR_M][tx + j * THR_N]);
                }
            }
        }
        __syncthreads();  // c_s is rewritten by the next tile
    }
}
#else
template <int EPI>
__device__ void gemm_tf32(const GemmArgs& g) {
    gemm_fp32<EPI>(g);  // no tensor cores here (see mlp_gemm_tf32_enabled)
}
#endif

}  // namespace snep_gemm

// 1 where the gemm_tf32_* entry points of this image use tensor cores (read by the launcher).
extern "C" {
__device__ int mlp_gemm_tf32_enabled = SNEP_GEMM_TF32;
}

// (threads per block, minimum resident blocks per SM): caps the registers so that 3 (fp32:
// 80 registers) or 2 (TF32: 128) blocks fit on an SM without spills (ptxas -v, sm_80/90);
// without the cap ptxas used 154-229 registers and one block per SM.
#define GEMM_FP32_BOUNDS 256, 3
#define GEMM_TF32_BOUNDS 256, 2

#define SNEP_GEMM_ARGS_STRUCT                                                                  \
    snep_gemm::GemmArgs {                                                                      \
        a, a_sc, a_sm, a_sk, b, b_sc, b_sk, b_sn, out, o_sc, o_sm, o_sn, n_chains, m, n, k,    \
            bias, bias_sc, bias_off, aux, x_sc, x_sm, x_sn                                     \
    }

// Every entry point takes the same parameters (GEMM_ARGS of the launcher); strides are in
// elements; bias / aux may be null where the epilogue does not read them.
extern "C" __global__ void __launch_bounds__(GEMM_FP32_BOUNDS) gemm_float32(
    const float* a, long long a_sc, long long a_sm, long long a_sk, const float* b,
    long long b_sc, long long b_sk, long long b_sn, float* out, long long o_sc, long long o_sm,
    long long o_sn, long long n_chains, long long m, long long n, long long k,
    const float* bias, long long bias_sc, long long bias_off, const float* aux, long long x_sc,
    long long x_sm, long long x_sn) {
    snep_gemm::gemm_fp32<snep_gemm::EPI_NONE>(SNEP_GEMM_ARGS_STRUCT);
}

extern "C" __global__ void __launch_bounds__(GEMM_FP32_BOUNDS) gemm_bias_float32(
    const float* a, long long a_sc, long long a_sm, long long a_sk, const float* b,
    long long b_sc, long long b_sk, long long b_sn, float* out, long long o_sc, long long o_sm,
    long long o_sn, long long n_chains, long long m, long long n, long long k,
    const float* bias, long long bias_sc, long long bias_off, const float* aux, long long x_sc,
    long long x_sm, long long x_sn) {
    snep_gemm::gemm_fp32<snep_gemm::EPI_BIAS>(SNEP_GEMM_ARGS_STRUCT);
}

extern "C" __global__ void __launch_bounds__(GEMM_FP32_BOUNDS) gemm_bias_relu_float32(
    const float* a, long long a_sc, long long a_sm, long long a_sk, const float* b,
    long long b_sc, long long b_sk, long long b_sn, float* out, long long o_sc, long long o_sm,
    long long o_sn, long long n_chains, long long m, long long n, long long k,
    const float* bias, long long bias_sc, long long bias_off, const float* aux, long long x_sc,
    long long x_sm, long long x_sn) {
    snep_gemm::gemm_fp32<snep_gemm::EPI_BIAS_RELU>(SNEP_GEMM_ARGS_STRUCT);
}

extern "C" __global__ void __launch_bounds__(GEMM_FP32_BOUNDS) gemm_relu_grad_float32(
    const float* a, long long a_sc, long long a_sm, long long a_sk, const float* b,
    long long b_sc, long long b_sk, long long b_sn, float* out, long long o_sc, long long o_sm,
    long long o_sn, long long n_chains, long long m, long long n, long long k,
    const float* bias, long long bias_sc, long long bias_off, const float* aux, long long x_sc,
    long long x_sm, long long x_sn) {
    snep_gemm::gemm_fp32<snep_gemm::EPI_RELU_GRAD>(SNEP_GEMM_ARGS_STRUCT);
}

extern "C" __global__ void __launch_bounds__(GEMM_TF32_BOUNDS) gemm_tf32_float32(
    const float* a, long long a_sc, long long a_sm, long long a_sk, const float* b,
    long long b_sc, long long b_sk, long long b_sn, float* out, long long o_sc, long long o_sm,
    long long o_sn, long long n_chains, long long m, long long n, long long k,
    const float* bias, long long bias_sc, long long bias_off, const float* aux, long long x_sc,
    long long x_sm, long long x_sn) {
    snep_gemm::gemm_tf32<snep_gemm::EPI_NONE>(SNEP_GEMM_ARGS_STRUCT);
}

extern "C" __global__ void __launch_bounds__(GEMM_TF32_BOUNDS) gemm_tf32_bias_float32(
    const float* a, long long a_sc, long long a_sm, long long a_sk, const float* b,
    long long b_sc, long long b_sk, long long b_sn, float* out, long long o_sc, long long o_sm,
    long long o_sn, long long n_chains, long long m, long long n, long long k,
    const float* bias, long long bias_sc, long long bias_off, const float* aux, long long x_sc,
    long long x_sm, long long x_sn) {
    snep_gemm::gemm_tf32<snep_gemm::EPI_BIAS>(SNEP_GEMM_ARGS_STRUCT);
}

extern "C" __global__ void __launch_bounds__(GEMM_TF32_BOUNDS) gemm_tf32_bias_relu_float32(
    const float* a, long long a_sc, long long a_sm, long long a_sk, const float* b,
    long long b_sc, long long b_sk, long long b_sn, float* out, long long o_sc, long long o_sm,
    long long o_sn, long long n_chains, long long m, long long n, long long k,
    const float* bias, long long bias_sc, long long bias_off, const float* aux, long long x_sc,
    long long x_sm, long long x_sn) {
    snep_gemm::gemm_tf32<snep_gemm::EPI_BIAS_RELU>(SNEP_GEMM_ARGS_STRUCT);
}

extern "C" __global__ void __launch_bounds__(GEMM_TF32_BOUNDS) gemm_tf32_relu_grad_float32(
    const float* a, long long a_sc, long long a_sm, long long a_sk, const float* b,
    long long b_sc, long long b_sk, long long b_sn, float* out, long long o_sc, long long o_sm,
    long long o_sn, long long n_chains, long long m, long long n, long long k,
    const float* bias, long long bias_sc, long long bias_off, const float* aux, long long x_sc,
    long long x_sm, long long x_sn) {
    snep_gemm::gemm_tf32<snep_gemm::EPI_RELU_GRAD>(SNEP_GEMM_ARGS_STRUCT);
}

// ---------------------------------------------------------------------------------------
// The elementwise passes between the GEMMs of the C++ path (gemm="tiled-cpp"/"tiled-tf32"),
// the same maths and thread mapping as the numba.cuda kernels of
// python/snep/backends/cuda/epilogues.py (scalar maths: python/snep/model/epilogues.py).
// Grid-stride loops; launch with any grid of EPILOGUE_THREADS-thread blocks.
// ---------------------------------------------------------------------------------------
namespace snep_epi {

__device__ __forceinline__ float nan_f() { return __int_as_float(0x7fc00000); }
__device__ __forceinline__ double nan_d() { return __longlong_as_double(0x7ff8000000000000LL); }

}  // namespace snep_epi

// softmax_xent_float32: one thread per row r of the (rows, k) logits (rows = chains x batch):
// row_ll[r] = log p(label | z) = z[label] - logsumexp(z) (max-shifted), and
// dlogits[r] = onehot(label) - softmax(z) (epilogues.softmax_xent_row).  A label outside
// [0, k) cannot raise on the device: its row gets NaN in row_ll and dlogits.
extern "C" __global__ void softmax_xent_float32(const float* logits, const int* labels,
                                                float* dlogits, double* row_ll,
                                                long long n_rows, long long k) {
    for (long long r = blockIdx.x * (long long)blockDim.x + threadIdx.x; r < n_rows;
         r += (long long)gridDim.x * blockDim.x) {
        const float* z = logits + r * k;
        float* dz = dlogits + r * k;
        const int label = labels[r];
        if (label < 0 || label >= k) {
            row_ll[r] = snep_epi::nan_d();
            for (long long kk = 0; kk < k; ++kk) dz[kk] = snep_epi::nan_f();
            continue;
        }
        float m = z[0];
        for (long long kk = 1; kk < k; ++kk)
            if (z[kk] > m) m = z[kk];
        float s = 0.0f;
        for (long long kk = 0; kk < k; ++kk) {
            const float e = expf(z[kk] - m);
            dz[kk] = e;
            s += e;
        }
        for (long long kk = 0; kk < k; ++kk) dz[kk] = -(dz[kk] / s);
        dz[label] += 1.0f;
        row_ll[r] = (double)(z[label] - m - logf(s));
    }
}

// loglik_sum_float64: out[c] = sum over the n_rows rows of chain c of row_ll, in float64 and
// in row order (reproducible); one thread per chain.
extern "C" __global__ void loglik_sum_float64(const double* row_ll, double* out,
                                              long long n_chains, long long n_rows) {
    for (long long c = blockIdx.x * (long long)blockDim.x + threadIdx.x; c < n_chains;
         c += (long long)gridDim.x * blockDim.x) {
        double acc = 0.0;
        for (long long i = 0; i < n_rows; ++i) acc += row_ll[c * n_rows + i];
        out[c] = acc;
    }
}

// bias_grad_float32: g[c * g_sc + off + j] = sum_i dz[c, i, j] over the rows of the
// contiguous (n_chains, n_rows, n) dz, in float32 and row order; one thread per (c, j), so
// neighbouring threads read neighbouring addresses.  g is the flat (C, P) gradient.
extern "C" __global__ void bias_grad_float32(const float* dz, float* g, long long n_chains,
                                             long long n_rows, long long n, long long g_sc,
                                             long long off) {
    const long long total = n_chains * n;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const long long c = t / n;
        const long long j = t - c * n;
        const float* col = dz + c * n_rows * n + j;
        float acc = 0.0f;
        for (long long i = 0; i < n_rows; ++i) acc += col[i * n];
        g[c * g_sc + off + j] = acc;
    }
}
