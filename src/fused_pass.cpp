// CPU driver of the fused sampler/site/moment pass (kernels/snep_fused.cuh).
//
// Work is split into tiles of TILE parameters.  For each tile the noise is
// first generated into a small stack buffer (a loop of independent Philox
// blocks that the compiler vectorises), then the update loop runs over the
// tile.  The tile stays in L1, so each parameter array is streamed once.
#include "fused_pass.hpp"

#include <omp.h>

#include <algorithm>

namespace snep {
namespace {

constexpr int64_t TILE = 1024;  // multiple of 4: noise blocks never straddle tiles
// Below this many tiles the pass runs on the calling thread: waking a thread
// team costs more than the pass, and far more when the cores are shared.
constexpr int64_t MIN_PARALLEL_TILES = 32;

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define SNEP_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SNEP_CLONES
#endif

SNEP_CLONES void noise_tile(float* out, int64_t first, int64_t count, uint64_t seed,
                            uint32_t stream, uint32_t chain, uint32_t step) {
    // first is a multiple of 4; the last block may be partial.
    const int64_t n_full = count / 4;
    const uint32_t block0 = (uint32_t)(first / 4);
    for (int64_t b = 0; b < n_full; ++b) {
        float z[4];
        normal4(seed, stream, chain, step, block0 + (uint32_t)b, z);
        out[4 * b + 0] = z[0];
        out[4 * b + 1] = z[1];
        out[4 * b + 2] = z[2];
        out[4 * b + 3] = z[3];
    }
    const int64_t rest = count - 4 * n_full;
    if (rest > 0) {
        float z[4];
        normal4(seed, stream, chain, step, block0 + (uint32_t)n_full, z);
        for (int64_t i = 0; i < rest; ++i) out[4 * n_full + i] = z[i];
    }
}

// The update loop over one tile.  The arrays never overlap; GCC ignores
// restrict on local pointers, hence `ivdep` (without it the loop stays scalar).
template <int KIND, int FLAGS>
SNEP_CLONES int64_t update_tile(const ChainArrays& a, int64_t first, int64_t count,
                                const float* __restrict xi, const FusedParams& params) {
    const FusedParams p = params;  // a local copy: stores to the arrays cannot alias it
    float* __restrict x = a.x + first;
    const float* __restrict grad = a.grad + first;
    const float* __restrict ap = a.anchor_prec + first;
    const float* __restrict apm = a.anchor_pm + first;
    float* __restrict sp = a.site_prec + first;
    float* __restrict spm = a.site_pm + first;
    const float* __restrict cp = a.cavity_prec + first;
    const float* __restrict cpm = a.cavity_pm + first;
    float* __restrict s1 = a.s1 + first;
    float* __restrict s2 = a.s2 + first;
    int fired = 0;
    if (FLAGS & F_ACC) {
        float* __restrict ax = a.acc_x + first;
        float* __restrict ax2 = a.acc_x2 + first;
#pragma GCC ivdep
        for (int64_t i = 0; i < count; ++i)
            fired += fused_update<KIND, FLAGS>(x[i], grad[i], ap[i], apm[i], sp[i], spm[i], cp[i],
                                               cpm[i], s1[i], s2[i], ax[i], ax2[i], xi[i], p);
    } else {
#pragma GCC ivdep
        for (int64_t i = 0; i < count; ++i) {
            float ax = 0.0f, ax2 = 0.0f;
            fired += fused_update<KIND, FLAGS>(x[i], grad[i], ap[i], apm[i], sp[i], spm[i], cp[i],
                                               cpm[i], s1[i], s2[i], ax, ax2, xi[i], p);
        }
    }
    return fired;
}

struct PassRunner {
    const ChainArrays* arrays;
    int64_t n_chains, n_params;
    const float* noise;
    const FusedParams& p;
    int n_threads;

