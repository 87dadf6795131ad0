// Products x W^T with W = diag(s) B from packed codes B (1 bit: plus plane; 2 bits: nonzero and
// negative planes), computed from the packed words without unpacking them, with exact fp32
// activations -- the kernel of token-by-token inference (generation, streaming scoring).
//
// Lookup tables over groups of inputs (T-MAC's idea, Wei et al. 2024, kept in fp32): for each
// activation row x and each group of inputs, the sums the group's code bits can select --
// binary (bit = sign): the signed sums +-x0 +-x1 ...; ternary (bit = selected): the subset sums
// -- looked up once for the adds (binary: the signs; ternary: nonzero & !negative) and, ternary,
// once for the subtracts (nonzero & negative). Two lookups (packed_products.h, Lookup), 8 rows
// in the 8 lanes of a 256-bit register, 8 rows' words transposed in registers (lane l = row l):
// - pairs (AVX2): per pair of inputs a 4-value table (one 128-bit half, twice); one shift brings
//   the pair's bits to the bottom of every lane and one vpermilps looks the 8 rows' values up --
//   3 operations per 16 products;
// - nibbles (AVX-512VL, chosen at run time): per 4 inputs a 16-value table held in two 256-bit
//   registers; one shift and one vpermt2ps (4 index bits) per 4 inputs -- 3 operations per 32
//   products, the same table bytes per word (8 x 16 floats instead of 16 x 8).
// Without AVX2 a portable loop over the pair tables.
// Layout: nq_plugin/packed/format.py (int32 words along the input, LSB first, zero padding).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "native.h"
#include "packed_products.h"
#include "q8_lookup.h"
#include "vec_math.h"

