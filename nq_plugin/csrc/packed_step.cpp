// One LSTM step computed from packed 1/2-bit words on the CPU (packed_lstm_step): both products
// with the lookup kernel of packed_gemv.cpp (packed_products.h), the folded normalization, the
// gates and the cell (vec_math.h's lstm_cell, the native recurrence's own) in one call -- a
// generation step of a packed model (nq_plugin/packed/kernels/native.py, lstm_stepper).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cstdint>
#include <tuple>
#include <vector>

#include "native.h"
#include "packed_products.h"
#include "vec_math.h"

using namespace nq_packed;

// One whole LSTM step from packed words (the CPU twin of the fused Triton step): for rows
// j, H + j, 2H + j, 3H + j the gate pre-activations ax * N_x(B_x x) + ah * N_h(B_h h) + shift,
// then c' = sigmoid(f) c + sigmoid(i) tanh(g), h' = sigmoid(o) tanh(c'). ax, ah, shift fold the
// per-row scales, a per-feature affine normalization and the bias (N = identity); a term given
// `pre` (pre_x / pre_h) is layer-normalized instead: N(y) = standardize(pre * y) over each of
// its 4 gate blocks (mean and biased variance over the block, + eps), as the native recurrence's
// ROW_BLOCKS, with ax / ah the layer norm's gain. Blocks of 8 hidden units: the 4 gates' 8 rows
// each, then the cell for those units while the gates are in cache; a layer-normalized term
// needs all 4H rows first (a pass before). Blocks never straddle two gates; their words come
// from the lane layout where `m` holds one (one load a word), else from the planes; under the
// triples lookup the lane fields hold the triples layouts (packed_triples.cpp), read instead. x (B, K), h
// and c (B, H) float32; the fixed operands in `m` (native.h), planes contiguous int32 (R = 4H
// rows); packed_lstm_step returns {h', c'}.
namespace {
// The step for activations at x (batch, inputs), h and c (batch, hidden), contiguous float32,
// into h_out and c_out (batch, hidden)
void step_into(const float* x, const float* h, const float* c, int64_t batch, int64_t inputs,
               int64_t hidden, const at::Tensor& ax, const at::Tensor& ah,
               const at::Tensor& shift, const PackedStepOperands& m, float* ho, float* co) {
  const auto& pre_x = m.pre_x;
  const auto& pre_h = m.pre_h;
  const auto& hh_q8_add = m.hh_q8_add;
  const auto& hh_q8_sub = m.hh_q8_sub;
  const double eps_x = m.eps_x, eps_h = m.eps_h;
  const Lookup how = lookup_of(m.lookup);
  const int64_t rows = 4 * hidden;
  auto ih = planes_of(m.ih_plus, m.ih_neg, "packed_lstm_step (ih)");
  auto hh = planes_of(m.hh_plus, m.hh_neg, "packed_lstm_step (hh)");
  const int64_t wx = ih.first.size(1), wh = hh.first.size(1);
  TORCH_CHECK(ih.first.size(0) == rows && hh.first.size(0) == rows, "planes must have 4H rows");
  TORCH_CHECK(inputs <= wx * 32 && hidden <= wh * 32, "inputs do not fit the packed words");
  TORCH_CHECK(ax.numel() == rows && ah.numel() == rows && shift.numel() == rows,
              "ax, ah and shift need 4H values");
  auto axc = ax.contiguous(), ahc = ah.contiguous(), sc = shift.contiguous();
  // int8 activations for the recurrent product (the optional inexact mode): its nibble layout
  const bool q8 = hh_q8_add.has_value();
  // the words the lookups read: the planes' (32 inputs each) or, under the triples lookup, its
  // layout's (kTripleInputs each), which the lane fields then hold
  int64_t words[2] = {wx, wh};
  if (how == Lookup::kTriples) {
    const c10::optional<at::Tensor>* layouts[2] = {&m.ih_lane_add, &m.hh_lane_add};
    const int64_t needed[2] = {inputs, hidden};
    for (int t = 0; t < 2; ++t) {
      if (t == 1 && q8) continue;
      TORCH_CHECK(layouts[t]->has_value() && (*layouts[t])->dim() == 3,
                  "the triples lookup reads each matrix's triples layout (in the lane fields: "
                  "nq_plugin/packed/kernels/native.py, triples_layout), which is missing");
      words[t] = (*layouts[t])->size(1);
      TORCH_CHECK(words[t] * kTripleInputs >= needed[t], "triples layout: ", words[t],
                  " words of ", kTripleInputs, " inputs do not cover ", needed[t]);
    }
  }
  const auto tx = m.ih_wide.has_value() ? Tables()
                                         : build_tables(x, batch, inputs, inputs, words[0],
                                                        ih.second.has_value(), how);
  if (q8) {
    check_q8(*hh_q8_add, hh_q8_sub, rows, hidden);
    TORCH_CHECK(hh_q8_sub.has_value() == hh.second.has_value(),
                "int8-activation layout: a subtract plane goes with 2-bit W_h only");
  }
  // the wide layouts (W_x's, W_h's): those terms' products by the wide lookup (packed_wide.cpp)
  const c10::optional<at::Tensor>* wide_layouts[2] = {&m.ih_wide, &m.hh_wide};
  const bool wide[2] = {m.ih_wide.has_value(), !q8 && m.hh_wide.has_value()};
  const bool ternary[2] = {ih.second.has_value(), hh.second.has_value()};
  const int64_t columns[2] = {inputs, hidden};
  const float* activations[2] = {x, h};
  for (int t = 0; t < 2; ++t) {
    if (!wide[t]) continue;
    TORCH_CHECK(wide_supported(), "the wide lookup needs AVX-512 F, which this CPU or build "
                "lacks: use the nibble or pair lookup (NQ_PLUGIN_LOOKUP)");
    check_wide(**wide_layouts[t], hidden, columns[t], ternary[t]);
  }
  const auto th = q8 || wide[1] ? Tables()
                                : build_tables(h, batch, hidden, hidden, words[1],
                                               ternary[1], how);
  // the two products: plane pointers (or their lane layout), tables, words, and the layer
  // norm's per-row scale
  const int64_t hblocks = (hidden + kLanes - 1) / kLanes;  // blocks of a gate's rows
  struct Term {
    const uint32_t *plus, *neg, *lane_add, *lane_sub;
    const float* tables;
    int64_t words;
    at::Tensor pre;
    double eps;
  };
  auto term_of = [&](const std::pair<at::Tensor, c10::optional<at::Tensor>>& planes,
                     const c10::optional<at::Tensor>& lane_add,
                     const c10::optional<at::Tensor>& lane_sub, const float* tables,
                     int64_t words, const c10::optional<at::Tensor>& pre, double eps) {
    Term t{reinterpret_cast<const uint32_t*>(planes.first.data_ptr<int32_t>()),
           words_of(planes.second), nullptr, nullptr, tables, words,
           pre.has_value() ? pre->contiguous().to(at::kFloat) : at::Tensor(), eps};
    TORCH_CHECK(!t.pre.defined() || t.pre.numel() == rows, "pre needs 4H values");
    if (lane_add.has_value()) {
      std::tie(t.lane_add, t.lane_sub) =
          lanes_of(*lane_add, lane_sub, 4 * hblocks, words, planes.second.has_value());
    }
    return t;
  };
  Term terms[2] = {term_of(ih, m.ih_lane_add, m.ih_lane_sub, tx.data(), words[0], pre_x, eps_x),
                   term_of(hh, m.hh_lane_add, m.hh_lane_sub, th.data(), words[1], pre_h, eps_h)};
  // dots of rows j0..j0+7 (clamped to the gate's rows) of gates g0..g0+count-1 with every
  // activation row: out + (g - g0) * batch * kLanes for gate g
  auto dots = [&](const Term& term, int64_t g0, int count, int64_t j0, float* out) {
    RowBlock blocks[kGates];
    for (int i = 0; i < count; ++i) {
      const int64_t g = g0 + i;
      if (term.lane_add != nullptr) {
        set_lane_block(blocks[i], term.lane_add, term.lane_sub, term.words,
                       g * hblocks + j0 / kLanes);
      } else {
        blocks[i] = plane_block(term.plus, term.neg, term.words, g * hidden + j0,
                                g * hidden + hidden);
      }
    }
    rows_dot(blocks, count, term.words, term.tables, term.words * table_floats(how), batch, out,
             how);
  };
  // terms computed for all rows first -- layer-normalized ones (pre * (B y), then each gate
  // block standardized in place), the int8-activation product and the wide lookup's -- read
  // by the cell pass
  std::vector<float> normalized[2];
  const bool whole[2] = {terms[0].pre.defined(),
                         terms[1].pre.defined() || q8};
  // the wide lookup's products in the cell pass, 32 units (4 blocks) at a time, unless the
  // term is layer-normalized (then computed for all rows first, as the others)
  const bool wide_in_pass[2] = {wide[0] && !whole[0], wide[1] && !whole[1]};
  Tables wide_tables[2];
  for (int t = 0; t < 2; ++t)
    if (wide_in_pass[t])
      wide_tables[t] = build_wide_tables(activations[t], batch, columns[t], columns[t],
                                         (*wide_layouts[t])->size(1), ternary[t]);
  const bool any_in_pass = wide_in_pass[0] || wide_in_pass[1];
  for (int t = 0; t < 2; ++t) {
    const Term& term = terms[t];
    if (!whole[t]) continue;
    std::vector<float>& y = normalized[t];
    y.resize(batch * rows);
    const float* pre = term.pre.defined() ? term.pre.data_ptr<float>() : nullptr;
    if (t == 1 && q8) {
      q8_product(h, batch, hidden, hidden, hh_q8_add->data_ptr<uint8_t>(),
                 hh_q8_sub.has_value() ? hh_q8_sub->data_ptr<uint8_t>() : nullptr, rows,
                 hh_q8_add->size(1), y.data(), rows, pre);
    } else if (wide[t]) {  // layer-normalized
      wide_product(activations[t], batch, columns[t], columns[t], ternary[t],
                   (*wide_layouts[t])->data_ptr<uint8_t>(), (*wide_layouts[t])->size(1), hidden,
                   y.data(), rows, pre);
    } else {
      at::parallel_for(0, 4 * hblocks, 16, [&](int64_t begin, int64_t end) {
        std::vector<float> acc(kLanes * batch);
        for (int64_t blk = begin; blk < end; ++blk) {
          const int64_t g = blk / hblocks, j0 = (blk % hblocks) * kLanes, r0 = g * hidden + j0;
          dots(term, g, 1, j0, acc.data());
          for (int64_t b = 0; b < batch; ++b)
            for (int64_t l = 0; l < kLanes && j0 + l < hidden; ++l)
              y[b * rows + r0 + l] = pre[r0 + l] * acc[b * kLanes + l];
        }
      });
    }
    if (pre == nullptr) continue;  // not layer-normalized
    at::parallel_for(0, batch * 4, 1, [&](int64_t begin, int64_t end) {
      for (int64_t q = begin; q < end; ++q) {
        float* v = y.data() + (q / 4) * rows + (q % 4) * hidden;
        nq_native::standardize(v, v, hidden, term.eps);  // as the native recurrence
      }
    });
  }
  const float *axd = axc.data_ptr<float>(), *ahd = ahc.data_ptr<float>(),
              *sd = sc.data_ptr<float>(), *cd = c;
  using Vec = nq_native::Vec<float>;
  static_assert(kLanes % Vec::size() == 0, "a block is a whole number of vectors");
  const int64_t blocks = (hidden + kLanes - 1) / kLanes;
  // the pass goes over groups of `per` blocks: one, or the wide layout's 32 units
  const int64_t per = any_in_pass ? kWideUnits / kLanes : 1;
  const int64_t groups = (blocks + per - 1) / per;
  at::parallel_for(0, groups, any_in_pass ? 1 : 4, [&](int64_t begin, int64_t end) {
    // the 4 gates' dots of both terms: g2[t][(g * batch + b) * kLanes + l]
    std::vector<float> g2[2] = {std::vector<float>(4 * kLanes * batch),
                                std::vector<float>(4 * kLanes * batch)};
    std::vector<float> pre(4 * kLanes * batch);
    std::vector<float> wide_dots[2];  // a group's dots of the wide terms
    for (int t = 0; t < 2; ++t)
      if (wide_in_pass[t]) wide_dots[t].resize(kWideRows * batch);
    for (int64_t blk = begin * per; blk < std::min(blocks, end * per); ++blk) {
      const int64_t j0 = blk * kLanes, units = std::min(kLanes, hidden - j0);
      for (int t = 0; t < 2; ++t) {
        if (wide_in_pass[t]) {
          const int64_t k = blk / per, at_unit = (blk % per) * kLanes;
          const float* d = wide_dots[t].data();
          if (blk % per == 0)
            wide_block_dots((*wide_layouts[t])->data_ptr<uint8_t>(), (*wide_layouts[t])->size(1),
                            k, wide_tables[t].data(), batch, wide_dots[t].data());
          for (int64_t g = 0; g < 4; ++g)
            for (int64_t b = 0; b < batch; ++b)
              std::copy(d + b * kWideRows + g * kWideUnits + at_unit,
                        d + b * kWideRows + g * kWideUnits + at_unit + kLanes,
                        g2[t].data() + (g * batch + b) * kLanes);
        } else if (!whole[t]) {
          dots(terms[t], 0, kGates, j0, g2[t].data());
        }
      }
      for (int64_t g = 0; g < 4; ++g) {
        const int64_t r0 = g * hidden + j0, limit = g * hidden + hidden;
        for (int t = 0; t < 2; ++t) {
          if (!whole[t]) continue;
          for (int64_t b = 0; b < batch; ++b)
            for (int64_t l = 0; l < kLanes; ++l)
              g2[t][(g * batch + b) * kLanes + l] =
                  normalized[t][b * rows + std::min(r0 + l, limit - 1)];
        }
        for (int64_t b = 0; b < batch; ++b) {
          const float *d0 = g2[0].data() + (g * batch + b) * kLanes,
                      *d1 = g2[1].data() + (g * batch + b) * kLanes;
          float* out = pre.data() + (b * 4 + g) * kLanes;
          if (units == kLanes) {  // a whole block: contiguous rows (vectorized)
            for (int64_t l = 0; l < kLanes; ++l)
              out[l] = axd[r0 + l] * d0[l] + ahd[r0 + l] * d1[l] + sd[r0 + l];
          } else {
            for (int64_t l = 0; l < kLanes; ++l) {
              const int64_t r = std::min(r0 + l, limit - 1);
              out[l] = axd[r] * d0[l] + ahd[r] * d1[l] + sd[r];
            }
          }
        }
      }
      for (int64_t b = 0; b < batch; ++b) {
        const float* p = pre.data() + b * 4 * kLanes;
        alignas(32) float c_prev[kLanes] = {0}, c_new[kLanes], h_new[kLanes];
        std::copy(cd + b * hidden + j0, cd + b * hidden + j0 + units, c_prev);
        for (int64_t q = 0; q < kLanes; q += Vec::size()) {
          const auto cell = nq_native::lstm_cell<float>(
              Vec::loadu(p + q), Vec::loadu(p + kLanes + q), Vec::loadu(p + 2 * kLanes + q),
              Vec::loadu(p + 3 * kLanes + q), Vec::loadu(c_prev + q));
          cell.c.store(c_new + q);
          cell.h.store(h_new + q);
        }
        std::copy(c_new, c_new + units, co + b * hidden + j0);
        std::copy(h_new, h_new + units, ho + b * hidden + j0);
      }
    }
  });
}

void check_activations(const at::Tensor& x, const at::Tensor& h, const at::Tensor& c) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && h.scalar_type() == at::kFloat &&
              c.scalar_type() == at::kFloat, "x, h, c must be float32");
  TORCH_CHECK(x.size(-2) == h.size(-2) && c.sizes() == h.sizes(),
              "x, h and c must have the same batch size, h and c the same shape");
}
}  // namespace

