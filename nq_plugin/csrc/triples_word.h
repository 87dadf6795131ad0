// One word of the triples lookup (packed_triples.cpp): 10 groups of 3 inputs, 8 rows (lanes),
// in plain AVX2 intrinsics (no ATen), so that benchmarks/triples_kernel.cpp measures this code.
// add[j % 2] += t_j[add code j] (and sub[j % 2] += t_j[sub code j], ternary) for group j, its
// code brought to the bottom of each 32-bit lane by a 16-bit high multiply by 2^(16 - 3i)
// (group i of a 16-bit half; upper bits left as they fall, which vpermps ignores). IN_ORDER:
// an empty asm statement per group -- it emits nothing, but tells the compiler that the sums,
// the words the next codes come from and the table pointer pass through it, so each group's
// work stays before the next group's in the program. Left free, GCC hoisted a word's 20 lookups
// above their adds and spilled them to the stack (AVX2 has 16 registers); the CPU still overlaps
// the groups out of order.
#pragma once
#ifdef __AVX2__
#include <immintrin.h>

namespace nq_triples {

#define NQ_TRIPLE(J, code, sub_code, src_a, src_s)                                          \
  {                                                                                         \
    const __m256 table = _mm256_loadu_ps(t + 8 * (J));                                      \
    add[(J) % 2] = _mm256_add_ps(add[(J) % 2], _mm256_permutevar8x32_ps(table, code));      \
    if (TERNARY)                                                                            \
      sub[(J) % 2] = _mm256_add_ps(sub[(J) % 2], _mm256_permutevar8x32_ps(table, sub_code)); \
    if (IN_ORDER)                                                                           \
      asm("" : "+x"(add[(J) % 2]), "+x"(sub[(J) % 2]), "+x"(src_a), "+x"(src_s), "+r"(t));  \
  }

// the word's adds' codes wa and, ternary, subtracts' codes ws (binary: ws unused), its tables t
// (10 x 8 floats)
template <bool TERNARY, bool IN_ORDER = true>
inline void word_lookup(__m256i wa, __m256i ws, const float* t, __m256 add[2], __m256 sub[2]) {
  const __m256i m1 = _mm256_set1_epi16(1 << 13), m2 = _mm256_set1_epi16(1 << 10);
  const __m256i m3 = _mm256_set1_epi16(1 << 7), m4 = _mm256_set1_epi16(1 << 4);
  NQ_TRIPLE(0, wa, ws, wa, ws)
  NQ_TRIPLE(1, _mm256_mulhi_epu16(wa, m1), _mm256_mulhi_epu16(ws, m1), wa, ws)
  NQ_TRIPLE(2, _mm256_mulhi_epu16(wa, m2), _mm256_mulhi_epu16(ws, m2), wa, ws)
  NQ_TRIPLE(3, _mm256_mulhi_epu16(wa, m3), _mm256_mulhi_epu16(ws, m3), wa, ws)
  NQ_TRIPLE(4, _mm256_mulhi_epu16(wa, m4), _mm256_mulhi_epu16(ws, m4), wa, ws)
  __m256i ha = _mm256_srli_epi32(wa, 16), hs = _mm256_srli_epi32(ws, 16);
  NQ_TRIPLE(5, ha, hs, ha, hs)
  NQ_TRIPLE(6, _mm256_mulhi_epu16(ha, m1), _mm256_mulhi_epu16(hs, m1), ha, hs)
  NQ_TRIPLE(7, _mm256_mulhi_epu16(ha, m2), _mm256_mulhi_epu16(hs, m2), ha, hs)
  NQ_TRIPLE(8, _mm256_mulhi_epu16(ha, m3), _mm256_mulhi_epu16(hs, m3), ha, hs)
  NQ_TRIPLE(9, _mm256_mulhi_epu16(ha, m4), _mm256_mulhi_epu16(hs, m4), ha, hs)
}
#undef NQ_TRIPLE

}  // namespace nq_triples
#endif