namespace nq_packed {

#ifdef __AVX2__
#define NQ_AVX512 __attribute__((target("avx512f,avx512vl")))
#endif

// The pair tables of activation rows x (n rows of `columns` floats, row stride `stride`) for
// `words` words into t: (n, words * 128) floats, pair p's entries at 8p..8p+7 (4 values, twice).
static void build_pair_tables(const float* x, int64_t n, int64_t stride, int64_t columns,
                              int64_t words, bool ternary, float* t) {
  for (int64_t b = 0; b < n; ++b) {
    float* tb = t + b * words * kTableFloats;
    for (int64_t p = 0; p < words * 16; ++p) {
      const float x0 = 2 * p < columns ? x[b * stride + 2 * p] : 0.f;
      const float x1 = 2 * p + 1 < columns ? x[b * stride + 2 * p + 1] : 0.f;
      const float e0 = ternary ? 0.f : -x0 - x1, e1 = ternary ? x0 : x0 - x1;
      const float e2 = ternary ? x1 : x1 - x0, e3 = x0 + x1;
      float* q = tb + 8 * p;
      q[0] = q[4] = e0;
      q[1] = q[5] = e1;
      q[2] = q[6] = e2;
      q[3] = q[7] = e3;
    }
  }
}

#ifdef __AVX2__
// The nibble tables: group m (inputs 4m..4m+3) at 16m..16m+15, entry e = sum over the group's
// inputs i of x_i if bit i of e is set, else -x_i (binary) or 0 (ternary); summed in input order.
NQ_AVX512 static void build_nibble_tables(const float* x, int64_t n, int64_t stride,
                                          int64_t columns, int64_t words, bool ternary,
                                          float* t) {
  alignas(64) float sel[4][16];
  for (int i = 0; i < 4; ++i)
    for (int e = 0; e < 16; ++e) sel[i][e] = ((e >> i) & 1) ? 1.f : (ternary ? 0.f : -1.f);
  const __m512 s0 = _mm512_load_ps(sel[0]), s1 = _mm512_load_ps(sel[1]);
  const __m512 s2 = _mm512_load_ps(sel[2]), s3 = _mm512_load_ps(sel[3]);
  for (int64_t b = 0; b < n; ++b) {
    const float* xb = x + b * stride;
    float* tb = t + b * words * kTableFloats;
    for (int64_t m = 0; m < words * 8; ++m) {
      float v[4];
      for (int i = 0; i < 4; ++i) v[i] = 4 * m + i < columns ? xb[4 * m + i] : 0.f;
      // x_i * (+-1 or 0) is exact: the sum rounds as ((x0 + x1) + x2) + x3 would
      __m512 e = _mm512_mul_ps(_mm512_set1_ps(v[0]), s0);
      e = _mm512_add_ps(e, _mm512_mul_ps(_mm512_set1_ps(v[1]), s1));
      e = _mm512_add_ps(e, _mm512_mul_ps(_mm512_set1_ps(v[2]), s2));
      e = _mm512_add_ps(e, _mm512_mul_ps(_mm512_set1_ps(v[3]), s3));
      _mm512_storeu_ps(tb + 16 * m, e);
    }
  }
}
#endif

// NQ_AVX2_ONLY (the extension's -march=x86-64-v3 build, nq_plugin/native.py): the AVX-512
// lookups are left out as on an AVX2-only CPU
bool nibbles_supported() {
#if defined(__AVX2__) && !defined(NQ_AVX2_ONLY)
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
  return ok;
#else
  return false;
#endif
}

Tables build_tables(const float* x, int64_t n, int64_t stride, int64_t columns,
                    int64_t words, bool ternary, Lookup lookup) {
  Tables t((size_t)(n * words * table_floats(lookup)));
  if (lookup == Lookup::kTriples) {
    TORCH_CHECK(triples_supported(), "the triples lookup needs an AVX2 build");
    build_triple_tables(x, n, stride, columns, words, ternary, t.data());
    return t;
  }
#ifdef __AVX2__
  if (lookup == Lookup::kNibbles) {
    TORCH_CHECK(nibbles_supported(), "the nibble lookup needs AVX-512 F and VL");
    build_nibble_tables(x, n, stride, columns, words, ternary, t.data());
    return t;
  }
#else
  TORCH_CHECK(lookup == Lookup::kPairs, "the nibble lookup is not compiled in (no AVX2)");
#endif
  build_pair_tables(x, n, stride, columns, words, ternary, t.data());
  return t;
}

#ifdef __AVX2__
// 8x8 transpose of 32-bit elements: r[q] lane l <- r[l] lane q
inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// words k0..k0+7 of 8 rows, transposed: out[q] lane l = rows[l][k0 + q]; a row of fewer than 8
// words (a narrow input: the one-hot of a char model) is gathered word by word, the rest of
// out left unset (the caller reads out[0..words-1] only)
inline void load_lanes(const uint32_t* const* rows, int64_t k0, int64_t words, __m256i out[8]) {
  if (words < 8) {
    for (int64_t q = 0; q < words; ++q)
      out[q] = _mm256_setr_epi32((int)rows[0][q], (int)rows[1][q], (int)rows[2][q],
                                 (int)rows[3][q], (int)rows[4][q], (int)rows[5][q],
                                 (int)rows[6][q], (int)rows[7][q]);
    return;
  }
  __m256 v[8];
  for (int l = 0; l < 8; ++l) v[l] = _mm256_loadu_ps(reinterpret_cast<const float*>(rows[l] + k0));
  transpose8(v);
  for (int q = 0; q < 8; ++q) out[q] = _mm256_castps_si256(v[q]);
}

// acc[0..3] += the table values of one word's 16 pairs, 8 rows (lanes) at once (four
// independent sums: the adds' latency, not their throughput, bounds fewer)
inline void word_lookup(__m256i w, const float* t, __m256 acc[4]) {
#pragma GCC unroll 4
  for (int j = 0; j < 16; j += 4) {
#pragma GCC unroll 4
    for (int u = 0; u < 4; ++u)
      acc[u] = _mm256_add_ps(acc[u], _mm256_permutevar_ps(_mm256_loadu_ps(t + 8 * (j + u)),
                                                          _mm256_srli_epi32(w, 2 * (j + u))));
  }
}
// Words k..k+7 of a block's 8 rows (the last 8 words overlap the ones before, which were
// counted already: `first` skips them), lane l = row l: the adds and, ternary, the subtracts.
struct WordBlock {
  int64_t k0;
  int first, last;
  __m256i add[8], sub[8];
  WordBlock() = default;
  WordBlock(const RowBlock& rows, int64_t k, int64_t words) { load(rows, k, words); }
  void load(const RowBlock& rows, int64_t k, int64_t words) {
    k0 = words >= 8 ? std::min(k, words - 8) : 0;
    first = (int)(k - k0);
    last = (int)std::min<int64_t>(8, words);
    if (rows.lane_add != nullptr) {  // the lane layout: one load a word
      for (int q = 0; q < last; ++q) {
        add[q] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows.lane_add + (k0 + q) * kLanes));
        if (rows.ternary)
          sub[q] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows.lane_sub + (k0 + q) * kLanes));
      }
      return;
    }
    load_lanes(rows.plus, k0, words, add);
    if (!rows.ternary) return;
    load_lanes(rows.neg, k0, words, sub);
    for (int q = 0; q < last; ++q) {
      const __m256i nz = add[q];
      add[q] = _mm256_andnot_si256(sub[q], nz);
      sub[q] = _mm256_and_si256(sub[q], nz);
    }
  }
};

