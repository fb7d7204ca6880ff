// Host (CPU) drivers of the per-parameter kernels in kernels/*.cuh.
#pragma once

#include <cstdint>

#include "snep_fused.cuh"

namespace snep {

// Runs the fused pass over `n_chains` chains of `n_params` parameters.  Chain c
// uses arrays[c].  `noise` (n_chains x n_params, row-major) replaces the
// in-kernel generator when not null.  Returns how often the guard fired.
int64_t fused_pass_cpu(int kind, const ChainArrays* arrays, int64_t n_chains, int64_t n_params,
                       const float* noise, const FusedParams& params, int n_threads);

// Fills out (n_chains x n_params) with the standard normals the fused pass uses
// for (seed, stream, step); chain c of out gets chain index chain0 + c.
void fill_normal_cpu(float* out, int64_t n_chains, int64_t n_params, uint64_t seed,
                     uint32_t stream, uint32_t step, uint32_t chain0, int n_threads);

// Applies a server reply (the new cavity) to one chain (reply_update over all n_params).
void reply_update_cpu(const ChainArrays& a, const float* cavity_prec, const float* cavity_pm,
                      int64_t n_params, int scale_momentum, int n_threads);

// Raw Philox4x32-10 words: out (n_blocks x 4) for counters (block, chain, step, stream).
void philox_words_cpu(uint32_t* out, int64_t n_blocks, uint64_t seed, uint32_t stream,
                      uint32_t step, uint32_t chain);

}  // namespace snep
