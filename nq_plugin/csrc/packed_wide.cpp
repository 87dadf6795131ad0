// The wide lookup of a fused step's recurrent product (AVX-512F): per group of G inputs of the
// activations -- G = 3 ternary, 5 binary -- the at most 32 sums its codes can select, held in two
// 512-bit registers, and W_h's codes re-encoded once into one byte per group:
// - ternary, triples: code = 9 d0 + 3 d1 + d2 for inputs 3j, 3j+1, 3j+2 (digit 0 -> weight 0,
//   1 -> +1, 2 -> -1), entry = w(d0) x0 + w(d1) x1 + w(d2) x2 (27 of the 32 entries);
// - binary, quintuples: code = the 5 sign bits of inputs 5j..5j+4 (bit i set: +1), entry =
//   sum_i (+-x_i).
// A row's codes of 4 consecutive groups share one 32-bit lane, so 16 rows' codes of 4 groups are
// one load; vpermt2ps reads only an index's low 5 bits, so each group after the first costs one
// shift: one vpermt2ps looks 16 rows' sums up per group -- 48 (ternary) or 80 (binary) products
// per 2-3 operations, where the nibble lookup takes 3 per 32 (binary) and 6 per 32 (ternary:
// the adds' and the subtracts' lookups) -- and eight row groups share each table load: a block
// is 32 hidden units of each of the 4 gates (128 rows). Exact fp32 activations: the tables are
// sums of +-x_i, the product their fp32 sum.
// Layout: nq_plugin/packed/kernels/native.py, wide_layout.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <vector>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "packed_products.h"

namespace nq_packed {

namespace {
inline int64_t group_of(bool ternary) { return ternary ? 3 : 5; }
// groups of a row of `columns` inputs, a whole number of 4-group lanes
inline int64_t quads_of(int64_t columns, bool ternary) {
  return (columns + 4 * group_of(ternary) - 1) / (4 * group_of(ternary));
}
}  // namespace

#ifdef __AVX2__
#define NQ_AVX512F __attribute__((target("avx512f")))

// The tables of one activation row: group j's 32 entries at 32j, entry e the sum over the
// group's inputs of its weight under code e times the input (inputs past `columns` are 0; the
// unused ternary entries 27..31 are 0), summed in input order (x_i * w is exact).
NQ_AVX512F static void wide_tables(const float* x, int64_t columns, int64_t groups,
                                   bool ternary, float* t) {
  constexpr int kMaxGroup = 5;
  const int size = (int)group_of(ternary);
  alignas(64) float sel[kMaxGroup][32];
  for (int e = 0; e < 32; ++e) {
    for (int i = 0; i < size; ++i) {
      if (ternary) {
        const int d = i == 0 ? e / 9 : (i == 1 ? (e / 3) % 3 : e % 3);
        sel[i][e] = e >= 27 ? 0.f : (d == 1 ? 1.f : (d == 2 ? -1.f : 0.f));
      } else {
        sel[i][e] = ((e >> i) & 1) ? 1.f : -1.f;
      }
    }
  }
  __m512 s[kMaxGroup][2];
  for (int i = 0; i < size; ++i) {
    s[i][0] = _mm512_load_ps(sel[i]);
    s[i][1] = _mm512_load_ps(sel[i] + 16);
  }
  for (int64_t j = 0; j < groups; ++j) {
    for (int half = 0; half < 2; ++half) {
      __m512 e = _mm512_setzero_ps();
      for (int i = 0; i < size; ++i) {
        const int64_t c = size * j + i;
        const float v = c < columns ? x[c] : 0.f;
        e = i == 0 ? _mm512_mul_ps(_mm512_set1_ps(v), s[0][half])
                   : _mm512_add_ps(e, _mm512_mul_ps(_mm512_set1_ps(v), s[i][half]));
      }
      _mm512_storeu_ps(t + 32 * j + 16 * half, e);
    }
  }
}

// out[0..127] = the dots of one block's 128 rows with the activation row of tables t (`quads`
// lanes of 4 groups)
NQ_AVX512F static void wide_block(const uint8_t* codes, int64_t quads, const float* t,
                                  float* out) {
  constexpr int kGroups = kWideRows / 16;
  __m512 acc[kGroups];
  for (int i = 0; i < kGroups; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t q = 0; q < quads; ++q) {
    const uint8_t* c = codes + q * 4 * kWideRows;
    __m512i v[kGroups];
    for (int i = 0; i < kGroups; ++i) v[i] = _mm512_loadu_si512(c + 64 * i);
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      const float* tk = t + (4 * q + k) * 32;
      const __m512 lo = _mm512_loadu_ps(tk), hi = _mm512_loadu_ps(tk + 16);
#pragma GCC unroll 8
      for (int i = 0; i < kGroups; ++i) {
        const __m512i idx = k == 0 ? v[i] : _mm512_srli_epi32(v[i], 8 * k);
        acc[i] = _mm512_add_ps(acc[i], _mm512_permutex2var_ps(lo, idx, hi));
      }
    }
  }
  for (int i = 0; i < kGroups; ++i) _mm512_storeu_ps(out + 16 * i, acc[i]);
}
#endif

