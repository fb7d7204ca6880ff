// The fused per-parameter pass of a SNEP worker iteration: one source of truth
// shared by the CPU extension (src/fused_pass.cpp) and the CUDA kernel
// (kernels/fused_step.cu).  The float64 numpy oracle is
// python/snep/maths/oracles.py; the two must change together.
//
// For one parameter of one chain it
//   1. forms the tilted distribution's Gaussian factor eta = anchor - site/beta
//      (Hasenclever et al. 2017, SNEP), guarding a non-positive precision,
//   2. takes one SG-MCMC step on the tilted log density
//        lik_scale * grad_loglik + (h_eta - Lambda_eta * x),
//      with SGLD (Welling & Teh 2011), preconditioned SGLD (Li et al. 2016),
//      SGHMC (Chen, Fox & Guestrin 2014) or the reference Adam-SGLD,
//   3. optionally accumulates the moments (x, x^2) of the samples,
//   4. optionally takes the SNEP inner natural-gradient step on the site,
//        gamma <- Proj(gamma + eps_site * (s(x) - mu_loc)),  site <- natural(gamma),
//      where gamma are the site's mean parameters (m, m^2 + v) and mu_loc those of
//      the local posterior cavity + site, and Proj clips m to [m_lo, m_hi] and v to
//      [v_lo, v_hi].
#pragma once

#include "snep_rng.cuh"

