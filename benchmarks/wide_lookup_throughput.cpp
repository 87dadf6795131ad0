// The inner loops of the exact packed product on one core, over a whole 8000 x COLS matrix
// (default 2000: H=2000's W_h) with random codes: the nibble lookup's layouts and loops
// (nq_plugin/csrc/packed_gemv.cpp: 8 rows a 256-bit register, a 16-value table per 4 inputs;
// ternary looks the adds and the subtracts up) against the wide lookup's
// (nq_plugin/csrc/packed_wide.cpp: 16 rows a 512-bit register, a 32-entry table per group of 3
// ternary or 5 binary inputs), and the wide lookup's variants that were weighed: one code byte
// per load (vpmovzxbd) with 1-8 row groups per table load, against 4 groups a 32-bit lane (one
// load, a shift per group). Best of 30 calls each. COLS=300 keeps the codes in L2: the same time
// per weight there as at 2000 says the loops are compute-bound, not memory-bound.
//
//   g++ -O3 -march=x86-64-v3 benchmarks/wide_lookup_throughput.cpp -o /tmp/wide && /tmp/wide
//   COLS=300 /tmp/wide
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define AVX512 __attribute__((target("avx512f,avx512vl"), noinline))

// nibbles, ternary: per block of 8 rows and word (32 inputs), the adds' and the subtracts' words
AVX512 void nibbles_ternary(const uint32_t* lanes, const float* tab, int rows, int words,
                            float* out) {
  for (int r = 0; r < rows; r += 8) {
    __m256 acc[8];
    for (auto& a : acc) a = _mm256_setzero_ps();
    const uint32_t* block = lanes + (size_t)r * words * 2;
    for (int w = 0; w < words; ++w) {
      const __m256i add = _mm256_loadu_si256((const __m256i*)(block + 16 * w));
      const __m256i sub = _mm256_loadu_si256((const __m256i*)(block + 16 * w + 8));
      const float* tq = tab + w * 128;
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) {
        const __m256 lo = _mm256_loadu_ps(tq + 16 * j), hi = _mm256_loadu_ps(tq + 16 * j + 8);
        acc[j & 3] = _mm256_add_ps(
            acc[j & 3], _mm256_permutex2var_ps(lo, _mm256_srli_epi32(add, 4 * j), hi));
        acc[4 + (j & 3)] = _mm256_add_ps(
            acc[4 + (j & 3)], _mm256_permutex2var_ps(lo, _mm256_srli_epi32(sub, 4 * j), hi));
      }
    }
    const __m256 a = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    const __m256 s = _mm256_add_ps(_mm256_add_ps(acc[4], acc[5]), _mm256_add_ps(acc[6], acc[7]));
    _mm256_storeu_ps(out + r, _mm256_sub_ps(a, s));
  }
}

// nibbles, binary: 4 blocks of 8 rows (a step's 4 gates) share each table load
AVX512 void nibbles_binary(const uint32_t* lanes, const float* tab, int rows, int words,
                           float* out) {
  for (int r = 0; r < rows; r += 32) {
    __m256 acc[4];
    for (auto& a : acc) a = _mm256_setzero_ps();
    const uint32_t* block = lanes + (size_t)r * words;
    for (int w = 0; w < words; ++w) {
      __m256i v[4];
      for (int i = 0; i < 4; ++i)
        v[i] = _mm256_loadu_si256((const __m256i*)(block + (size_t)i * words * 8 + 8 * w));
      const float* tq = tab + w * 128;
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) {
        const __m256 lo = _mm256_loadu_ps(tq + 16 * j), hi = _mm256_loadu_ps(tq + 16 * j + 8);
        for (int i = 0; i < 4; ++i)
          acc[i] = _mm256_add_ps(acc[i],
                                 _mm256_permutex2var_ps(lo, _mm256_srli_epi32(v[i], 4 * j), hi));
      }
    }
    for (int i = 0; i < 4; ++i) _mm256_storeu_ps(out + r + 8 * i, acc[i]);
  }
}

// wide, one code byte per load: NB groups of 16 rows per table load
template <int NB>
AVX512 void wide_bytes(const uint8_t* codes, const float* tab, int rows, int groups, float* out) {
  for (int r = 0; r < rows; r += 16 * NB) {
    __m512 acc[NB];
    for (auto& a : acc) a = _mm512_setzero_ps();
    const uint8_t* block = codes + (size_t)r * groups;
    for (int j = 0; j < groups; ++j) {
      const __m512 lo = _mm512_loadu_ps(tab + 32 * j), hi = _mm512_loadu_ps(tab + 32 * j + 16);
#pragma GCC unroll 8
      for (int i = 0; i < NB; ++i) {
        const __m512i idx = _mm512_cvtepu8_epi32(
            _mm_loadu_si128((const __m128i*)(block + (j * NB + i) * 16)));
        acc[i] = _mm512_add_ps(acc[i], _mm512_permutex2var_ps(lo, idx, hi));
      }
    }
    for (int i = 0; i < NB; ++i) _mm512_storeu_ps(out + r + 16 * i, acc[i]);
  }
}