// A independent sums each of the adds' and the subtracts' values (with one block the adds'
// latency, not their throughput, bounds fewer than 4); add_to: out[0..7] += adds - subtracts
template <int A>
struct Sums {
  __m256 add[A], sub[A];
  Sums() {
    for (int a = 0; a < A; ++a) add[a] = sub[a] = _mm256_setzero_ps();
  }
  void add_to(float* out) const {
    __m256 sum = _mm256_sub_ps(add[0], sub[0]);
    if (A == 4)
      sum = _mm256_sub_ps(
          _mm256_add_ps(_mm256_add_ps(add[0], add[1]), _mm256_add_ps(add[2], add[3])),
          _mm256_add_ps(_mm256_add_ps(sub[0], sub[1]), _mm256_add_ps(sub[2], sub[3])));
    _mm256_storeu_ps(out, _mm256_add_ps(_mm256_loadu_ps(out), sum));
  }
};
#endif

// out[b * 8 + l] = B_{row l} . x_b for the block's 8 rows and n activation rows (their pair
// tables, row stride `table_stride`).
template <bool TERNARY>
void rows_dot_pairs(const RowBlock& rows, int64_t words, const float* tables,
                    int64_t table_stride, int64_t n, float* out) {
  std::fill(out, out + kLanes * n, 0.f);
#ifdef __AVX2__
  for (int64_t k = 0; k < words; k += 8) {
    const WordBlock blk(rows, k, words);
    for (int64_t b = 0; b < n; ++b) {
      const float* t = tables + b * table_stride + blk.k0 * kTableFloats;
      Sums<4> sums;
      for (int q = blk.first; q < blk.last; ++q) {
        word_lookup(blk.add[q], t + q * kTableFloats, sums.add);
        if (TERNARY) word_lookup(blk.sub[q], t + q * kTableFloats, sums.sub);
      }
      sums.add_to(out + b * kLanes);
    }
  }
#else
  for (int l = 0; l < kLanes; ++l) {
    for (int64_t b = 0; b < n; ++b) {
      const float* t = tables + b * table_stride;
      float acc = 0.f;
      for (int64_t k = 0; k < words; ++k) {
        uint32_t a, s = 0u;
        if (rows.lane_add != nullptr) {
          a = rows.lane_add[k * kLanes + l];
          if (TERNARY) s = rows.lane_sub[k * kLanes + l];
        } else {
          const uint32_t p = rows.plus[l][k], m = TERNARY ? rows.neg[l][k] : 0u;
          a = TERNARY ? (p & ~m) : p;
          s = p & m;
        }
        for (int j = 0; j < 16; ++j) {
          acc += t[k * kTableFloats + 8 * j + ((a >> (2 * j)) & 3u)];
          if (TERNARY) acc -= t[k * kTableFloats + 8 * j + ((s >> (2 * j)) & 3u)];
        }
      }
      out[b * kLanes + l] = acc;
    }
  }
#endif
}