    template <int KIND, int FLAGS>
    int64_t run() {
        const int64_t tiles_per_chain = (n_params + TILE - 1) / TILE;
        const int64_t n_tiles = tiles_per_chain * n_chains;
        int64_t fired = 0;
#pragma omp parallel for schedule(static) reduction(+ : fired) num_threads(n_threads) \
    if (n_tiles >= MIN_PARALLEL_TILES)
        for (int64_t t = 0; t < n_tiles; ++t) {
            const int64_t c = t / tiles_per_chain;
            const int64_t first = (t % tiles_per_chain) * TILE;
            const int64_t count = std::min(TILE, n_params - first);
            const float* xi;
            alignas(64) float buffer[TILE];
            if (noise != nullptr) {
                xi = noise + c * n_params + first;
            } else {
                noise_tile(buffer, first, count, p.seed, p.stream, (uint32_t)c, p.step);
                xi = buffer;
            }
            fired += update_tile<KIND, FLAGS>(arrays[c], first, count, xi, p);
        }
        return fired;
    }
};

}  // namespace

int64_t fused_pass_cpu(int kind, const ChainArrays* arrays, int64_t n_chains, int64_t n_params,
                       const float* noise, const FusedParams& params, int n_threads) {
    PassRunner runner{arrays, n_chains, n_params, noise, params, n_threads};
    return dispatch_kind_flags(kind, flags_of(params), runner);
}

void fill_normal_cpu(float* out, int64_t n_chains, int64_t n_params, uint64_t seed,
                     uint32_t stream, uint32_t step, uint32_t chain0, int n_threads) {
    const int64_t tiles_per_chain = (n_params + TILE - 1) / TILE;
    const int64_t n_tiles = tiles_per_chain * n_chains;
#pragma omp parallel for schedule(static) num_threads(n_threads) \
    if (n_tiles >= MIN_PARALLEL_TILES)
    for (int64_t t = 0; t < n_tiles; ++t) {
        const int64_t c = t / tiles_per_chain;
        const int64_t first = (t % tiles_per_chain) * TILE;
        const int64_t count = std::min(TILE, n_params - first);
        noise_tile(out + c * n_params + first, first, count, seed, stream,
                   chain0 + (uint32_t)c, step);
    }
}

SNEP_CLONES void reply_tile(const ChainArrays& a, const float* __restrict rp,
                            const float* __restrict rpm, int64_t first, int64_t count,
                            int scale_momentum) {
    float* __restrict x = a.x + first;
    // the fused pass only reads the cavity and anchor (const in ChainArrays); a reply writes them
    float* __restrict cp = const_cast<float*>(a.cavity_prec) + first;
    float* __restrict cpm = const_cast<float*>(a.cavity_pm) + first;
    float* __restrict ap = const_cast<float*>(a.anchor_prec) + first;
    float* __restrict apm = const_cast<float*>(a.anchor_pm) + first;
    const float* __restrict site = a.site_prec + first;
    const float* __restrict site_m = a.site_pm + first;
    float* __restrict mom = a.s1 + first;
    rp += first, rpm += first;
#pragma GCC ivdep
    for (int64_t i = 0; i < count; ++i)
        reply_update(x[i], cp[i], cpm[i], ap[i], apm[i], site[i], site_m[i], mom[i], rp[i], rpm[i],
                     scale_momentum);
}

void reply_update_cpu(const ChainArrays& a, const float* cavity_prec, const float* cavity_pm,
                      int64_t n_params, int scale_momentum, int n_threads) {
    const int64_t n_tiles = (n_params + TILE - 1) / TILE;
#pragma omp parallel for schedule(static) num_threads(n_threads) \
    if (n_tiles >= MIN_PARALLEL_TILES)
    for (int64_t t = 0; t < n_tiles; ++t) {
        const int64_t first = t * TILE;
        reply_tile(a, cavity_prec, cavity_pm, first,
                   std::min(TILE, n_params - first), scale_momentum);
    }
}

void philox_words_cpu(uint32_t* out, int64_t n_blocks, uint64_t seed, uint32_t stream,
                      uint32_t step, uint32_t chain) {
    for (int64_t b = 0; b < n_blocks; ++b)
        philox4x32<10>((uint32_t)b, chain, step, stream, (uint32_t)seed, (uint32_t)(seed >> 32),
                       out + 4 * b);
}

}  // namespace snep
