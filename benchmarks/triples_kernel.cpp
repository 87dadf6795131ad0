// The AVX2 kernels of the exact ternary product side by side, standalone (no torch): an
// 8000 x 2000 ternary matrix (W_h of a 2000-unit LSTM) times one fp32 row, 8 rows per block as
// the extension's lane layouts, one thread, best of 7 rounds of 20 products, each checked
// against the product in fp64. What the triples lookup (nq_plugin/csrc/packed_triples.cpp)
// was built from (benchmarks/README.md, 2026-12-06 morning):
// - pairs: the pair lookup (packed_gemv.cpp): 2-bit codes, one shift and one vpermilps (a
//   4-value table) per pair of inputs and plane;
// - triples, shifts: 3-bit codes, 10 to a word, one shift and one vpermps (an 8-value table)
//   per group of 3 inputs and plane;
// - triples, multiplies: the same, each code brought to the bottom of its lane by a 16-bit high
//   multiply (5 codes per 16-bit half) instead of a shift;
// - triples, multiplies, in order: the same, each group's work kept before the next group's by
//   an empty asm statement (without it GCC hoisted a word's lookups above their adds and
//   spilled them) -- both the extension's own code (nq_plugin/csrc/triples_word.h), compiled
//   out of line as there.
//
//   g++ -O3 -march=x86-64-v3 benchmarks/triples_kernel.cpp -o /tmp/triples && /tmp/triples
#include <immintrin.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "../nq_plugin/csrc/triples_word.h"

namespace {
constexpr int kRows = 8000, kColumns = 2000, kBlocks = kRows / 8;
constexpr int kPairWords = (kColumns + 31) / 32, kTripleWords = (kColumns + 29) / 30;

struct Codes {  // (blocks, words, 8 lanes) for the adds (+1) and the subtracts (-1)
  std::vector<uint32_t> add, sub;
};

// 64-byte aligned floats (as the extension's tables)
struct Floats {
  explicit Floats(size_t n) : p(static_cast<float*>(std::aligned_alloc(64, (n * 4 + 63) / 64 * 64))), n(n) {}
  ~Floats() { std::free(p); }
  float* p;
  size_t n;
};

// the shifts' kernels: pairs (2-bit codes, 16 a word, vpermilps on a 4-value table) or triples
// (3-bit codes at bits 3i, 10 a word, vpermps on an 8-value table)
template <bool TRIPLES>
void shifts(const Codes& w, const float* t, float* y) {
  constexpr int kWords = TRIPLES ? kTripleWords : kPairWords, kGroups = TRIPLES ? 10 : 16;
  for (int b = 0; b < kBlocks; ++b) {
    __m256 a[4], s[4];
    for (int u = 0; u < 4; ++u) a[u] = s[u] = _mm256_setzero_ps();
    for (int k = 0; k < kWords; ++k) {
      const __m256i wa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&w.add[(b * kWords + k) * 8]));
      const __m256i ws = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&w.sub[(b * kWords + k) * 8]));
      const float* tk = t + k * 8 * kGroups;
#pragma GCC unroll 16
      for (int j = 0; j < kGroups; ++j) {
        const __m256 table = _mm256_loadu_ps(tk + 8 * j);
        const int bits = TRIPLES ? 3 * j : 2 * j;
        const __m256i ia = _mm256_srli_epi32(wa, bits), is = _mm256_srli_epi32(ws, bits);
        a[j & 3] = _mm256_add_ps(a[j & 3], TRIPLES ? _mm256_permutevar8x32_ps(table, ia)
                                                   : _mm256_permutevar_ps(table, ia));
        s[j & 3] = _mm256_add_ps(s[j & 3], TRIPLES ? _mm256_permutevar8x32_ps(table, is)
                                                   : _mm256_permutevar_ps(table, is));
      }
    }
    _mm256_storeu_ps(y + b * 8, _mm256_sub_ps(
        _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])),
        _mm256_add_ps(_mm256_add_ps(s[0], s[1]), _mm256_add_ps(s[2], s[3]))));
  }
}

// the extension's kernel (codes at bits 3i, i < 5, and 16 + 3 (i - 5); triples_word.h), out of
// line as there; IN_ORDER: with its empty asm statements
template <bool IN_ORDER>
__attribute__((noinline)) void multiplies(const Codes& w, const float* tables, float* y) {
  for (int b = 0; b < kBlocks; ++b) {
    __m256 add[2], sub[2];
    for (int u = 0; u < 2; ++u) add[u] = sub[u] = _mm256_setzero_ps();
    for (int k = 0; k < kTripleWords; ++k)
      nq_triples::word_lookup<true, IN_ORDER>(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&w.add[(b * kTripleWords + k) * 8])),
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&w.sub[(b * kTripleWords + k) * 8])),
          tables + k * 80, add, sub);
    _mm256_storeu_ps(y + b * 8, _mm256_sub_ps(_mm256_add_ps(add[0], add[1]),
                                              _mm256_add_ps(sub[0], sub[1])));
  }
}
}  // namespace