#ifdef __AVX2__
// The nibble tables (AVX-512VL) for NB blocks of rows against the same tables: for each word's
// 8 groups the group's 4 code bits index the 16 values held in two registers (bit 3 picks the
// register), loaded once for the NB blocks' adds and subtracts; out + i * n * 8 for block i.
// One block keeps 4 sums a plane, more blocks one each (their sums interleave).
template <bool TERNARY, int NB>
NQ_AVX512 void rows_dot_nibbles(const RowBlock* rows, int64_t words, const float* tables,
                                int64_t table_stride, int64_t n, float* out) {
  constexpr int A = NB == 1 ? 4 : 1;
  std::fill(out, out + NB * kLanes * n, 0.f);
  for (int64_t k = 0; k < words; k += 8) {
    WordBlock blk[NB];
    for (int i = 0; i < NB; ++i) blk[i].load(rows[i], k, words);
    for (int64_t b = 0; b < n; ++b) {
      const float* t = tables + b * table_stride + blk[0].k0 * kTableFloats;
      Sums<A> sums[NB];
      for (int q = blk[0].first; q < blk[0].last; ++q) {
        const float* tq = t + q * kTableFloats;
#pragma GCC unroll 8
        for (int j = 0; j < 8; ++j) {
          const __m256 lo = _mm256_loadu_ps(tq + 16 * j), hi = _mm256_loadu_ps(tq + 16 * j + 8);
#pragma GCC unroll 4
          for (int i = 0; i < NB; ++i) {
            __m256& add = sums[i].add[j % A];
            add = _mm256_add_ps(add, _mm256_permutex2var_ps(
                                         lo, _mm256_srli_epi32(blk[i].add[q], 4 * j), hi));
            if (TERNARY) {
              __m256& sub = sums[i].sub[j % A];
              sub = _mm256_add_ps(sub, _mm256_permutex2var_ps(
                                           lo, _mm256_srli_epi32(blk[i].sub[q], 4 * j), hi));
            }
          }
        }
      }
      for (int i = 0; i < NB; ++i) sums[i].add_to(out + (i * n + b) * kLanes);
    }
  }
}
#endif

void rows_dot(const RowBlock* rows, int count, int64_t words, const float* tables,
              int64_t table_stride, int64_t n, float* out, Lookup lookup) {
#ifdef __AVX2__
  // binary: the 4 blocks at once (ternary measured no faster with 2 or 4: its lookups, not
  // its table loads, bound it)
  if (lookup == Lookup::kNibbles && count == kGates && !rows[0].ternary) {
    rows_dot_nibbles<false, kGates>(rows, words, tables, table_stride, n, out);
    return;
  }
#endif
  for (int i = 0; i < count; ++i) {
    const RowBlock& block = rows[i];
    float* o = out + i * n * kLanes;
    if (lookup == Lookup::kTriples) {
      rows_dot_triples(block, words, tables, table_stride, n, o);
      continue;
    }
#ifdef __AVX2__
    if (lookup == Lookup::kNibbles) {
      if (block.ternary) {
        rows_dot_nibbles<true, 1>(&block, words, tables, table_stride, n, o);
      } else {
        rows_dot_nibbles<false, 1>(&block, words, tables, table_stride, n, o);
      }
      continue;
    }
#endif
    if (block.ternary) {
      rows_dot_pairs<true>(block, words, tables, table_stride, n, o);
    } else {
      rows_dot_pairs<false>(block, words, tables, table_stride, n, o);
    }
  }
}

