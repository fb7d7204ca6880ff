// snep._native: the compiled CPU kernels of snep.
//
// Its measured job (bench/test_fused_pass.py): the fused sampler + SNEP site +
// moment pass with in-kernel counter-based Gaussian noise, one streaming pass
// over the flat parameters, from the same header (kernels/snep_fused.cuh) that
// the CUDA kernel compiles.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <omp.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "fused_pass.hpp"

namespace nb = nanobind;
using namespace nb::literals;

using Mat = nb::ndarray<float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using OptMat = std::optional<Mat>;

namespace {

std::string shape_str(const Mat& m) {
    return "(" + std::to_string(m.shape(0)) + ", " + std::to_string(m.shape(1)) + ")";
}

void check_shape(const char* name, const Mat& m, size_t c, size_t p) {
    if (m.shape(0) != c || m.shape(1) != p)
        throw std::invalid_argument(std::string("fused_step: array '") + name + "' has shape " +
                                    shape_str(m) + ", expected (" + std::to_string(c) + ", " +
                                    std::to_string(p) + ") like 'x'");
}

int threads_or_default(int n) { return n > 0 ? n : omp_get_max_threads(); }

int64_t fused_step(int kind, Mat x, Mat grad, Mat anchor_prec, Mat anchor_pm, Mat site_prec,
                   Mat site_pm, Mat cavity_prec, Mat cavity_pm, Mat s1, Mat s2, OptMat acc_x,
                   OptMat acc_x2, OptMat noise, const snep::FusedParams& params, int n_threads) {
    if (kind < 0 || kind > 3)
        throw std::invalid_argument("fused_step: sampler kind " + std::to_string(kind) +
                                    " is not one of 0 (SGLD), 1 (pSGLD), 2 (SGHMC), 3 (Adam-SGLD)");
    const size_t c = x.shape(0), p = x.shape(1);
    check_shape("grad", grad, c, p);
    check_shape("anchor_prec", anchor_prec, c, p);
    check_shape("anchor_pm", anchor_pm, c, p);
    check_shape("site_prec", site_prec, c, p);
    check_shape("site_pm", site_pm, c, p);
    check_shape("cavity_prec", cavity_prec, c, p);
    check_shape("cavity_pm", cavity_pm, c, p);
    check_shape("s1", s1, c, p);
    check_shape("s2", s2, c, p);
    const bool need_acc = params.accumulate != 0;
    if (need_acc && (!acc_x || !acc_x2))
        throw std::invalid_argument(
            "fused_step: params.accumulate is set but acc_x/acc_x2 were not given");
    if (acc_x) check_shape("acc_x", *acc_x, c, p);
    if (acc_x2) check_shape("acc_x2", *acc_x2, c, p);
    if (noise) check_shape("noise", *noise, c, p);
    std::vector<snep::ChainArrays> arrays(c);
    for (size_t i = 0; i < c; ++i) {
        const size_t o = i * p;
        arrays[i] = snep::ChainArrays{x.data() + o,           grad.data() + o,
                                      anchor_prec.data() + o, anchor_pm.data() + o,
                                      site_prec.data() + o,   site_pm.data() + o,
                                      cavity_prec.data() + o, cavity_pm.data() + o,
                                      s1.data() + o,          s2.data() + o,
                                      acc_x ? acc_x->data() + o : nullptr,
                                      acc_x2 ? acc_x2->data() + o : nullptr};
    }
    const float* xi = noise ? noise->data() : nullptr;
    nb::gil_scoped_release release;
    return snep::fused_pass_cpu(kind, arrays.data(), (int64_t)c, (int64_t)p, xi, params,
                                threads_or_default(n_threads));
}

using Vec32 = nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

void reply_update(Mat x, Mat cavity_prec, Mat cavity_pm, Mat anchor_prec, Mat anchor_pm,
                  Mat site_prec, Mat site_pm, Mat s1, Vec32 reply_prec, Vec32 reply_pm,
                  bool scale_momentum, int n_threads) {
    const size_t p = x.shape(1);
    if (x.shape(0) != 1)
        throw std::invalid_argument("reply_update: one chain expected, x has shape " +
                                    shape_str(x));
    for (auto* m : {&cavity_prec, &cavity_pm, &anchor_prec, &anchor_pm, &site_prec, &site_pm, &s1})
        check_shape("chain array", *m, 1, p);
    for (auto* v : {&reply_prec, &reply_pm})
        if (v->shape(0) != p)
            throw std::invalid_argument("reply_update: a reply's cavity array has length " +
                                        std::to_string(v->shape(0)) + ", expected " +
                                        std::to_string(p));
    snep::ChainArrays a{x.data(),       nullptr,         anchor_prec.data(), anchor_pm.data(),
                        site_prec.data(), site_pm.data(), cavity_prec.data(), cavity_pm.data(),
                        s1.data(),      nullptr,         nullptr,            nullptr};
    nb::gil_scoped_release release;
    snep::reply_update_cpu(a, reply_prec.data(), reply_pm.data(), (int64_t)p,
                           scale_momentum ? 1 : 0, threads_or_default(n_threads));
}

void fill_normal(Mat out, uint64_t seed, uint32_t stream, uint32_t step, uint32_t chain0,
                 int n_threads) {
    float* data = out.data();
    const int64_t c = (int64_t)out.shape(0), p = (int64_t)out.shape(1);
    nb::gil_scoped_release release;
    snep::fill_normal_cpu(data, c, p, seed, stream, step, chain0, threads_or_default(n_threads));
}

void philox_words(nb::ndarray<uint32_t, nb::ndim<2>, nb::c_contig, nb::device::cpu> out,
                  uint64_t seed, uint32_t stream, uint32_t step, uint32_t chain) {
    if (out.shape(1) != 4)
        throw std::invalid_argument("philox_words: out must have shape (n_blocks, 4), got (" +
                                    std::to_string(out.shape(0)) + ", " +
                                    std::to_string(out.shape(1)) + ")");
    snep::philox_words_cpu(out.data(), (int64_t)out.shape(0), seed, stream, step, chain);
}

}  // namespace