// wide, 4 groups a 32-bit lane (what packed_wide.cpp does): NB groups of 16 rows per table load
template <int NB>
AVX512 void wide_lanes(const uint8_t* codes, const float* tab, int rows, int groups, float* out) {
  const int quads = (groups + 3) / 4;
  for (int r = 0; r < rows; r += 16 * NB) {
    __m512 acc[NB];
    for (auto& a : acc) a = _mm512_setzero_ps();
    const uint8_t* block = codes + (size_t)r * quads * 4;
    for (int q = 0; q < quads; ++q) {
      __m512i v[NB];
      for (int i = 0; i < NB; ++i) v[i] = _mm512_loadu_si512(block + (q * NB + i) * 64);
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
        const float* t = tab + (4 * q + k) * 32;
        const __m512 lo = _mm512_loadu_ps(t), hi = _mm512_loadu_ps(t + 16);
#pragma GCC unroll 8
        for (int i = 0; i < NB; ++i) {
          const __m512i idx = k == 0 ? v[i] : _mm512_srli_epi32(v[i], 8 * k);
          acc[i] = _mm512_add_ps(acc[i], _mm512_permutex2var_ps(lo, idx, hi));
        }
      }
    }
    for (int i = 0; i < NB; ++i) _mm512_storeu_ps(out + r + 16 * i, acc[i]);
  }
}

template <class F>
double best_ms(F f) {
  double best = 1e9;
  for (int k = 0; k < 30; ++k) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const auto t1 = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  return best;
}

template <class T>
std::vector<T> random(size_t n, int modulo) {
  std::vector<T> v(n);
  for (auto& x : v) x = modulo ? T(rand() % modulo) : T(rand());
  return v;
}

int main() {
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512vl")) {
    printf("this CPU has no AVX-512 F and VL: nothing to measure\n");
    return 0;
  }
  const int rows = 8000, cols = getenv("COLS") ? atoi(getenv("COLS")) : 2000;
  const int words = (cols + 31) / 32, pad = 128;
  std::vector<float> out(rows + pad), tables(std::max(words * 128, 4 * ((cols + 2) / 3 + 4) * 32));
  for (auto& t : tables) t = rand() / 1e9f;
  printf("8000 x %d, one core, best of 30 calls\n", cols);
  auto lanes2 = random<uint32_t>((size_t)rows * words * 2, 0);
  printf("nibbles, ternary (%.1f MB):           %.3f ms\n", lanes2.size() * 4 / 1e6,
         best_ms([&] { nibbles_ternary(lanes2.data(), tables.data(), rows, words, out.data()); }));
  auto lanes1 = random<uint32_t>((size_t)rows * words, 0);
  printf("nibbles, binary, 4 blocks (%.1f MB):  %.3f ms\n", lanes1.size() * 4 / 1e6,
         best_ms([&] { nibbles_binary(lanes1.data(), tables.data(), rows, words, out.data()); }));
  const int triples = (cols + 2) / 3, quintuples = (cols + 4) / 5;
  auto bytes = random<uint8_t>((size_t)(rows + pad) * triples, 27);
  printf("wide bytes, ternary, 1 group (%.1f MB): %.3f ms\n", bytes.size() / 1e6,
         best_ms([&] { wide_bytes<1>(bytes.data(), tables.data(), rows, triples, out.data()); }));
  printf("wide bytes, ternary, 4 groups:        %.3f ms\n",
         best_ms([&] { wide_bytes<4>(bytes.data(), tables.data(), rows, triples, out.data()); }));
  printf("wide bytes, ternary, 8 groups:        %.3f ms\n",
         best_ms([&] { wide_bytes<8>(bytes.data(), tables.data(), rows, triples, out.data()); }));
  auto quads3 = random<uint8_t>((size_t)(rows + pad) * ((triples + 3) / 4) * 4, 27);
  printf("wide lanes, ternary, 8 groups (%.1f MB): %.3f ms\n", quads3.size() / 1e6,
         best_ms([&] { wide_lanes<8>(quads3.data(), tables.data(), rows, triples, out.data()); }));
  auto quads5 = random<uint8_t>((size_t)(rows + pad) * ((quintuples + 3) / 4) * 4, 32);
  printf("wide lanes, binary, 8 groups (%.1f MB):  %.3f ms\n", quads5.size() / 1e6,
         best_ms([&] { wide_lanes<8>(quads5.data(), tables.data(), rows, quintuples, out.data()); }));
  return 0;
}