Lookup lookup_of(int64_t value) {
  TORCH_CHECK(value >= (int64_t)Lookup::kPairs && value <= (int64_t)Lookup::kTriples,
              "lookup: 0 (pairs), 1 (nibbles) or 2 (triples), got ", value);
  const Lookup how = static_cast<Lookup>(value);
  TORCH_CHECK(how != Lookup::kNibbles || nibbles_supported(),
              "the nibble lookup needs AVX-512 F and VL, which this CPU or build lacks");
  TORCH_CHECK(how != Lookup::kTriples || triples_supported(),
              "the triples lookup needs an AVX2 build, which this one is not");
  return how;
}

RowBlock plane_block(const uint32_t* plus, const uint32_t* neg, int64_t words, int64_t first,
                     int64_t limit) {
  RowBlock b;
  for (int64_t l = 0; l < kLanes; ++l) {
    const int64_t r = std::min(first + l, limit - 1);
    b.plus[l] = plus + r * words;
    if (neg != nullptr) b.neg[l] = neg + r * words;
  }
  b.ternary = neg != nullptr;
  return b;
}


std::pair<const uint32_t*, const uint32_t*> lanes_of(const at::Tensor& add,
                                                     const c10::optional<at::Tensor>& sub,
                                                     int64_t blocks, int64_t words, bool ternary) {
  auto ok = [&](const at::Tensor& t) {
    return t.dim() == 3 && t.scalar_type() == at::kInt && t.size(0) == blocks &&
           t.size(1) == words && t.size(2) == kLanes && t.is_contiguous();
  };
  TORCH_CHECK(ok(add) && sub.has_value() == ternary && (!ternary || ok(*sub)),
              "lane layout: (", blocks, ", ", words, ", ", kLanes, ") contiguous int32 expected",
              ternary ? " for the adds and the subtracts" : "");
  return {reinterpret_cast<const uint32_t*>(add.data_ptr<int32_t>()),
          sub.has_value() ? reinterpret_cast<const uint32_t*>(sub->data_ptr<int32_t>()) : nullptr};
}

const uint32_t* words_of(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? reinterpret_cast<const uint32_t*>(t->data_ptr<int32_t>()) : nullptr;
}

// contiguous int32 planes of one product, checked: {plus, neg or undefined}
std::pair<at::Tensor, c10::optional<at::Tensor>> planes_of(
    const at::Tensor& plus, const c10::optional<at::Tensor>& neg, const char* what) {
  TORCH_CHECK(plus.dim() == 2 && plus.scalar_type() == at::kInt, what,
              ": planes must be 2-D int32");
  c10::optional<at::Tensor> n;
  if (neg.has_value()) {
    n = neg->contiguous();
    TORCH_CHECK(n->sizes() == plus.sizes() && n->scalar_type() == at::kInt, what,
                ": planes differ in shape or type");
  }
  return {plus.contiguous(), n};
}

// the nibble layout's tensors (blocks, steps, 32) uint8, checked against rows x columns
void check_q8(const at::Tensor& add, const c10::optional<at::Tensor>& sub, int64_t rows,
              int64_t columns) {
  TORCH_CHECK(add.dim() == 3 && add.scalar_type() == at::kByte &&
                  add.size(0) == (rows + nq_q8::kRows - 1) / nq_q8::kRows &&
                  add.size(2) == nq_q8::kRows && add.size(1) * 8 >= columns &&
                  add.size(1) % 4 == 0 && add.is_contiguous(),
              "int8-activation layout: (ceil(rows / 32), words * 4, 32) contiguous uint8 expected");
  TORCH_CHECK(!sub.has_value() || (sub->sizes() == add.sizes() &&
                                   sub->scalar_type() == at::kByte && sub->is_contiguous()),
              "int8-activation layout: the subtract plane differs from the add plane");
}