NB_MODULE(_native, m) {
    m.doc() = "Compiled CPU kernels of snep (fused sampler/site pass, counter-based noise).";

    nb::class_<snep::FusedParams>(m, "FusedParams")
        .def(nb::init<>())
        .def_rw("lik_scale", &snep::FusedParams::lik_scale)
        .def_rw("inv_beta", &snep::FusedParams::inv_beta)
        .def_rw("prec_floor", &snep::FusedParams::prec_floor)
        .def_rw("step_size", &snep::FusedParams::step_size)
        .def_rw("noise_scale", &snep::FusedParams::noise_scale)
        .def_rw("rms_decay", &snep::FusedParams::rms_decay)
        .def_rw("rms_eps", &snep::FusedParams::rms_eps)
        .def_rw("friction", &snep::FusedParams::friction)
        .def_rw("beta1", &snep::FusedParams::beta1)
        .def_rw("beta2", &snep::FusedParams::beta2)
        .def_rw("adam_eps", &snep::FusedParams::adam_eps)
        .def_rw("bias_corr1", &snep::FusedParams::bias_corr1)
        .def_rw("bias_corr2", &snep::FusedParams::bias_corr2)
        .def_rw("kappa", &snep::FusedParams::kappa)
        .def_rw("gamma_term", &snep::FusedParams::gamma_term)
        .def_rw("accumulate", &snep::FusedParams::accumulate)
        .def_rw("update_site", &snep::FusedParams::update_site)
        .def_rw("inv_n_acc", &snep::FusedParams::inv_n_acc)
        .def_rw("site_step", &snep::FusedParams::site_step)
        .def_rw("m_lo", &snep::FusedParams::m_lo)
        .def_rw("m_hi", &snep::FusedParams::m_hi)
        .def_rw("v_lo", &snep::FusedParams::v_lo)
        .def_rw("v_hi", &snep::FusedParams::v_hi)
        .def_rw("seed", &snep::FusedParams::seed)
        .def_rw("step", &snep::FusedParams::step)
        .def_rw("stream", &snep::FusedParams::stream);

    m.def("fused_step", &fused_step, "kind"_a, "x"_a, "grad"_a, "anchor_prec"_a, "anchor_pm"_a,
          "site_prec"_a, "site_pm"_a, "cavity_prec"_a, "cavity_pm"_a, "s1"_a, "s2"_a,
          "acc_x"_a.none(), "acc_x2"_a.none(), "noise"_a.none(), "params"_a, "n_threads"_a = 0,
          "One fused sampler + moment + SNEP site pass over (chains, P) float32 arrays, in "
          "place. Returns how often the tilted-precision guard fired.");
    m.def("reply_update", &reply_update, "x"_a, "cavity_prec"_a, "cavity_pm"_a, "anchor_prec"_a,
          "anchor_pm"_a, "site_prec"_a, "site_pm"_a, "s1"_a, "reply_prec"_a, "reply_pm"_a,
          "scale_momentum"_a, "n_threads"_a = 0,
          "Apply a server reply to one chain in one pass: the cavity becomes the reply's "
          "(float32), the anchor moves with it, the chain (and SGHMC momentum) is shifted "
          "to keep its standardised position.");
    m.def("fill_normal", &fill_normal, "out"_a, "seed"_a, "stream"_a, "step"_a, "chain0"_a = 0,
          "n_threads"_a = 0, "Fill (chains, P) float32 with the fused pass's standard normals.");
    m.def("philox_words", &philox_words, "out"_a, "seed"_a, "stream"_a, "step"_a, "chain"_a,
          "Raw Philox4x32-10 words for counters (block, chain, step, stream), for tests.");
    m.def("max_threads", []() { return omp_get_max_threads(); },
          "OpenMP's default thread count.");
}