namespace snep {

SNEP_HD float clampf(float v, float lo, float hi) {
    v = v < lo ? lo : v;
    return v > hi ? hi : v;
}

enum SamplerKind : int { SGLD = 0, PSGLD = 1, SGHMC = 2, ADAM_SGLD = 3 };

// Share of the site's precision / beta (the likelihood's curvature, as the site
// estimates it) by which the tilted factor's precision may fall below prec_floor
// before the guard fires (python/snep/maths/oracles.py: GUARD_SLACK).
constexpr float GUARD_SLACK = 0.5f;

// Scalars of one pass.  Plain data so that host code can fill it and pass it
// to a kernel by value.
struct FusedParams {
    // tilted distribution
    float lik_scale;   // N_i / (beta * |B| * temperature)
    float inv_beta;    // 1 / beta
    float prec_floor;  // guard: Lambda_eta is raised to at least this
    // sampler
    float step_size;    // SGLD/pSGLD epsilon, SGHMC learning rate eta, Adam-SGLD h
    float noise_scale;  // 1 samples the target; 0 turns the sampler into its optimiser
    float rms_decay;    // pSGLD: a in V <- a V + (1 - a) g^2
    float rms_eps;      // pSGLD: lambda in G = 1 / (lambda + sqrt(V))
    float friction;     // SGHMC: alpha
    float beta1;        // Adam: first-moment decay (0: drift uses the raw gradient)
    float beta2;        // Adam: second-moment decay
    float adam_eps;     // Adam: delta
    float bias_corr1;   // Adam: 1 - beta1^t
    float bias_corr2;   // Adam: 1 - beta2^t
    float kappa;        // Adam-SGLD: noise clip is min(h * kappa, sqrt(2 alpha_t))
    int gamma_term;     // pSGLD: add the Gamma correction term
    // moments and site update
    int accumulate;     // add x and x^2 to the accumulators
    int update_site;    // take the SNEP site step after the sampler step
    float inv_n_acc;    // > 0: the site step uses acc / n_acc (then zeroes acc); 0: uses x
    float site_step;    // eps_t
    float m_lo, m_hi, v_lo, v_hi;
    // noise
    uint64_t seed;
    uint32_t step;
    uint32_t stream;
};

// Pointers to one chain's arrays (all of length P).  s1/s2 are the sampler
// state: pSGLD V in s1; SGHMC momentum in s1; Adam m in s1 and v in s2.
// acc_x/acc_x2 may be null when accumulate == 0 and inv_n_acc == 0.
struct ChainArrays {
    float* x;
    const float* grad;
    const float* anchor_prec;
    const float* anchor_pm;
    float* site_prec;
    float* site_pm;
    const float* cavity_prec;
    const float* cavity_pm;
    float* s1;
    float* s2;
    float* acc_x;
    float* acc_x2;
};

// One parameter, on values in registers: x, site (sp, spm), sampler state
// (s1, s2) and, when ACC, accumulators (ax, ax2) are updated in place; `xi` is
// the parameter's standard normal.  Returns 1 when the precision guard fired.
// The flags are compile-time (FLAGS = flags_of(p)) so that host loops over
// this function vectorise: GCC does not vectorise selects on a loop-invariant
// run-time bool.
enum PassFlags : int { F_ACC = 1, F_SITE = 2, F_FROM_ACC = 4, F_GAMMA = 8 };

SNEP_HD int flags_of(const FusedParams& p) {
    const bool acc = p.accumulate != 0, site = p.update_site != 0;
    return (acc ? F_ACC : 0) | (site ? F_SITE : 0) |
           (acc && site && p.inv_n_acc > 0.0f ? F_FROM_ACC : 0) |
           (p.gamma_term ? F_GAMMA : 0);
}

template <int KIND, int FLAGS>
SNEP_HD int fused_update(float& x, float grad, float ap, float apm, float& sp, float& spm,
                         float cp, float cpm, float& s1, float& s2, float& ax, float& ax2,
                         float xi, const FusedParams& p) {
    // 1. Gaussian factor of the tilted distribution, with the precision guard.  The
    // tilted density is eta * lik^(1/beta), and the site / beta stands for the
    // likelihood's curvature, so its precision is about Lambda_eta + sp / beta: the
    // factor may be improper as long as that stays clearly positive.  The guard
    // raises Lambda_eta to at least prec_floor - GUARD_SLACK * sp / beta (the
    // tilted precision stays >= about half the site's) and keeps the precision-mean
    // h_eta, the cavity's coupling force: the method is kept, and the guard fires
    // only where the site says the tilted distribution would be improper.
    float lam_eta = ap - sp * p.inv_beta;
    const float h_eta = apm - spm * p.inv_beta;
    const float lam_min = p.prec_floor - GUARD_SLACK * sp * p.inv_beta;
    const int fired = lam_eta < lam_min;
    lam_eta = fired ? lam_min : lam_eta;
    const float g = p.lik_scale * grad + (h_eta - lam_eta * x);

    // 2. sampler step
    const float eps = p.step_size;
    if (KIND == SGLD) {
        x += 0.5f * eps * g + p.noise_scale * sqrtf(eps) * xi;
    } else if (KIND == PSGLD) {
        const float v = p.rms_decay * s1 + (1.0f - p.rms_decay) * g * g;
        s1 = v;
        // bias_corr2 = 1 - rms_decay^t: V starts at 0, and G = 1 / (lambda + 0) would
        // make the first steps enormous (the host sets it for pSGLD; 1 disables it)
        const float sv = sqrtf(v / p.bias_corr2);
        const float G = 1.0f / (p.rms_eps + sv);
        // Gamma_j = dG_j/dx_j with V a function of x through g, and dg_j/dx_j
        // approximated by the curvature -Lambda_eta of the Gaussian factor
        // (exact for the prior part); d sqrt(V / bias_corr2) / dV carries the
        // 1 / bias_corr2 of the bias correction.
        const float gamma =
            G * G * (1.0f - p.rms_decay) * g * lam_eta / ((sv + 1e-30f) * p.bias_corr2);
        const float drift = (FLAGS & F_GAMMA) ? G * g + gamma : G * g;
        x += 0.5f * eps * drift + p.noise_scale * sqrtf(eps * G) * xi;
    } else if (KIND == SGHMC) {
        const float mom =
            (1.0f - p.friction) * s1 + eps * g + p.noise_scale * sqrtf(2.0f * p.friction * eps) * xi;
        s1 = mom;
        x += mom;
    } else {  // ADAM_SGLD
        const float m = p.beta1 * s1 + (1.0f - p.beta1) * g;
        const float v = p.beta2 * s2 + (1.0f - p.beta2) * g * g;
        s1 = m;
        s2 = v;
        const float alpha = eps / (sqrtf(v / p.bias_corr2) + p.adam_eps);
        const float dir = m / p.bias_corr1;  // = g when beta1 = 0 (then bias_corr1 = 1)
        const float cap = eps * p.kappa, sd_raw = sqrtf(2.0f * alpha);
        const float sd = sd_raw < cap ? sd_raw : cap;
        x += alpha * dir + p.noise_scale * sd * xi;
    }

    // 3. moments
    float sx = x, sx2 = x * x;
    if (FLAGS & F_ACC) {
        ax += x;
        ax2 += x * x;
        if (FLAGS & F_FROM_ACC) {
            sx = ax * p.inv_n_acc;
            sx2 = ax2 * p.inv_n_acc;
            ax = 0.0f;
            ax2 = 0.0f;
        }
    }

    // 4. SNEP inner step on the site's mean parameters, then projection
    if (FLAGS & F_SITE) {
        const float loc_var = 1.0f / (cp + sp);
        const float loc_mean = (cpm + spm) * loc_var;
        const float site_var = 1.0f / sp;
        const float site_mean = spm * site_var;
        // gamma1 = m + eps d,  gamma2 = m^2 + v + eps (sx2 - m0^2 - v0), d = sx - m0;
        // var = gamma2 - gamma1^2 is expanded so that no large squares cancel
        // in float32:  v + eps (d (sx + m0 - 2 m) + (sx2 - sx^2) - v0) - eps^2 d^2.
        const float d = sx - loc_mean;
        const float g1 = site_mean + p.site_step * d;
        const float var_raw =
            site_var +
            p.site_step * (d * (sx + loc_mean - 2.0f * site_mean) + (sx2 - sx * sx) - loc_var) -
            p.site_step * p.site_step * d * d;
        // clip with compare-selects, not fminf/fmaxf: those do not vectorise
        // without -ffinite-math-only (and a NaN should propagate, not be clipped)
        const float var = clampf(var_raw, p.v_lo, p.v_hi);
        const float mean = clampf(g1, p.m_lo, p.m_hi);
        sp = 1.0f / var;
        spm = mean * sp;
    }
    return fired;
}

// Array form: parameter j of one chain (FLAGS must equal flags_of(p)).
template <int KIND, int FLAGS>
SNEP_HD int fused_element(const ChainArrays& a, long j, float xi, const FusedParams& p) {
    float x = a.x[j], sp = a.site_prec[j], spm = a.site_pm[j], s1 = a.s1[j], s2 = a.s2[j];
    float ax = 0.0f, ax2 = 0.0f;
    if (FLAGS & F_ACC) {
        ax = a.acc_x[j];
        ax2 = a.acc_x2[j];
    }
    const int fired = fused_update<KIND, FLAGS>(x, a.grad[j], a.anchor_prec[j], a.anchor_pm[j],
                                                sp, spm, a.cavity_prec[j], a.cavity_pm[j], s1,
                                                s2, ax, ax2, xi, p);
    // store only what this sampler and these flags change (the CPU loop, which passes
    // the arrays by reference, stores nothing else either): SGHMC without the site step
    // writes x and its momentum, not five arrays
    a.x[j] = x;
    if (FLAGS & F_SITE) {
        a.site_prec[j] = sp;
        a.site_pm[j] = spm;
    }
    if (KIND != SGLD) a.s1[j] = s1;
    if (KIND == ADAM_SGLD) a.s2[j] = s2;
    if (FLAGS & F_ACC) {
        a.acc_x[j] = ax;
        a.acc_x2[j] = ax2;
    }
    return fired;
}

// Calls F::template run<KIND, FLAGS>() for the run-time kind and flags; the
// valid flag sets are the 5 combinations of ACC/SITE/FROM_ACC, times GAMMA for
// pSGLD.
template <int KIND, typename F>
SNEP_HD auto dispatch_flags(int flags, F& f) {
    switch (flags & ~F_GAMMA) {
        case 0:
            return ((flags & F_GAMMA) && KIND == PSGLD) ? f.template run<KIND, F_GAMMA>()
                                                        : f.template run<KIND, 0>();
        case F_SITE:
            return ((flags & F_GAMMA) && KIND == PSGLD) ? f.template run<KIND, F_SITE | F_GAMMA>()
                                                        : f.template run<KIND, F_SITE>();
        case F_ACC:
            return ((flags & F_GAMMA) && KIND == PSGLD) ? f.template run<KIND, F_ACC | F_GAMMA>()
                                                        : f.template run<KIND, F_ACC>();
        case F_ACC | F_SITE:
            return ((flags & F_GAMMA) && KIND == PSGLD)
                       ? f.template run<KIND, F_ACC | F_SITE | F_GAMMA>()
                       : f.template run<KIND, F_ACC | F_SITE>();
        default:
            return ((flags & F_GAMMA) && KIND == PSGLD)
                       ? f.template run<KIND, F_ACC | F_SITE | F_FROM_ACC | F_GAMMA>()
                       : f.template run<KIND, F_ACC | F_SITE | F_FROM_ACC>();
    }
}

template <typename F>
SNEP_HD auto dispatch_kind_flags(int kind, int flags, F& f) {
    switch (kind) {
        case SGLD:
            return dispatch_flags<SGLD>(flags, f);
        case PSGLD:
            return dispatch_flags<PSGLD>(flags, f);
        case SGHMC:
            return dispatch_flags<SGHMC>(flags, f);
        default:
            return dispatch_flags<ADAM_SGLD>(flags, f);
    }
}

// A server reply for one parameter (docs/method.md §1.3, "Sync"): the cavity becomes
// the reply's (theta - lambda_i, computed by the server in float64), the anchor moves
// with the cavity, and the chain is shifted so that its standardised position under
// the local posterior cavity + site is kept: x <- m_new + sqrt(v_new / v_old) (x - m_old).
// With `scale_momentum` (SGHMC) the momentum is scaled by the same factor.
SNEP_HD void reply_update(float& x, float& cavity_prec, float& cavity_pm, float& anchor_prec,
                          float& anchor_pm, float site_prec, float site_pm, float& momentum,
                          float new_cp, float new_cpm, int scale_momentum) {
    const float old_prec = cavity_prec + site_prec;
    const float old_mean = (cavity_pm + site_pm) / old_prec;
    anchor_prec = (anchor_prec - cavity_prec) + new_cp;
    anchor_pm = (anchor_pm - cavity_pm) + new_cpm;
    cavity_prec = new_cp;
    cavity_pm = new_cpm;
    const float new_prec = new_cp + site_prec;
    const float new_mean = (new_cpm + site_pm) / new_prec;
    const float ratio = sqrtf(old_prec / new_prec);
    x = new_mean + ratio * (x - old_mean);
    momentum = scale_momentum ? momentum * ratio : momentum;
}

}  // namespace snep