// y[b, r] = s_b (B q_b)_r for every row r of the nibble layout (`rows` rows), n activation rows
// of `columns` floats (row stride `stride`); the blocks of 32 rows in parallel.
void q8_product(const float* x, int64_t n, int64_t stride, int64_t columns, const uint8_t* add,
                const uint8_t* sub, int64_t rows, int64_t steps, float* y, int64_t y_stride,
                const float* row_scale) {
  std::vector<int8_t> q;
  std::vector<float> s;
  const int64_t padded = steps * 8;
  nq_q8::quantize_rows(x, n, stride, columns, padded, q, s);
  const auto tables = nq_q8::build_tables(q, n, padded, sub != nullptr);
  const int64_t blocks = (rows + nq_q8::kRows - 1) / nq_q8::kRows;
  const int64_t block_bytes = steps * nq_q8::kRows;
  at::parallel_for(0, blocks, 4, [&](int64_t begin, int64_t end) {
    int32_t acc[nq_q8::kRows];
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t r0 = blk * nq_q8::kRows, count = std::min(nq_q8::kRows, rows - r0);
      for (int64_t b = 0; b < n; ++b) {
        nq_q8::block_dot(add + blk * block_bytes, sub ? sub + blk * block_bytes : nullptr, steps,
                         tables.data() + b * (padded / 4) * nq_q8::kTableBytes, acc);
        for (int64_t l = 0; l < count; ++l)
          y[b * y_stride + r0 + l] =
              s[b] * (float)acc[l] * (row_scale != nullptr ? row_scale[r0 + l] : 1.f);
      }
    }
  });
}

}  // namespace nq_packed

using namespace nq_packed;

// x: (N, columns) float32; add (and sub for 2 bits): the nibble layout of (rows, words) planes;
// scale: (rows,) float32. The int8-activation product (q8_lookup.h): s_b diag(scale) B q_b.
at::Tensor packed_gemv_q8(at::Tensor x, at::Tensor add, c10::optional<at::Tensor> sub,
                          at::Tensor scale, int64_t rows, int64_t columns) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.size(1) == columns,
              "x must be (N, columns) float32");
  check_q8(add, sub, rows, columns);
  auto xc = x.contiguous();
  auto scale_c = scale.contiguous().to(at::kFloat);
  TORCH_CHECK(scale_c.numel() == rows, "one scale per row");
  auto y = at::empty({x.size(0), rows}, x.options());
  q8_product(xc.data_ptr<float>(), x.size(0), columns, columns, add.data_ptr<uint8_t>(),
             sub.has_value() ? sub->data_ptr<uint8_t>() : nullptr, rows, add.size(1),
             y.data_ptr<float>(), rows, scale_c.data_ptr<float>());
  return y;
}

bool packed_nibbles_supported() { return nibbles_supported(); }
bool packed_triples_supported() { return triples_supported(); }
double packed_triples_speedup() { return triples_speedup(); }
bool packed_wide_supported() { return wide_supported(); }

