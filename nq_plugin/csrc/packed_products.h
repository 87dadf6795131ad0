// The lookup-table products from packed words that packed_gemv.cpp defines and the fused LSTM
// step (packed_step.cpp) reuses: one declaration each (what they compute: packed_gemv.cpp).
#pragma once
#include <ATen/ATen.h>

#include "cache_line.h"

#include <cstdint>
#include <utility>
#include <vector>

namespace nq_packed {

// the lookup tables of activation rows (build_tables, build_wide_tables)
using Tables = std::vector<float, nq_native::CacheLineAllocator<float>>;

constexpr int64_t kLanes = 8;          // rows per block
constexpr int64_t kTableFloats = 128;  // per 32-input word, either lookup's tables

// How a word's 32 inputs are looked up, kLanes rows at a time (packed_gemv.cpp):
// kPairs: 16 tables of 4 values, one per pair of inputs (AVX2 vpermilps; portable without AVX2);
// kNibbles: 8 tables of 16 values, one per 4 inputs (AVX-512VL vpermt2ps): half the lookups;
// kTriples: 10 tables of 8 values per word of 30 inputs, one per 3 inputs (AVX2 vpermps), read
// from a triples layout only (packed_triples.cpp: a fused step's matrices, re-encoded once).
enum class Lookup : int64_t { kPairs = 0, kNibbles = 1, kTriples = 2 };
// whether kNibbles runs here: compiled in (an AVX2 build) and the CPU has AVX-512 F and VL
bool nibbles_supported();
// whether kTriples runs here: an AVX2 build (packed_triples.cpp)
bool triples_supported();
// the time of a ternary product by the pairs over its time by the triples, measured here
// (packed_triples.cpp; 0 where the triples do not run)
double triples_speedup();
constexpr int64_t kTripleGroups = 10;                     // groups of 3 inputs per triples word
constexpr int64_t kTripleInputs = 3 * kTripleGroups;      // inputs per triples word
constexpr int64_t kTripleTableFloats = 8 * kTripleGroups;  // per triples word, its tables
// the floats of one word's tables under `how`
inline int64_t table_floats(Lookup how) {
  return how == Lookup::kTriples ? kTripleTableFloats : kTableFloats;
}
// a Lookup from its number, checked (a bad number, or kNibbles where it cannot run: an error)
Lookup lookup_of(int64_t value);
// the tables of n activation rows for `words` words in `lookup`'s layout: (n, words *
// table_floats(lookup)) floats (kTriples: words of kTripleInputs inputs)
Tables build_tables(const float* x, int64_t n, int64_t stride, int64_t columns,
                                int64_t words, bool ternary, Lookup lookup);
// Where one block of kLanes rows finds its words: row pointers into the planes (transposed in
// registers as they are read), or one block of the lane layout -- (words, kLanes) uint32 each for
// the adds (binary: the signs; ternary: nonzero & !negative) and, ternary, the subtracts, each
// word's kLanes rows adjacent (nq_plugin/packed/kernels/native.py, lane_layout): read as they are
// (the row pointers are set by plane_block only and read only without a lane layout: a block
// of the lane layout, set for every block of every step, leaves them unwritten)
struct RowBlock {
  const uint32_t* plus[kLanes];
  const uint32_t* neg[kLanes];
  const uint32_t* lane_add = nullptr;
  const uint32_t* lane_sub = nullptr;
  bool ternary = false;
};
// rows first..first+7 of the planes (neg null for binary), clamped to row `limit` - 1
RowBlock plane_block(const uint32_t* plus, const uint32_t* neg, int64_t words, int64_t first,
                     int64_t limit);
// b := block `index` of a lane layout (sub null for binary), set in place
inline void set_lane_block(RowBlock& b, const uint32_t* add, const uint32_t* sub, int64_t words,
                           int64_t index) {
  b.lane_add = add + index * words * kLanes;
  b.lane_sub = sub != nullptr ? sub + index * words * kLanes : nullptr;
  b.ternary = sub != nullptr;
}
// out[(i * n + b) * kLanes + l] = B_{row l of block i} . x_b for `count` blocks of kLanes rows
// (of the same kind: binary or ternary) and n activation rows (their tables, built for the same
// `lookup`); the binary nibble lookup reads each table value once for kGates blocks (the 4 gates
// of a step's hidden units)
constexpr int kGates = 4;
void rows_dot(const RowBlock* rows, int count, int64_t words, const float* tables,
              int64_t table_stride, int64_t n, float* out, Lookup lookup);
// the triples tables (build_tables' kTriples): group j's 8 entries at 8j, entry e = the sum
// over the group's inputs i of x_i if bit i of e is set, else -x_i (binary) or 0 (ternary)
void build_triple_tables(const float* x, int64_t n, int64_t stride, int64_t columns,
                         int64_t words, bool ternary, float* t);
// out[b * kLanes + l] = B_{row l} . x_b for one block of a triples layout (rows.lane_add /
// lane_sub: its codes) and n activation rows (their triples tables, row stride table_stride)
void rows_dot_triples(const RowBlock& rows, int64_t words, const float* tables,
                      int64_t table_stride, int64_t n, float* out);
// the words of an optional plane (null when absent)
const uint32_t* words_of(const c10::optional<at::Tensor>& t);
// a lane layout's tensors checked against `blocks` blocks of `words` words: {add, sub or null}
std::pair<const uint32_t*, const uint32_t*> lanes_of(const at::Tensor& add,
                                                     const c10::optional<at::Tensor>& sub,
                                                     int64_t blocks, int64_t words, bool ternary);
// contiguous int32 planes of one product, checked: {plus, neg or undefined}
std::pair<at::Tensor, c10::optional<at::Tensor>> planes_of(
    const at::Tensor& plus, const c10::optional<at::Tensor>& neg, const char* what);
// the nibble layout's tensors (blocks, steps, 32) uint8, checked against rows x columns
void check_q8(const at::Tensor& add, const c10::optional<at::Tensor>& sub, int64_t rows,
              int64_t columns);
// y[b, r] = s_b (B q_b)_r (int8 activations, q8_lookup.h), the blocks of 32 rows in parallel
void q8_product(const float* x, int64_t n, int64_t stride, int64_t columns, const uint8_t* add,
                const uint8_t* sub, int64_t rows, int64_t steps, float* y, int64_t y_stride,
                const float* row_scale);

// The wide lookup of a fused step's recurrent product (packed_wide.cpp, AVX-512F): blocks of
// kWideUnits hidden units of each of the 4 gates (kWideRows rows), their codes one byte per
// group of 3 (ternary) or 5 (binary) inputs, a row's 4 consecutive groups in one 32-bit lane
// (nq_plugin/packed/kernels/native.py, wide_layout: (blocks, ceil(columns / 4G), 4 kWideRows)
// uint8).
constexpr int64_t kWideUnits = 32;
constexpr int64_t kWideRows = 4 * kWideUnits;
// whether the wide lookup runs here: an AVX2 build on a CPU with AVX-512 F
bool wide_supported();
// a wide layout checked against 4 * hidden rows of `columns` inputs (its groups may cover more
// columns: a layout of the padded words; the inputs past `columns` count as 0)
void check_wide(const at::Tensor& codes, int64_t hidden, int64_t columns, bool ternary);
// the wide tables of n activation rows (row stride `stride`, `columns` inputs) for a layout of
// `quads` lanes of 4 groups: each (4 quads, 32) floats
Tables build_wide_tables(const float* x, int64_t n, int64_t stride, int64_t columns,
                                     int64_t quads, bool ternary);
// out[b * kWideRows + 32 g + l] = B_{row g H + 32 block + l} . x_b for block `block` of the
// wide layout `codes` (`quads` lanes of 4 groups) and n activation rows (their tables)
void wide_block_dots(const uint8_t* codes, int64_t quads, int64_t block, const float* tables,
                     int64_t n, float* out);
// y[b, r] = row_scale[r] (or 1) * B_r . x_b for the 4 * hidden rows of the wide layout `codes`
// and n activation rows x (row stride `stride`), the blocks in parallel
void wide_product(const float* x, int64_t n, int64_t stride, int64_t columns, bool ternary,
                  const uint8_t* codes, int64_t quads, int64_t hidden, float* y,
                  int64_t y_stride, const float* row_scale);

}  // namespace nq_packed