std::vector<at::Tensor> packed_lstm_step(at::Tensor x, at::Tensor h, at::Tensor c,
                                         at::Tensor ax, at::Tensor ah,
                                         at::Tensor shift,
                                         const PackedStepOperands& m) {
  TORCH_CHECK(x.dim() == 2 && h.dim() == 2 && c.dim() == 2,
              "packed_lstm_step: x (B, K), h and c (B, H) expected");
  check_activations(x, h, c);
  const int64_t batch = x.size(0), hidden = h.size(1);
  auto xc = x.contiguous(), hc = h.contiguous(), cc = c.contiguous();
  auto h_out = at::empty({batch, hidden}, x.options());
  auto c_out = at::empty({batch, hidden}, x.options());
  step_into(xc.data_ptr<float>(), hc.data_ptr<float>(), cc.data_ptr<float>(), batch, x.size(1),
            hidden, ax, ah, shift, m, h_out.data_ptr<float>(), c_out.data_ptr<float>());
  return {h_out, c_out};
}

// A generation step in a one-layer model's sequence shapes: x (1, B, K), h and c (1, B, H) ->
// {output, h', c'}, each (1, B, H), the output a tensor of its own (as nn.LSTM's): what the
// packed model returns for a token, with no tensor operation left to do in Python (there each
// costs about a microsecond, as much as a step of a small model's kernel).
std::vector<at::Tensor> packed_lstm_token_step(at::Tensor x, at::Tensor h, at::Tensor c,
                                               at::Tensor ax, at::Tensor ah, at::Tensor shift,
                                               const PackedStepOperands& m) {
  TORCH_CHECK(x.dim() == 3 && x.size(0) == 1 && h.dim() == 3 && h.size(0) == 1 &&
                  c.dim() == 3 && c.size(0) == 1,
              "packed_lstm_token_step: x (1, B, K) and a state h, c (1, B, H) expected");
  check_activations(x, h, c);
  const int64_t batch = x.size(1), hidden = h.size(2);
  auto xc = x.contiguous(), hc = h.contiguous(), cc = c.contiguous();
  auto out = at::empty({1, batch, hidden}, x.options());
  auto h_out = at::empty({1, batch, hidden}, x.options());
  auto c_out = at::empty({1, batch, hidden}, x.options());
  step_into(xc.data_ptr<float>(), hc.data_ptr<float>(), cc.data_ptr<float>(), batch, x.size(2),
            hidden, ax, ah, shift, m, h_out.data_ptr<float>(), c_out.data_ptr<float>());
  std::copy(h_out.data_ptr<float>(), h_out.data_ptr<float>() + batch * hidden,
            out.data_ptr<float>());
  return {out, h_out, c_out};
}