// x: (N, columns) float32; plus (and neg for 2 bits): (R, words) int32; scale: (R,) float32.
at::Tensor packed_gemv(at::Tensor x, at::Tensor plus, c10::optional<at::Tensor> neg,
                       at::Tensor scale, int64_t columns, int64_t lookup) {
  const Lookup how = lookup_of(lookup);
  TORCH_CHECK(how != Lookup::kTriples, "packed_gemv reads the planes: lookup 0 (pairs) or 1 "
              "(nibbles); the triples lookup is a fused step's (a triples layout)");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat, "x must be (N, n) float32");
  auto planes = planes_of(plus, neg, "packed_gemv");
  const int64_t n = x.size(0), rows = planes.first.size(0), words = planes.first.size(1);
  TORCH_CHECK(x.size(1) == columns && words * 32 >= columns, "x does not fit the packed matrix");
  auto xc = x.contiguous();
  auto scale_c = scale.contiguous().to(at::kFloat);
  TORCH_CHECK(scale_c.numel() == rows, "one scale per row");
  const auto tables = build_tables(xc.data_ptr<float>(), n, columns, columns, words,
                                   planes.second.has_value(), how);
  auto y = at::empty({n, rows}, x.options());
  const uint32_t* pp = reinterpret_cast<const uint32_t*>(planes.first.data_ptr<int32_t>());
  const uint32_t* np = words_of(planes.second);
  const float* sd = scale_c.data_ptr<float>();
  float* yd = y.data_ptr<float>();
  const int64_t blocks = (rows + kLanes - 1) / kLanes;
  at::parallel_for(0, blocks, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> acc(kLanes * n);
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t r0 = blk * kLanes;
      const RowBlock block = plane_block(pp, np, words, r0, rows);
      rows_dot(&block, 1, words, tables.data(), words * kTableFloats, n, acc.data(), how);
      for (int64_t b = 0; b < n; ++b)
        for (int64_t l = 0; l < kLanes && r0 + l < rows; ++l)
          yd[b * rows + r0 + l] = sd[r0 + l] * acc[b * kLanes + l];
    }
  });
  return y;
}


// diag(scale) B as a dense (R, columns) float32 matrix: the decode for batches where one GEMM on
// the dense matrix beats the GEMV above (scale omitted: the codes themselves). One pass over the
// words; the inner loop over a word's 32 bits is written for the compiler to vectorize.
at::Tensor packed_unpack(at::Tensor plus, c10::optional<at::Tensor> neg,
                         c10::optional<at::Tensor> scale, int64_t columns) {
  TORCH_CHECK(plus.dim() == 2 && plus.scalar_type() == at::kInt, "planes must be int32");
  const int64_t rows = plus.size(0), words = plus.size(1);
  TORCH_CHECK(words * 32 >= columns && columns > (words - 1) * 32,
              "columns do not fit the packed words");
  auto plus_c = plus.contiguous();
  at::Tensor neg_c, scale_c;
  const uint32_t* negp = nullptr;
  const float* sd = nullptr;
  if (neg.has_value()) {
    neg_c = neg->contiguous();
    TORCH_CHECK(neg_c.sizes() == plus_c.sizes(), "planes differ in shape");
    negp = reinterpret_cast<const uint32_t*>(neg_c.data_ptr<int32_t>());
  }
  if (scale.has_value()) {
    scale_c = scale->contiguous().to(at::kFloat);
    TORCH_CHECK(scale_c.numel() == rows, "one scale per row");
    sd = scale_c.data_ptr<float>();
  }
  auto out = at::empty({rows, columns}, plus.options().dtype(at::kFloat));
  const uint32_t* pp = reinterpret_cast<const uint32_t*>(plus_c.data_ptr<int32_t>());
  float* od = out.data_ptr<float>();
  at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
    float buf[32];
    for (int64_t r = begin; r < end; ++r) {
      const float s = sd == nullptr ? 1.f : sd[r];
      float* row = od + r * columns;
      for (int64_t k = 0; k < words; ++k) {
        const uint32_t p = pp[r * words + k];
        const int64_t n = std::min<int64_t>(32, columns - 32 * k);
        float* dst = n == 32 ? row + 32 * k : buf;
        // branch-free integer codes (+-1 or -1/0/+1), converted and scaled: vectorizes
        if (negp == nullptr) {
          for (int i = 0; i < 32; ++i) dst[i] = s * (float)(2 * (int32_t)((p >> i) & 1u) - 1);
        } else {
          const uint32_t q = negp[r * words + k];
          for (int i = 0; i < 32; ++i) {
            const int32_t nz = (int32_t)((p >> i) & 1u), ng = (int32_t)((q >> i) & 1u);
            dst[i] = s * (float)(nz - 2 * (nz & ng));
          }
        }
        if (n < 32) std::copy(buf, buf + n, row + 32 * k);
      }
    }
  });
  return out;
}