bool wide_supported() {
#if defined(__AVX2__) && !defined(NQ_AVX2_ONLY)  // NQ_AVX2_ONLY: as nibbles_supported
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok;
#else
  return false;
#endif
}

void check_wide(const at::Tensor& codes, int64_t hidden, int64_t columns, bool ternary) {
  const int64_t blocks = (hidden + kWideUnits - 1) / kWideUnits;
  const int64_t quads = quads_of(columns, ternary);
  TORCH_CHECK(codes.scalar_type() == at::kByte && codes.dim() == 3 && codes.is_contiguous() &&
                  codes.size(0) == blocks && codes.size(1) >= quads &&
                  codes.size(2) == 4 * kWideRows,
              "wide layout: a contiguous (", blocks, ", at least ", quads, ", ", 4 * kWideRows,
              ") uint8 tensor expected for ", 4 * hidden, " x ", columns,
              ternary ? " ternary" : " binary",
              " weights (nq_plugin/packed/kernels/native.py, wide_layout)");
}

Tables build_wide_tables(const float* x, int64_t n, int64_t stride, int64_t columns,
                         int64_t quads, bool ternary) {
  TORCH_CHECK(wide_supported(), "the wide lookup needs AVX-512 F");
  const int64_t groups = 4 * quads;
  Tables tables((size_t)(n * groups * 32));
#ifdef __AVX2__
  for (int64_t b = 0; b < n; ++b)
    wide_tables(x + b * stride, columns, groups, ternary, tables.data() + b * groups * 32);
#endif
  return tables;
}

void wide_block_dots(const uint8_t* codes, int64_t quads, int64_t block, const float* tables,
                     int64_t n, float* out) {
#ifdef __AVX2__
  const int64_t groups = 4 * quads;
  for (int64_t b = 0; b < n; ++b)
    wide_block(codes + block * groups * kWideRows, quads, tables + b * groups * 32,
               out + b * kWideRows);
#else
  TORCH_CHECK(false, "the wide lookup is not compiled in (no AVX2 build)");
#endif
}

void wide_product(const float* x, int64_t n, int64_t stride, int64_t columns, bool ternary,
                  const uint8_t* codes, int64_t quads, int64_t hidden, float* y,
                  int64_t y_stride, const float* row_scale) {
  const auto tables = build_wide_tables(x, n, stride, columns, quads, ternary);
  const int64_t blocks = (hidden + kWideUnits - 1) / kWideUnits;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> out(kWideRows * n);
    for (int64_t k = begin; k < end; ++k) {
      const int64_t u0 = k * kWideUnits;
      wide_block_dots(codes, quads, k, tables.data(), n, out.data());
      for (int64_t b = 0; b < n; ++b)
        for (int64_t g = 0; g < 4; ++g)
          for (int64_t l = 0; l < kWideUnits && u0 + l < hidden; ++l) {
            const int64_t r = g * hidden + u0 + l;
            const float v = out[b * kWideRows + g * kWideUnits + l];
            y[b * y_stride + r] = row_scale != nullptr ? row_scale[r] * v : v;
          }
    }
  });
}

}  // namespace nq_packed
