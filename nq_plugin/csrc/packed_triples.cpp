// The triples lookup of a fused step's products (AVX2): per group of 3 inputs of the
// activations an 8-value table in one 256-bit register, and the matrix's codes re-encoded once
// into 3-bit subset codes, 8 rows in the 8 lanes of a register (as the pairs' lane layout):
// - binary: code = the group's 3 sign bits (bit i set: +1 for input 3j + i), entry e =
//   sum_i (+-x_i); one lookup a group;
// - ternary: two codes a group, the adds' (bit i set: weight +1) and the subtracts' (weight -1),
//   entry e = sum over the set bits i of x_i; the adds' value minus the subtracts'.
// One vpermps looks 8 rows' values up per group (24 products, binary; 24 per 2 ternary) where
// the pairs take 2 vpermilps (16 products each). vpermps reads only an index's low 3 bits, so a
// word holds 10 groups -- 5 in each 16-bit half, group i at bits 3i (and 16 + 3(i - 5)) -- and
// group i's code comes to the bottom of its lane by a 16-bit high multiply by 2^(16 - 3i)
// (vpmulhuw, the multiplier's port) rather than a shift (the shuffles' port, which the lookups
// already fill; triples_word.h): 1.7-1.8x the pairs per ternary product on Zen 4's AVX2
// (benchmarks/triples_kernel.cpp), but 0.7x on Zen 3, whose vpermps across lanes costs more
// than its in-lane vpermilps: auto takes the triples only where triples_speedup, measured once
// a process, finds them faster.
// Exact fp32 activations: the tables are sums of +-x_i, the product their fp32 sum.
// Layout: nq_plugin/packed/kernels/native.py, triples_layout: (blocks, words, 8) int32 as the
// lane layout's RowBlock (packed_products.h), each word 30 inputs.
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "packed_products.h"
#include "triples_word.h"

namespace nq_packed {

bool triples_supported() {
#ifdef __AVX2__
  return true;
#else
  return false;
#endif
}

void build_triple_tables(const float* x, int64_t n, int64_t stride, int64_t columns,
                         int64_t words, bool ternary, float* t) {
  for (int64_t b = 0; b < n; ++b) {
    float* tb = t + b * words * kTripleTableFloats;
    for (int64_t j = 0; j < words * kTripleGroups; ++j) {
      float v[3];
      for (int i = 0; i < 3; ++i) v[i] = 3 * j + i < columns ? x[b * stride + 3 * j + i] : 0.f;
      for (int e = 0; e < 8; ++e) {  // summed in input order: ((x0' + x1') + x2')
        float s = 0.f;
        for (int i = 0; i < 3; ++i) {
          const bool set = (e >> i) & 1;
          const float term = set ? v[i] : (ternary ? 0.f : -v[i]);
          s = i == 0 ? term : s + term;
        }
        tb[8 * j + e] = s;
      }
    }
  }
}

#ifdef __AVX2__
namespace {
template <bool TERNARY>
void block_dots(const RowBlock& rows, int64_t words, const float* tables, int64_t table_stride,
                int64_t n, float* out) {
  for (int64_t b = 0; b < n; ++b) {
    // two sums a plane: their adds' latency hides behind a word's 10 groups of lookups
    __m256 add[2], sub[2];
    for (int a = 0; a < 2; ++a) add[a] = sub[a] = _mm256_setzero_ps();
    for (int64_t k = 0; k < words; ++k) {
      const __m256i wa = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(rows.lane_add + k * kLanes));
      const __m256i ws = TERNARY ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(
                                       rows.lane_sub + k * kLanes))
                                 : wa;
      nq_triples::word_lookup<TERNARY>(wa, ws, tables + b * table_stride + k * kTripleTableFloats,
                                       add, sub);
    }
    __m256 sum = _mm256_add_ps(add[0], add[1]);
    if (TERNARY) sum = _mm256_sub_ps(sum, _mm256_add_ps(sub[0], sub[1]));
    _mm256_storeu_ps(out + b * kLanes, sum);
  }
}
}  // namespace
#endif

void rows_dot_triples(const RowBlock& rows, int64_t words, const float* tables,
                      int64_t table_stride, int64_t n, float* out) {
  TORCH_CHECK(rows.lane_add != nullptr,
              "the triples lookup reads a triples layout (nq_plugin/packed/kernels/native.py, "
              "triples_layout), not the planes");
#ifdef __AVX2__
  if (rows.ternary) {
    block_dots<true>(rows, words, tables, table_stride, n, out);
  } else {
    block_dots<false>(rows, words, tables, table_stride, n, out);
  }
#else
  (void)words, (void)tables, (void)table_stride, (void)n, (void)out;
  TORCH_CHECK(false, "the triples lookup is not compiled in (no AVX2 build)");
#endif
}

double triples_speedup() {
#ifdef __AVX2__
  // A ternary product of 512 rows by 960 inputs (32 pair words, 32 triples words a row), random
  // codes in both layouts, one activation row; each lookup's time the best of 9 rounds of 8
  // products, the rounds alternating so that both see the same load. The product is what a
  // step's blocks compute (rows_dot over 4 blocks, the gates), a few milliseconds in all.
  constexpr int64_t kBlocks = 64, kInputs = 960;
  constexpr int64_t pair_words = kInputs / 32, triple_words = kInputs / kTripleInputs;
  std::mt19937 random(20261206);
  auto words = [&](int64_t count, uint32_t mask) {
    std::vector<uint32_t> w(count);
    for (auto& v : w) v = static_cast<uint32_t>(random()) & mask;
    return w;
  };
  const auto pa = words(kBlocks * pair_words * kLanes, 0xffffffffu);
  const auto ps = words(pa.size(), 0xffffffffu);
  const auto ta = words(kBlocks * triple_words * kLanes, 0x3fffffffu);
  const auto ts = words(ta.size(), 0x3fffffffu);
  std::vector<float> x(kInputs);
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  for (auto& v : x) v = uniform(random);
  const Tables pair_tables = build_tables(x.data(), 1, kInputs, kInputs, pair_words, true,
                                          Lookup::kPairs);
  const Tables triple_tables = build_tables(x.data(), 1, kInputs, kInputs, triple_words, true,
                                            Lookup::kTriples);
  float out[kGates * kLanes];
  auto product_seconds = [&](Lookup how, const std::vector<uint32_t>& add,
                             const std::vector<uint32_t>& sub, int64_t w, const Tables& t) {
    const auto start = std::chrono::steady_clock::now();
    for (int repeat = 0; repeat < 8; ++repeat) {
      for (int64_t b = 0; b < kBlocks; b += kGates) {
        RowBlock blocks[kGates];
        for (int g = 0; g < kGates; ++g) {
          set_lane_block(blocks[g], add.data(), sub.data(), w, b + g);
        }
        rows_dot(blocks, kGates, w, t.data(), w * table_floats(how), 1, out, how);
      }
    }
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  double pairs = std::numeric_limits<double>::infinity(), triples = pairs;
  for (int round = 0; round < 9; ++round) {
    pairs = std::min(pairs, product_seconds(Lookup::kPairs, pa, ps, pair_words, pair_tables));
    triples = std::min(triples, product_seconds(Lookup::kTriples, ta, ts, triple_words,
                                                triple_tables));
  }
  return pairs / triples;
#else
  return 0.0;
#endif
}

}  // namespace nq_packed
