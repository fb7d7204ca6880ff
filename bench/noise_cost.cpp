// What the fused pass's Gaussian noise costs, and what a cheaper counter-based
// generator would save (issue 14): kernels/snep_rng.cuh compiled as the CPU
// extension compiles it (src/fused_pass.cpp: the same flags and target clones),
// generating P normals per round in tiles of 1024 into an L1 buffer, as the
// pass's noise_tile does before each tile's update.  Driven by bench/noise_cost.py.
//
//   noise_cost time P REPEATS   one line per variant: its name, then REPEATS times in ms
//   noise_cost check P {7|10}   binary: the P words, then the P normals, of chain 0 at
//                               step 3, stream 0, seed 2017, with 7 or 10 rounds, through
//                               the timed functions (bench/test_noise_cost.py compares
//                               them with the numpy reference and with the extension)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "snep_rng.cuh"

using namespace snep;

namespace {

constexpr int TILE = 1024;  // src/fused_pass.cpp's TILE
constexpr uint64_t SEED = 2017;
constexpr uint32_t STREAM = 0, CHAIN = 0, STEP = 3;

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

// normals of one tile (count a multiple of 4), as noise_tile draws them
template <int ROUNDS>
CLONES void normals_tile(float* out, int64_t first, int64_t count) {
    const uint32_t block0 = (uint32_t)(first / 4);
    for (int64_t b = 0; b < count / 4; ++b) {
        float z[4];
        normal4<ROUNDS>(SEED, STREAM, CHAIN, STEP, block0 + (uint32_t)b, z);
        out[4 * b + 0] = z[0];
        out[4 * b + 1] = z[1];
        out[4 * b + 2] = z[2];
        out[4 * b + 3] = z[3];
    }
}

// the generator's words alone
template <int ROUNDS>
CLONES void words_tile(uint32_t* out, int64_t first, int64_t count) {
    const uint32_t block0 = (uint32_t)(first / 4);
    for (int64_t b = 0; b < count / 4; ++b)
        philox4x32<ROUNDS>(block0 + (uint32_t)b, CHAIN, STEP, STREAM, (uint32_t)SEED,
                           (uint32_t)(SEED >> 32), out + 4 * b);
}

// the Box-Muller transform alone, of words already drawn
CLONES void box_muller_tile(float* out, const uint32_t* w, int64_t count) {
    for (int64_t b = 0; b < count / 4; ++b) {
        float z[4];
        box_muller(w[4 * b + 0], w[4 * b + 1], &z[0], &z[1]);
        box_muller(w[4 * b + 2], w[4 * b + 3], &z[2], &z[3]);
        out[4 * b + 0] = z[0];
        out[4 * b + 1] = z[1];
        out[4 * b + 2] = z[2];
        out[4 * b + 3] = z[3];
    }
}

volatile float sink_f;
volatile uint32_t sink_u;

// one round: P values in tiles; one value per tile is kept, so nothing is optimised away
template <typename F>
double time_round(int64_t n_params, F tile) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t first = 0; first < n_params; first += TILE) {
        const int64_t count = n_params - first < TILE ? n_params - first : TILE;
        tile(first, count & ~int64_t(3));
    }
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
        .count();
}

template <int ROUNDS>
double round_normals(int64_t n_params, float* buffer) {
    return time_round(n_params, [&](int64_t first, int64_t count) {
        normals_tile<ROUNDS>(buffer, first, count);
        sink_f = buffer[0];
    });
}

template <int ROUNDS>
double round_words(int64_t n_params, uint32_t* buffer) {
    return time_round(n_params, [&](int64_t first, int64_t count) {
        words_tile<ROUNDS>(buffer, first, count);
        sink_u = buffer[0];
    });
}

int time_all(int64_t n_params, int repeats) {
    alignas(64) static float normals[TILE];
    alignas(64) static uint32_t words[TILE], fixed[TILE];
    words_tile<10>(fixed, 0, TILE);  // the transform's input: the words of one tile
    const char* names[] = {"philox10_normals", "philox7_normals", "philox10_words",
                           "philox7_words", "box_muller"};
    std::vector<std::vector<double>> times(5);
    for (int r = 0; r < repeats; ++r) {  // the variants interleaved: the same minutes
        times[0].push_back(round_normals<10>(n_params, normals));
        times[1].push_back(round_normals<7>(n_params, normals));
        times[2].push_back(round_words<10>(n_params, words));
        times[3].push_back(round_words<7>(n_params, words));
        times[4].push_back(time_round(n_params, [&](int64_t, int64_t count) {
            box_muller_tile(normals, fixed, count);
            sink_f = normals[0];
        }));
    }
    for (int v = 0; v < 5; ++v) {
        std::printf("%s", names[v]);
        for (double t : times[v]) std::printf(" %.6f", t);
        std::printf("\n");
    }
    return 0;
}

// the words and normals of parameters [0, n_params) of chain 0 at STEP, through the timed
// tile functions
template <int ROUNDS>
int check(int64_t n_params) {
    std::vector<uint32_t> w(n_params);
    std::vector<float> z(n_params);
    for (int64_t first = 0; first < n_params; first += TILE) {
        const int64_t count = n_params - first < TILE ? n_params - first : TILE;
        words_tile<ROUNDS>(&w[first], first, count);
        normals_tile<ROUNDS>(&z[first], first, count);
    }
    std::fwrite(w.data(), sizeof(uint32_t), w.size(), stdout);
    std::fwrite(z.data(), sizeof(float), z.size(), stdout);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const bool time = argc == 4 && std::strcmp(argv[1], "time") == 0;
    const bool chk = argc == 4 && std::strcmp(argv[1], "check") == 0;
    const int64_t n = argc == 4 ? std::atoll(argv[2]) : 0;
    const int k = argc == 4 ? std::atoi(argv[3]) : 0;
    if (time && n > 0 && k > 0) return time_all(n, k);
    if (chk && n > 0 && n % 4 == 0 && (k == 7 || k == 10)) return k == 7 ? check<7>(n) : check<10>(n);
    std::fprintf(stderr,
                 "usage: noise_cost time P REPEATS | noise_cost check P {7|10} (P a multiple of 4)\n");
    return 2;
}
