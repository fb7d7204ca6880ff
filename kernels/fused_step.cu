// CUDA entry points of the fused sampler/site/moment pass, of the noise generator and
// of the reply update.  The per-parameter maths is kernels/snep_fused.cuh, shared with
// the CPU extension; the launchers are python/snep/backends/cuda/fused.py.  Arrays are
// (n_chains, n_params) float32, row-major.
#include "snep_fused.cuh"

namespace {

// One thread per block of four parameters (one Philox call); grid-stride.
struct FusedStepDevice {
    snep::ChainArrays base;  // chain 0's pointers; chain c is offset by c * n_params
    const float* noise;
    long long n_chains, n_params;
    const snep::FusedParams& p;

    template <int KIND, int FLAGS>
    __device__ unsigned int run() {
        const long long blocks_per_chain = (n_params + 3) / 4;
        const long long total = blocks_per_chain * n_chains;
        unsigned int fired = 0;
        for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
             t += (long long)gridDim.x * blockDim.x) {
            const long long c = t / blocks_per_chain;
            const long long b = t % blocks_per_chain;
            const long long o = c * n_params;
            snep::ChainArrays a{base.x + o,           base.grad + o,
                                base.anchor_prec + o, base.anchor_pm + o,
                                base.site_prec + o,   base.site_pm + o,
                                base.cavity_prec + o, base.cavity_pm + o,
                                base.s1 + o,          base.s2 + o,
                                base.acc_x ? base.acc_x + o : nullptr,
                                base.acc_x2 ? base.acc_x2 + o : nullptr};
            float z[4];
            if (noise == nullptr)
                snep::normal4(p.seed, p.stream, (unsigned)c, p.step, (unsigned)b, z);
            for (int i = 0; i < 4; ++i) {
                const long long j = 4 * b + i;
                if (j < n_params) {
                    const float xi = noise ? noise[o + j] : z[i];
                    fired += snep::fused_element<KIND, FLAGS>(a, j, xi, p);
                }
            }
        }
        return fired;
    }
};

}  // namespace

namespace {

__device__ void fused_step_body(int kind, float* x, const float* grad, const float* anchor_prec,
                                const float* anchor_pm, float* site_prec, float* site_pm,
                                const float* cavity_prec, const float* cavity_pm, float* s1,
                                float* s2, float* acc_x, float* acc_x2, const float* noise,
                                long long n_chains, long long n_params,
                                const snep::FusedParams& p, unsigned long long* fired_out) {
    FusedStepDevice f{{x, grad, anchor_prec, anchor_pm, site_prec, site_pm, cavity_prec,
                       cavity_pm, s1, s2, acc_x, acc_x2},
                      noise,
                      n_chains,
                      n_params,
                      p};
    const unsigned int fired = snep::dispatch_kind_flags(kind, snep::flags_of(p), f);
    if (fired) atomicAdd(fired_out, (unsigned long long)fired);
}

}  // namespace

// fused_step_float32: `kind` is snep::SamplerKind; the scalars come by value; the guard
// count is added to *fired_out.
extern "C" __global__ void fused_step_float32(
    int kind, float* x, const float* grad, const float* anchor_prec, const float* anchor_pm,
    float* site_prec, float* site_pm, const float* cavity_prec, const float* cavity_pm, float* s1,
    float* s2, float* acc_x, float* acc_x2, const float* noise, long long n_chains,
    long long n_params, snep::FusedParams p, unsigned long long* fired_out) {
    fused_step_body(kind, x, grad, anchor_prec, anchor_pm, site_prec, site_pm, cavity_prec,
                    cavity_pm, s1, s2, acc_x, acc_x2, noise, n_chains, n_params, p, fired_out);
}

// fused_step_dparams_float32: the same pass with the scalars read from device memory at
// run time, so that a CUDA graph which captured the launch sees the values of each replay
// (the host writes the next step's struct there before launching the graph).
extern "C" __global__ void fused_step_dparams_float32(
    int kind, float* x, const float* grad, const float* anchor_prec, const float* anchor_pm,
    float* site_prec, float* site_pm, const float* cavity_prec, const float* cavity_pm, float* s1,
    float* s2, float* acc_x, float* acc_x2, const float* noise, long long n_chains,
    long long n_params, const snep::FusedParams* p, unsigned long long* fired_out) {
    const snep::FusedParams pv = *p;
    fused_step_body(kind, x, grad, anchor_prec, anchor_pm, site_prec, site_pm, cavity_prec,
                    cavity_pm, s1, s2, acc_x, acc_x2, noise, n_chains, n_params, pv, fired_out);
}

extern "C" __global__ void fill_normal_float32(float* out, long long n_chains,
                                               long long n_params, unsigned long long seed,
                                               unsigned int stream, unsigned int step,
                                               unsigned int chain0) {
    const long long blocks_per_chain = (n_params + 3) / 4;
    const long long total = blocks_per_chain * n_chains;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const long long c = t / blocks_per_chain;
        const long long b = t % blocks_per_chain;
        float z[4];
        snep::normal4(seed, stream, chain0 + (unsigned)c, step, (unsigned)b, z);
        for (int i = 0; i < 4; ++i) {
            const long long j = 4 * b + i;
            if (j < n_params) out[c * n_params + j] = z[i];
        }
    }
}

// reply_update_float32: a server reply applied to every chain, one thread per parameter
// of each chain, grid-stride: snep::reply_update, the function the CPU extension runs
// (src/fused_pass.cpp), so both backends compute the reply from one source.  The reply's
// cavity of chain c starts at reply_prec + c * reply_stride (0: one cavity for all chains).
extern "C" __global__ void reply_update_float32(
    float* x, float* cavity_prec, float* cavity_pm, float* anchor_prec, float* anchor_pm,
    const float* site_prec, const float* site_pm, float* momentum, const float* reply_prec,
    const float* reply_pm, long long n_chains, long long n_params, long long reply_stride,
    int scale_momentum) {
    const long long total = n_chains * n_params;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const long long c = t / n_params;
        const long long r = c * reply_stride + (t - c * n_params);
        snep::reply_update(x[t], cavity_prec[t], cavity_pm[t], anchor_prec[t], anchor_pm[t],
                           site_prec[t], site_pm[t], momentum[t], reply_prec[r], reply_pm[r],
                           scale_momentum);
    }
}
