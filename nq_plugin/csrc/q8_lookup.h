// The packed product with int8 activations: the optional faster, inexact mode of token-by-token
// inference (NQ_PLUGIN_ACTIVATIONS=int8, nq_plugin/packed/kernels/native.py).
//
// Each activation row x is quantized symmetrically, q = round(x / s) with s = max|x| / 127
// (torch's dynamic quantization does the same per tensor, asymmetric), and B q is computed
// exactly in integers: B x ~ s (B q). Lookup tables over groups of 4 inputs (T-MAC, Wei et al.
// 2024): per group the 16 sums the 4 code bits can select -- binary (bit = sign): sum of +-q_i;
// ternary (bit = selected): subset sums, looked up for the adds and for the subtracts -- as int16
// (|sum| <= 4 * 127), split in a low and a high byte table of 16 entries each, so one vpshufb
// looks 32 rows up at once (AVX2), and unpacking the two bytes gives the int16 values. The
// weights are read in a nibble layout made once per model (packed/kernels/native.py:
// q8_layout): per block of 32 rows and 8 inputs, 32 bytes, byte r = row r's 8 code bits (low
// nibble: the first 4 inputs) -- the bytes of the packed words, transposed. Sums accumulate in
// int16 and are widened to int32 every 60 groups (60 * 508 + 508 < 2^15).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "cache_line.h"

namespace nq_q8 {

constexpr int64_t kRows = 32;        // rows per block (one byte each in a 256-bit register)
constexpr int64_t kTableBytes = 64;  // per group: 16 low bytes twice, 16 high bytes twice
constexpr int kFlushEvery = 30;      // 8-input steps (60 groups) between widenings

// q (n rows of `padded` int8, zero past `columns`) and the scales s (n) of activation rows x
inline void quantize_rows(const float* x, int64_t n, int64_t stride, int64_t columns,
                          int64_t padded, std::vector<int8_t>& q, std::vector<float>& s) {
  q.assign((size_t)(n * padded), 0);
  s.assign((size_t)n, 0.f);
  for (int64_t b = 0; b < n; ++b) {
    const float* xb = x + b * stride;
    float amax = 0.f;
    for (int64_t j = 0; j < columns; ++j) amax = std::max(amax, std::fabs(xb[j]));
    if (amax == 0.f) continue;  // q = 0, s = 0: the product is 0
    s[b] = amax / 127.f;
    const float inv = 127.f / amax;
    for (int64_t j = 0; j < columns; ++j)
      q[b * padded + j] = (int8_t)std::max(-127.f, std::min(127.f, std::nearbyint(xb[j] * inv)));
  }
}

// the tables of the n quantized rows: (n, padded / 4, 64) bytes
using ByteTables = std::vector<int8_t, nq_native::CacheLineAllocator<int8_t>>;
inline ByteTables build_tables(const std::vector<int8_t>& q, int64_t n, int64_t padded,
                               bool ternary) {
  const int64_t groups = padded / 4;
  ByteTables t((size_t)(n * groups * kTableBytes));
  for (int64_t b = 0; b < n; ++b)
    for (int64_t g = 0; g < groups; ++g) {
      const int8_t* v = q.data() + b * padded + 4 * g;
      int8_t* tg = t.data() + (b * groups + g) * kTableBytes;
      for (int idx = 0; idx < 16; ++idx) {
        int sum = 0;
        for (int i = 0; i < 4; ++i) {
          const bool bit = (idx >> i) & 1;
          sum += ternary ? (bit ? v[i] : 0) : (bit ? v[i] : -v[i]);
        }
        const uint16_t u = (uint16_t)(int16_t)sum;
        tg[idx] = tg[16 + idx] = (int8_t)(u & 0xFF);
        tg[32 + idx] = tg[48 + idx] = (int8_t)(u >> 8);
      }
    }
  return t;
}

// out[r] = (B q)_r for the 32 rows of one block: `add` (and, ternary, `sub`) are the block's
// nibble bytes, `steps` 8-input steps of 32 bytes; `tables` those of one activation row.
inline void block_dot(const uint8_t* add, const uint8_t* sub, int64_t steps,
                      const int8_t* tables, int32_t out[kRows]) {
#ifdef __AVX2__
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  __m256i wide[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                     _mm256_setzero_si256()};
  __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
  auto flush = [&]() {  // a0: rows 0-7 | 16-23, a1: rows 8-15 | 24-31 (unpack order)
    wide[0] = _mm256_add_epi32(wide[0], _mm256_cvtepi16_epi32(_mm256_castsi256_si128(a0)));
    wide[2] = _mm256_add_epi32(wide[2], _mm256_cvtepi16_epi32(_mm256_extracti128_si256(a0, 1)));
    wide[1] = _mm256_add_epi32(wide[1], _mm256_cvtepi16_epi32(_mm256_castsi256_si128(a1)));
    wide[3] = _mm256_add_epi32(wide[3], _mm256_cvtepi16_epi32(_mm256_extracti128_si256(a1, 1)));
    a0 = a1 = _mm256_setzero_si256();
  };
  auto lookup = [&](__m256i idx, const int8_t* t, bool subtract) {
    const __m256i lo = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i*)t), idx);
    const __m256i hi = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i*)(t + 32)), idx);
    const __m256i u0 = _mm256_unpacklo_epi8(lo, hi), u1 = _mm256_unpackhi_epi8(lo, hi);
    a0 = subtract ? _mm256_sub_epi16(a0, u0) : _mm256_add_epi16(a0, u0);
    a1 = subtract ? _mm256_sub_epi16(a1, u1) : _mm256_add_epi16(a1, u1);
  };
  int pending = 0;
  for (int64_t m = 0; m < steps; ++m) {
    const int8_t* t = tables + 2 * m * kTableBytes;
    const __m256i v = _mm256_loadu_si256((const __m256i*)(add + m * kRows));
    lookup(_mm256_and_si256(v, low4), t, false);
    lookup(_mm256_and_si256(_mm256_srli_epi16(v, 4), low4), t + kTableBytes, false);
    if (sub != nullptr) {
      const __m256i w = _mm256_loadu_si256((const __m256i*)(sub + m * kRows));
      lookup(_mm256_and_si256(w, low4), t, true);
      lookup(_mm256_and_si256(_mm256_srli_epi16(w, 4), low4), t + kTableBytes, true);
    }
    if (++pending == kFlushEvery) {
      flush();
      pending = 0;
    }
  }
  flush();
  for (int k = 0; k < 4; ++k) _mm256_storeu_si256((__m256i*)(out + 8 * k), wide[k]);
#else
  auto value = [&](const int8_t* t, int idx) {
    return (int32_t)(int16_t)(uint16_t)((uint8_t)t[idx] | ((uint16_t)(uint8_t)t[32 + idx] << 8));
  };
  for (int64_t r = 0; r < kRows; ++r) {
    int32_t acc = 0;
    for (int64_t m = 0; m < steps; ++m) {
      const int8_t* t = tables + 2 * m * kTableBytes;
      const uint8_t a = add[m * kRows + r];
      acc += value(t, a & 15) + value(t + kTableBytes, a >> 4);
      if (sub != nullptr) {
        const uint8_t s = sub[m * kRows + r];
        acc -= value(t, s & 15) + value(t + kTableBytes, s >> 4);
      }
    }
    out[r] = acc;
  }
#endif
}

}  // namespace nq_q8