int main() {
  std::mt19937 gen(1);
  std::uniform_int_distribution<int> digit(-1, 1);
  std::normal_distribution<float> normal;
  std::vector<int8_t> w(static_cast<size_t>(kRows) * kColumns);
  for (auto& v : w) v = static_cast<int8_t>(digit(gen));
  std::vector<float> x(kColumns);
  for (auto& v : x) v = normal(gen);
  Codes pair{std::vector<uint32_t>(kBlocks * kPairWords * 8), std::vector<uint32_t>(kBlocks * kPairWords * 8)};
  Codes shift{std::vector<uint32_t>(kBlocks * kTripleWords * 8), std::vector<uint32_t>(kBlocks * kTripleWords * 8)};
  Codes mult = shift;
  for (int r = 0; r < kRows; ++r) {
    const int b = r / 8, l = r % 8;
    for (int j = 0; j < kColumns; ++j) {
      const int v = w[static_cast<size_t>(r) * kColumns + j];
      if (v == 0) continue;
      auto& p = v > 0 ? pair.add : pair.sub;
      auto& s = v > 0 ? shift.add : shift.sub;
      auto& m = v > 0 ? mult.add : mult.sub;
      p[(b * kPairWords + j / 32) * 8 + l] |= 1u << (j % 32);
      const int k = j / 30, i = (j % 30) / 3, d = j % 3;
      s[(b * kTripleWords + k) * 8 + l] |= 1u << (3 * i + d);
      m[(b * kTripleWords + k) * 8 + l] |= 1u << ((i < 5 ? 3 * i : 16 + 3 * (i - 5)) + d);
    }
  }
  Floats pt(kPairWords * 128), tt(kTripleWords * 80);
  for (int p = 0; p < kPairWords * 16; ++p) {
    const float x0 = 2 * p < kColumns ? x[2 * p] : 0.f, x1 = 2 * p + 1 < kColumns ? x[2 * p + 1] : 0.f;
    const float e[4] = {0.f, x0, x1, x0 + x1};
    for (int q = 0; q < 8; ++q) pt.p[8 * p + q] = e[q & 3];
  }
  for (int g = 0; g < kTripleWords * 10; ++g) {
    float v[3];
    for (int i = 0; i < 3; ++i) v[i] = 3 * g + i < kColumns ? x[3 * g + i] : 0.f;
    for (int e = 0; e < 8; ++e) {
      float s = 0.f;
      for (int i = 0; i < 3; ++i)
        if ((e >> i) & 1) s += v[i];
      tt.p[8 * g + e] = s;
    }
  }
  std::vector<double> ref(kRows);
  for (int r = 0; r < kRows; ++r) {
    double s = 0.0;
    for (int j = 0; j < kColumns; ++j) s += w[static_cast<size_t>(r) * kColumns + j] * static_cast<double>(x[j]);
    ref[r] = s;
  }
  std::vector<float> y(kRows);
  auto run = [&](const char* name, auto product) {
    double best = 1e9;
    for (int round = 0; round < 7; ++round) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < 20; ++i) product();
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 20;
      best = dt < best ? dt : best;
    }
    double err = 0.0;
    for (int r = 0; r < kRows; ++r) err = std::fmax(err, std::fabs(y[r] - ref[r]));
    std::printf("| %-34s | %7.3f | %9.2e |\n", name, best * 1e3, err);
    return best;
  };
  std::printf("%d x %d ternary times one fp32 row, 8 rows a block, one thread, best of 7 x 20\n",
              kRows, kColumns);
  std::printf("| kernel                             | ms      | max error |\n");
  std::printf("|------------------------------------|---------|-----------|\n");
  const double base = run("pairs (shift, vpermilps)", [&] { shifts<false>(pair, pt.p, y.data()); });
  const double a = run("triples, shifts", [&] { shifts<true>(shift, tt.p, y.data()); });
  const double b = run("triples, multiplies", [&] { multiplies<false>(mult, tt.p, y.data()); });
  const double c = run("triples, multiplies, in order", [&] { multiplies<true>(mult, tt.p, y.data()); });
  std::printf("speed-up over the pairs: triples, shifts %.2fx; multiplies %.2fx; multiplies, in order %.2fx\n",
              base / a, base / b, base / c);
  return 0;
}
