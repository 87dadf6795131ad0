// Throughput of the packed CPU kernel's inner step on this CPU, without memory traffic: one
// shift + one table lookup + one add for 8 rows (lanes), four independent sums, the tables in
// L1. vpermilps (4 entries per 128-bit half, 2-bit index: a pair of inputs, what
// nq_plugin/csrc/packed_gemv.cpp does) against vpermps (8 entries, 3-bit index: a triple).
// Used to bound what the lookup-table product can reach (benchmarks/README.md):
//
//   g++ -O2 -mavx2 benchmarks/lookup_throughput.cpp -o /tmp/lookup && /tmp/lookup
#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <vector>

template <bool TRIPLES>
float lookups(const float* tables, __m256i words, int iterations) {
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                   _mm256_setzero_ps()};
  for (int it = 0; it < iterations; ++it) {
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) {
      const __m256i index = _mm256_srli_epi32(words, TRIPLES ? 3 * (j % 10) : 2 * j);
      const __m256 table = _mm256_loadu_ps(tables + 8 * j);
      acc[j & 3] = _mm256_add_ps(acc[j & 3], TRIPLES ? _mm256_permutevar8x32_ps(table, index)
                                                     : _mm256_permutevar_ps(table, index));
    }
    words = _mm256_add_epi32(words, _mm256_set1_epi32(it));  // no hoisting across iterations
  }
  float out[8];
  _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]),
                                      _mm256_add_ps(acc[2], acc[3])));
  return out[0];
}

int main() {
  std::vector<float> tables(8 * 16, 1.0f);
  const __m256i words = _mm256_set_epi32(1, 2, 3, 4, 5, 6, 7, 8);
  const int iterations = 20000000;
  const double n = 16.0 * iterations;
  for (int round = 0; round < 3; ++round) {
    const auto t0 = std::chrono::steady_clock::now();
    const float a = lookups<false>(tables.data(), words, iterations);
    const auto t1 = std::chrono::steady_clock::now();
    const float b = lookups<true>(tables.data(), words, iterations);
    const auto t2 = std::chrono::steady_clock::now();
    const double pair = std::chrono::duration<double, std::nano>(t1 - t0).count() / n;
    const double triple = std::chrono::duration<double, std::nano>(t2 - t1).count() / n;
    std::printf("one thread: vpermilps pair %.3f ns/lookup (%.3f per input), vpermps triple "
                "%.3f ns/lookup (%.3f per input)  [%g %g]\n",
                pair, pair / 2, triple, triple / 3, a, b);
  }
  return 0;
}
