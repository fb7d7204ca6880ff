// Counter-based Gaussian noise shared by the CPU extension (src/) and the CUDA
// kernels (kernels/*.cu): one source of truth for the numbers a chain sees.
//
// Generator: Philox4x32-10 (Salmon, Moraes, Dror & Shaw, "Parallel random
// numbers: as easy as 1, 2, 3", SC 2011).  Key = the 64-bit seed, counter =
// (block, chain, step, stream).  Each call yields four 32-bit words, turned
// into four standard normals by the Box-Muller transform with float32
// polynomial log and sin/cos (no libm calls, so the loop vectorises).  The
// round count is a template parameter only so that bench/noise_cost.py can time
// Philox4x32-7, the paper's smallest Crush-resistant count (issue 14); every
// kernel draws with 10.
//
// The mapping from words to normals is part of the interface (the numpy
// reference in python/snep/maths/noise.py reproduces it):
//   u  = ((w0 >> 8) + 0.5) * 2^-24            in (0, 1)
//   t  = ((w1 >> 8) + 0.5) * 2^-23 - 1        in (-1, 1)
//   r  = sqrt(-2 ln u),  z0 = r cos(pi t),  z1 = r sin(pi t)
// and likewise (w2, w3) -> (z2, z3).  |z| <= sqrt(2 * 25 ln 2) = 5.89: the
// tails beyond 5.89 sigma (probability 4e-9) are not produced.
#pragma once

#if defined(__CUDACC_RTC__)
// NVRTC has no C headers: fixed-width types from the builtin ones.
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
#else
#include <math.h>
#include <stdint.h>
#endif

#if defined(__CUDACC__)
#define SNEP_HD __host__ __device__ __forceinline__
#else
#define SNEP_HD static inline __attribute__((always_inline))
#endif

namespace snep {

SNEP_HD uint32_t mulhilo32(uint32_t a, uint32_t b, uint32_t* hi) {
    const uint64_t p = (uint64_t)a * (uint64_t)b;
    *hi = (uint32_t)(p >> 32);
    return (uint32_t)p;
}

// Philox4x32 with ROUNDS rounds; ctr and key are taken by value, out gets 4 words.
template <int ROUNDS = 10>
SNEP_HD void philox4x32(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                        uint32_t k1, uint32_t out[4]) {
    const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
    const uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
#if defined(__CUDACC__)
#pragma unroll
#endif
    for (int r = 0; r < ROUNDS; ++r) {
        uint32_t hi0, hi1;
        const uint32_t lo0 = mulhilo32(M0, c0, &hi0);
        const uint32_t lo1 = mulhilo32(M1, c2, &hi1);
        const uint32_t n0 = hi1 ^ c1 ^ k0;
        const uint32_t n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
        k0 += W0;
        k1 += W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

SNEP_HD float bits_as_float(uint32_t u) {
    union {
        uint32_t u;
        float f;
    } v;
    v.u = u;
    return v.f;
}

SNEP_HD uint32_t float_as_bits(float f) {
    union {
        uint32_t u;
        float f;
    } v;
    v.f = f;
    return v.u;
}

// Natural log of a positive, normal float32 (max error ~2 ulp): the argument is
// split as 2^e * m with m in [sqrt(1/2), sqrt(2)), and log(m) = 2 atanh(s),
// s = (m - 1) / (m + 1), summed to s^9 (truncation < 1e-9).
SNEP_HD float fast_logf(float x) {
    const uint32_t bits = float_as_bits(x);
    int e = (int)((bits >> 23) & 0xffu) - 127;
    float m = bits_as_float((bits & 0x007fffffu) | 0x3f800000u);  // [1, 2)
    const bool big = m > 1.41421356f;
    m = big ? 0.5f * m : m;
    e = big ? e + 1 : e;
    const float f = m - 1.0f;
    const float s = f / (2.0f + f);
    const float s2 = s * s;
    const float p =
        1.0f + s2 * (0.333333333f + s2 * (0.2f + s2 * (0.142857143f + s2 * 0.111111111f)));
    return (float)e * 0.693147181f + 2.0f * s * p;
}

// sin(pi t) and cos(pi t) for t in [-1, 1]: Taylor polynomials of the half
// angle a = pi t / 2 in [-pi/2, pi/2] (truncation < 6e-8), then the double-angle
// formulas.
SNEP_HD void fast_sincospi(float t, float* s_out, float* c_out) {
    const float a = 1.57079633f * t;
    const float a2 = a * a;
    const float s =
        a * (1.0f + a2 * (-1.66666667e-1f +
                          a2 * (8.33333333e-3f +
                                a2 * (-1.98412698e-4f + a2 * (2.75573192e-6f +
                                                              a2 * -2.50521084e-8f)))));
    const float c =
        1.0f + a2 * (-0.5f + a2 * (4.16666667e-2f +
                                   a2 * (-1.38888889e-3f +
                                         a2 * (2.48015873e-5f +
                                               a2 * (-2.75573192e-7f + a2 * 2.08767570e-9f)))));
    *s_out = 2.0f * s * c;
    *c_out = (c - s) * (c + s);
}

SNEP_HD void box_muller(uint32_t wu, uint32_t wt, float* z0, float* z1) {
    const float u = ((float)(wu >> 8) + 0.5f) * 5.9604644775390625e-8f;        // 2^-24
    const float t = ((float)(wt >> 8) + 0.5f) * 1.1920928955078125e-7f - 1.0f;  // 2^-23
    const float r = sqrtf(-2.0f * fast_logf(u));
    float s, c;
    fast_sincospi(t, &s, &c);
    *z0 = r * c;
    *z1 = r * s;
}

// Four standard normals for elements 4*block .. 4*block+3 of one chain.
template <int ROUNDS = 10>
SNEP_HD void normal4(uint64_t seed, uint32_t stream, uint32_t chain, uint32_t step,
                     uint32_t block, float z[4]) {
    uint32_t w[4];
    philox4x32<ROUNDS>(block, chain, step, stream, (uint32_t)seed, (uint32_t)(seed >> 32), w);
    box_muller(w[0], w[1], &z[0], &z[1]);
    box_muller(w[2], w[3], &z[2], &z[3]);
}

}  // namespace snep
