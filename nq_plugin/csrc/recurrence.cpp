// The time loop of a normalized LSTM layer (nq_plugin/nn/recurrence.py has the Python
// reference; both compute, per step t, with px = x W_x^T for all steps computed outside):
//
//   z_t = h_{t-1} W_h^T                                  (one GEMM per step, ATen)
//   g_t = gain_x * N_x(px_t) + gain_h * N_h(z_t) + shift
//   c_t = sigma(i) * tanh(a) + sigma(f) * c_{t-1},   h_t = sigma(o) * tanh(c_t)
//
// Each normalization hands over its "native form" (nq_plugin/norm/base.py, NativeForm): one of
// the seven operations of native_ops.h on a step's (B, F) term, without gain and shift:
//   IDENTITY    y_hat = y
//   ROW_BLOCKS  standardize each row's 4 gate blocks (layer norm)
//   BATCH       standardize each column over the batch, and update the running mean and
//               (unbiased) variance of the step's slot with the momentum (batch norm, training)
//   FIXED       y_hat = (y - first[slot]) * second[slot] (batch norm / PowerNorm at inference)
//   POWER_RUNNING  PowerNorm in training after its warmup: y_hat = y * second[0] (1 / psi),
//               the forward statistics (sum y^2, sum y_hat^2, count) added to accum (3, F);
//               backward dy = (d - nu * y_hat) / psi, (sum d * y_hat, count) added to
//               accum_backward (2, F)
//   AFFINE      y_hat = y * first[slot] + second[slot] (a packed model's folded batch norm /
//               PowerNorm, nq_plugin/packed)
//   POWER_WARMUP   PowerNorm's warmup: y_hat = y / sqrt(mean_B(y^2) + eps) with the exact
//               backward, the forward statistics added to accum
// with slot = min(t, S - 1) for S rows of statistics. The normalizations of both terms, the gate
// activations and the cell update run in one pass per batch row while the row is in cache,
// with vectorized exp / tanh (at::vec); the backward walks the steps once the same way and
// forms dL/dW_h with one GEMM at the end.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "native.h"
#include "native_ops.h"
#include "vec_math.h"

using at::Tensor;

namespace {

enum Op : int64_t {
#define NQ_OP(name, value) name = value,
  NQ_NATIVE_OPS(NQ_OP)
#undef NQ_OP
};
// ops whose backward needs column sums over the batch (all rows' y_hat)
inline bool by_columns(int64_t op) {
  return op == BATCH || op == POWER_RUNNING || op == POWER_WARMUP;
}
constexpr int64_t kBlocks = 4;

using nq_native::Vec;
using nq_native::sigmoid;
using nq_native::tanh_fast;

template <typename T>
inline T sum(const T* x, int64_t n) {
  return at::vec::reduce_all<T>([](Vec<T>& a, Vec<T>& b) { return a + b; }, x, n);
}

// out = (in - a) * b elementwise (a, b per feature)
template <typename T>
inline void shift_scale(const T* in, const T* a, const T* b, T* out, int64_t n) {
  at::vec::map3<T>([](Vec<T> x, Vec<T> m, Vec<T> s) { return (x - m) * s; }, out, in, a, b, n);
}

// Forward normalization of one row (F features) into out; for ROW_BLOCKS row_stats (2 kBlocks)
// gets each block's mean, then each block's rstd. col_a / col_b: the column vectors of BATCH
// (mean, invstd) / FIXED (first, second).
template <typename T>
void normalize_row(int64_t op, const T* in, T* out, int64_t features, double eps, const T* col_a,
                   const T* col_b, T* row_stats) {
  if (op == IDENTITY) {
    std::copy(in, in + features, out);
  } else if (op == ROW_BLOCKS) {
    const int64_t n = features / kBlocks;
    for (int64_t k = 0; k < kBlocks; ++k) {
      const auto stats = nq_native::standardize(in + k * n, out + k * n, n, eps);
      if (row_stats != nullptr) {
        row_stats[k] = stats.first;
        row_stats[kBlocks + k] = stats.second;
      }
    }
  } else if (op == AFFINE) {
    at::vec::map3<T>([](Vec<T> x, Vec<T> s, Vec<T> b) { return x * s + b; }, out, in, col_a,
                     col_b, features);
  } else {  // BATCH, FIXED, POWER_*
    shift_scale(in, col_a, col_b, out, features);
  }
}

// The forward normalization again, from the statistics saved by normalize_row (the backward
// recomputes the input term's y_hat instead of keeping it).
template <typename T>
void reapply_row(int64_t op, const T* in, T* out, int64_t features, const T* col_a,
                 const T* col_b, const T* row_stats) {
  if (op == IDENTITY) {
    std::copy(in, in + features, out);
  } else if (op == ROW_BLOCKS) {
    const int64_t n = features / kBlocks;
    for (int64_t k = 0; k < kBlocks; ++k) {
      const T mean = row_stats[k], rstd = row_stats[kBlocks + k];
      at::vec::map<T>([mean, rstd](Vec<T> v) { return (v - Vec<T>(mean)) * Vec<T>(rstd); },
                      out + k * n, in + k * n, n);
    }
  } else if (op == AFFINE) {
    at::vec::map3<T>([](Vec<T> x, Vec<T> s, Vec<T> b) { return x * s + b; }, out, in, col_a,
                     col_b, features);
  } else {
    shift_scale(in, col_a, col_b, out, features);
  }
}

// Backward of normalize_row for the ops that act row by row: d (the gradient w.r.t. y_hat) ->
// dx. BATCH is handled by columns outside.
template <typename T>
void normalize_row_backward(int64_t op, const T* d, const T* y_hat, T* dx, int64_t features,
                            const T* col_b, const T* row_stats) {
  if (op == IDENTITY) {
    std::copy(d, d + features, dx);
  } else if (op == ROW_BLOCKS) {
    const int64_t n = features / kBlocks;
    for (int64_t k = 0; k < kBlocks; ++k) {
      const T* dk = d + k * n;
      const T* yk = y_hat + k * n;
      const T m1 = sum(dk, n) / T(n);
      const T m2 = at::vec::map2_reduce_all<T>(
                       [](Vec<T> a, Vec<T> b) { return a * b; },
                       [](Vec<T> a, Vec<T> b) { return a + b; }, dk, yk, n) / T(n);
      const T rstd = row_stats[kBlocks + k];
      at::vec::map2<T>([m1, m2, rstd](Vec<T> g, Vec<T> y) {
                         return (g - Vec<T>(m1) - y * Vec<T>(m2)) * Vec<T>(rstd);
                       }, dx + k * n, dk, yk, n);
    }
  } else {  // FIXED
    at::vec::map2<T>([](Vec<T> g, Vec<T> s) { return g * s; }, dx, d, col_b, features);
  }
}

// y = x W^T for the step's GEMM: through oneDNN with W reordered once into its blocked layout
// (``w_packed``, from mkldnn::_reorder_linear_weight; ~1.35x faster for these skinny GEMMs on
// CPU) when given, else at::mm with w_t = W^T.
struct StepMatmul {
  Tensor w_t, w_packed;
  Tensor operator()(const Tensor& x) const {
    if (!w_packed.defined()) return at::mm(x, w_t);
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
    std::vector<c10::IValue> stack{x, w_packed, c10::IValue(), std::string("none"),
                                   c10::List<c10::optional<at::Scalar>>(), c10::IValue()};
    op.callBoxed(&stack);
    return stack[0].toTensor();
  }
};

// Two column sums in one pass: out1[j] = scale * sum_b f1, out2[j] = scale * sum_b f2.
// Row by row over a chunk of columns (sequential reads; the chunk's sums stay in L1).
template <typename T, typename F2>
void column_sums2(int64_t batch, int64_t features, T scale, T* out1, T* out2, const F2& fun) {
  constexpr int64_t kChunk = 256;
  at::parallel_for(0, (features + kChunk - 1) / kChunk, 1, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t j0 = chunk * kChunk, width = std::min(kChunk, features - j0);
      T s1[kChunk], s2[kChunk];
      std::fill(s1, s1 + width, T(0));
      std::fill(s2, s2 + width, T(0));
      for (int64_t b = 0; b < batch; ++b) {
        for (int64_t j = 0; j < width; j += Vec<T>::size()) {
          const int64_t n = std::min<int64_t>(Vec<T>::size(), width - j);
          Vec<T> a1 = Vec<T>::loadu(s1 + j, n), a2 = Vec<T>::loadu(s2 + j, n);
          fun(b * features + j0 + j, j0 + j, n, a1, a2);
          a1.store(s1 + j, n);
          a2.store(s2 + j, n);
        }
      }
      for (int64_t j = 0; j < width; ++j) {
        out1[j0 + j] = s1[j] * scale;
        out2[j0 + j] = s2[j] * scale;
      }
    }
  });
}

// PowerNorm after its warmup, backward of step t: dy = (d - nu * y_hat) * inv_psi in place of
// d, and (sum_B d * y_hat, count) added to accum_backward (2, F).
template <typename T>
void power_running_backward(T* d, const T* y_hat, const T* inv_psi, const T* nu,
                            T* accum_backward, int64_t batch, int64_t features, T* scratch) {
  column_sums2<T>(batch, features, T(1), scratch, scratch + features,
                  [&](int64_t o, int64_t j, int64_t n, Vec<T>& s1, Vec<T>& s2) {
                    s1 = s1 + Vec<T>::loadu(d + o, n) * Vec<T>::loadu(y_hat + o, n);
                  });
  for (int64_t j = 0; j < features; ++j) {
    accum_backward[j] += scratch[j];
    accum_backward[features + j] += T(batch);
  }
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      at::vec::map3<T>([](Vec<T> g, Vec<T> y, Vec<T> v) { return g - v * y; }, d + b * features,
                       d + b * features, y_hat + b * features, nu, features);
      at::vec::map2<T>([](Vec<T> g, Vec<T> s) { return g * s; }, d + b * features,
                       d + b * features, inv_psi, features);
    }
  });
}

struct Norm {
  int64_t op;
  double eps;
  Tensor first, second;  // (S, F)
  double momentum;
  Tensor accum;  // PowerNorm's forward statistics (3, F)
  int64_t slot(int64_t t) const { return std::min<int64_t>(t, first.size(0) - 1); }
};

Norm make_norm(int64_t op, double eps, const c10::optional<Tensor>& first,
               const c10::optional<Tensor>& second, double momentum,
               const c10::optional<Tensor>& accum, int64_t features) {
  TORCH_CHECK(op >= IDENTITY && op <= AFFINE, "unknown native normalization op ", op);
  Norm norm{op, eps, Tensor(), Tensor(), momentum, Tensor()};
  if (op == POWER_RUNNING || op == POWER_WARMUP) {
    TORCH_CHECK(accum.has_value() && accum->dim() == 2 && accum->size(0) == 3 &&
                    accum->size(1) == features && accum->is_contiguous(),
                "PowerNorm needs its (3, F) forward statistics");
    norm.accum = *accum;
  }
  if (op == BATCH || op == FIXED || op == POWER_RUNNING || op == AFFINE) {
    TORCH_CHECK(first.has_value() && second.has_value(), "op ", op, " needs two (S, F) tensors");
    norm.first = *first;
    norm.second = *second;
    TORCH_CHECK(norm.first.dim() == 2 && norm.first.size(1) == features &&
                    norm.second.sizes() == norm.first.sizes() && norm.first.is_contiguous() &&
                    norm.second.is_contiguous(),
                "statistics must be contiguous (S, ", features, ") tensors");
  }
  return norm;
}

// BATCH, forward of step t: column mean and 1/sqrt(var + eps) of y (B, F) into mean / invstd;
// updates the running mean and unbiased variance of the step's slot.
template <typename T>
void batch_columns(const Norm& norm, const T* y, int64_t batch, int64_t features, int64_t t,
                   T* mean, T* invstd) {
  TORCH_CHECK(batch > 1, "batch normalization in training needs at least 2 sequences");
  // one pass, shifted by the first row (p) against cancellation: mean = p + E[y - p],
  // var = E[(y - p)^2] - E[y - p]^2
  column_sums2<T>(batch, features, T(1) / T(batch), mean, invstd,
                  [&](int64_t o, int64_t j, int64_t n, Vec<T>& s1, Vec<T>& s2) {
                    const Vec<T> d = Vec<T>::loadu(y + o, n) - Vec<T>::loadu(y + j, n);
                    s1 = s1 + d;
                    s2 = s2 + d * d;
                  });
  const int64_t s = norm.slot(t);
  T* rm = norm.first.data_ptr<T>() + s * features;
  T* rv = norm.second.data_ptr<T>() + s * features;
  const T m = T(norm.momentum), keep = T(1) - T(norm.momentum);
  const T unbias = T(batch) / T(batch - 1), eps = T(norm.eps);
  for (int64_t j = 0; j < features; ++j) {
    const T shifted = mean[j];
    const T var = std::max(invstd[j] - shifted * shifted, T(0));  // the biased variance
    mean[j] = y[j] + shifted;
    rm[j] = keep * rm[j] + m * mean[j];
    rv[j] = keep * rv[j] + m * var * unbias;
    invstd[j] = T(1) / std::sqrt(var + eps);
  }
}

// PowerNorm, forward of step t: adds the step's statistics to the accumulators (sum y^2,
// sum y_hat^2, count) and, in the warmup, computes 1 / psi = 1 / sqrt(mean_B(y^2) + eps) into
// inv_psi (zeros into zero, the centre of the shared row op).
template <typename T>
void power_columns(const Norm& norm, const T* y, int64_t batch, int64_t features, T* zero,
                   T* inv_psi, T* scratch) {
  column_sums2<T>(batch, features, T(1), scratch, scratch + features,
                  [&](int64_t o, int64_t j, int64_t n, Vec<T>& s1, Vec<T>& s2) {
                    const Vec<T> v = Vec<T>::loadu(y + o, n);
                    s1 = s1 + v * v;
                  });
  T* acc = norm.accum.data_ptr<T>();
  const T* fixed = norm.op == POWER_RUNNING ? norm.second.data_ptr<T>() : nullptr;
  for (int64_t j = 0; j < features; ++j) {
    const T sq = scratch[j];
    const T s = fixed != nullptr ? fixed[j] : T(1) / std::sqrt(sq / T(batch) + T(norm.eps));
    if (inv_psi != nullptr) inv_psi[j] = s;
    if (zero != nullptr) zero[j] = T(0);
    acc[j] += sq;
    acc[features + j] += sq * s * s;
    acc[2 * features + j] += T(batch);
  }
}

// BATCH, backward of step t: dx = invstd * (d - mean_B(d) - y_hat * mean_B(d * y_hat)), in place
// of d (B, F).
template <typename T>
void batch_columns_backward(T* d, const T* y_hat, const T* invstd, int64_t batch,
                            int64_t features, T* m1, T* m2, bool centered = true) {
  column_sums2<T>(batch, features, T(1) / T(batch), m1, m2,
                  [&](int64_t o, int64_t j, int64_t n, Vec<T>& s1, Vec<T>& s2) {
                    const Vec<T> g = Vec<T>::loadu(d + o, n);
                    s1 = s1 + g;
                    s2 = s2 + g * Vec<T>::loadu(y_hat + o, n);
                  });
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t r = b * features;
      for (int64_t j = 0; j < features; j += Vec<T>::size()) {
        const int64_t n = std::min<int64_t>(Vec<T>::size(), features - j);
        const Vec<T> g = Vec<T>::loadu(d + r + j, n), y = Vec<T>::loadu(y_hat + r + j, n);
        const Vec<T> c1 = centered ? Vec<T>::loadu(m1 + j, n) : Vec<T>(T(0));
        ((g - c1 - y * Vec<T>::loadu(m2 + j, n)) * Vec<T>::loadu(invstd + j, n))
            .store(d + r + j, n);
      }
    }
  });
}

template <typename T>
void forward_impl(const Tensor& px, const Tensor& h0, const Tensor& c0, const Tensor& w_hh,
                  const Tensor& shift, const Tensor& gain_x, const Tensor& gain_h,
                  const Norm& nx, const Norm& nh, int64_t t0, bool keep,
                  const Tensor& w_packed, std::vector<Tensor>& result) {
  const int64_t steps = px.size(0), batch = px.size(1), features = px.size(2);
  const int64_t hidden = features / kBlocks;
  const StepMatmul recurrent{w_packed.defined() ? Tensor() : w_hh.t().contiguous(),
                             w_packed};  // z = h W_h^T
  auto opts = px.options();
  // kept for the backward: the recurrent term's z_hat, the gate activations, the cell states
  // and the normalizations' statistics (the input term's y_hat is recomputed from px). z_hat
  // and the activations are one (B, F) tensor per step: allocations that the allocator
  // recycles between calls, where one (T, B, F) block would be fresh pages every call.
  Tensor out = at::empty({steps, batch, hidden}, opts);
  std::vector<Tensor> z_hat, acts;
  Tensor c_all = at::empty({keep ? steps : 2, batch, hidden}, opts);
  auto stats_for = [&](const Norm& n) {
    if (keep && n.op == ROW_BLOCKS) return at::empty({steps, batch, 2 * kBlocks}, opts);
    if (keep && by_columns(n.op)) return at::empty({steps, 2, features}, opts);
    return at::empty({0}, opts);
  };
  Tensor stats_x = stats_for(nx), stats_h = stats_for(nh);
  Tensor h = h0.contiguous();
  Tensor c = c0.contiguous();
  const T* shift_p = shift.data_ptr<T>();
  const T* gx = gain_x.data_ptr<T>();
  const T* gh = gain_h.data_ptr<T>();
  // column vectors of BATCH (this step's mean and invstd)
  Tensor cols = at::empty({4, features}, opts);
  Tensor scratch = at::empty({2, features}, opts);
  for (int64_t t = 0; t < steps; ++t) {
    const Tensor px_t = px[t];
    const Tensor z = recurrent(h);
    const T *ax = nullptr, *bx = nullptr, *ah = nullptr, *bh = nullptr;
    T* col = cols.data_ptr<T>();
    if (nx.op == BATCH) {
      batch_columns<T>(nx, px_t.data_ptr<T>(), batch, features, t0 + t, col, col + features);
      ax = col;
      bx = col + features;
      if (keep) stats_x[t].copy_(cols.narrow(0, 0, 2));
    } else if (nx.op == FIXED || nx.op == AFFINE) {
      ax = nx.first.data_ptr<T>() + nx.slot(t0 + t) * features;
      bx = nx.second.data_ptr<T>() + nx.slot(t0 + t) * features;
    } else if (nx.op == POWER_RUNNING || nx.op == POWER_WARMUP) {
      power_columns<T>(nx, px_t.data_ptr<T>(), batch, features, col, col + features,
                       scratch.data_ptr<T>());
      ax = col;
      bx = col + features;
      if (keep) stats_x[t].copy_(cols.narrow(0, 0, 2));
    }
    if (nh.op == BATCH) {
      batch_columns<T>(nh, z.data_ptr<T>(), batch, features, t0 + t, col + 2 * features,
                       col + 3 * features);
      ah = col + 2 * features;
      bh = col + 3 * features;
      if (keep) stats_h[t].copy_(cols.narrow(0, 2, 2));
    } else if (nh.op == FIXED || nh.op == AFFINE) {
      ah = nh.first.data_ptr<T>() + nh.slot(t0 + t) * features;
      bh = nh.second.data_ptr<T>() + nh.slot(t0 + t) * features;
    } else if (nh.op == POWER_RUNNING || nh.op == POWER_WARMUP) {
      power_columns<T>(nh, z.data_ptr<T>(), batch, features, col + 2 * features,
                       col + 3 * features, scratch.data_ptr<T>());
      ah = col + 2 * features;
      bh = col + 3 * features;
      if (keep) stats_h[t].copy_(cols.narrow(0, 2, 2));
    }
    const T* px_p = px_t.data_ptr<T>();
    const T* z_p = z.data_ptr<T>();
    if (keep) {
      z_hat.push_back(at::empty({batch, features}, opts));
      acts.push_back(at::empty({batch, features}, opts));
    }
    T* zh_keep = keep ? z_hat.back().data_ptr<T>() : nullptr;
    T* acts_p = keep ? acts.back().data_ptr<T>() : nullptr;
    const T* c_prev_p = c.data_ptr<T>();
    Tensor c_next = c_all[keep ? t : (t % 2)];
    T* c_p = c_next.data_ptr<T>();
    T* h_p = out[t].data_ptr<T>();
    T* sx_p = (keep && nx.op == ROW_BLOCKS) ? stats_x[t].data_ptr<T>() : nullptr;
    T* sh_p = (keep && nh.op == ROW_BLOCKS) ? stats_h[t].data_ptr<T>() : nullptr;
    at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> buf(keep ? features : 2 * features);
      T* xr = buf.data();
      for (int64_t b = begin; b < end; ++b) {
        const int64_t r = b * features, q = b * hidden;
        T* zr = keep ? zh_keep + r : buf.data() + features;
        normalize_row<T>(nx.op, px_p + r, xr, features, nx.eps, ax, bx,
                         sx_p ? sx_p + b * 2 * kBlocks : nullptr);
        normalize_row<T>(nh.op, z_p + r, zr, features, nh.eps, ah, bh,
                         sh_p ? sh_p + b * 2 * kBlocks : nullptr);
        for (int64_t j = 0; j < hidden; j += Vec<T>::size()) {
          const int64_t n = std::min<int64_t>(Vec<T>::size(), hidden - j);
          Vec<T> g[kBlocks];
          for (int64_t k = 0; k < kBlocks; ++k) {
            const int64_t o = k * hidden + j;
            g[k] = Vec<T>::loadu(shift_p + o, n) +
                   Vec<T>::loadu(gx + o, n) * Vec<T>::loadu(xr + o, n) +
                   Vec<T>::loadu(gh + o, n) * Vec<T>::loadu(zr + o, n);
          }
          const auto cell = nq_native::lstm_cell<T>(g[0], g[1], g[2], g[3],
                                                   Vec<T>::loadu(c_prev_p + q + j, n));
          cell.h.store(h_p + q + j, n);
          cell.c.store(c_p + q + j, n);
          if (acts_p != nullptr) {
            T* ar = acts_p + r;
            cell.i.store(ar + j, n);
            cell.f.store(ar + hidden + j, n);
            cell.a.store(ar + 2 * hidden + j, n);
            cell.o.store(ar + 3 * hidden + j, n);
          }
        }
      }
    });
    h = out[t];
    c = c_next;
  }
  result = {out, h.clone(), c.clone()};
  if (keep) {
    result.insert(result.end(), {c_all, stats_x, stats_h});
    result.insert(result.end(), z_hat.begin(), z_hat.end());
    result.insert(result.end(), acts.begin(), acts.end());
  }
}

template <typename T>
void backward_impl(const Tensor& grad_out, Tensor dh, Tensor dc, const Tensor& px,
                   const Tensor& h0, const Tensor& c0, const Tensor& out, const Tensor& c_all,
                   const std::vector<Tensor>& acts, const std::vector<Tensor>& z_hat,
                   const Tensor& stats_x,
                   const Tensor& stats_h, const Tensor& w_hh, const Tensor& gain_x,
                   const Tensor& gain_h, int64_t op_x, const Tensor& first_x,
                   const Tensor& second_x, int64_t op_h, const Tensor& second_h, int64_t t0,
                   const Tensor& w_packed_t, const Tensor& nu_x, const Tensor& accum_x,
                   const Tensor& nu_h, const Tensor& accum_h, std::vector<Tensor>& result) {
  const int64_t steps = out.size(0), batch = out.size(1), hidden = out.size(2);
  const int64_t features = kBlocks * hidden;
  auto opts = out.options();
  Tensor grad_px = at::empty({steps, batch, features}, opts);
  // dL/dW_h = sum_t grad_z_t^T h_{t-1}: one GEMM per chunk of steps (a (chunk, B, F) buffer
  // reused, rather than a (T, B, F) block)
  const int64_t chunk = std::min<int64_t>(steps, 16);
  Tensor grad_z = at::empty({chunk, batch, features}, opts);
  Tensor grad_w = at::zeros({features, hidden}, opts);
  const StepMatmul back{w_packed_t.defined() ? Tensor() : w_hh.contiguous(),
                        w_packed_t};  // dh = grad_z W_h
  Tensor means = at::empty({2, features}, opts);  // BATCH's column means
  // the input term's y_hat of this step, for the ops finished by columns
  Tensor x_hat_step = at::empty({by_columns(op_x) ? batch : 0, features}, opts);
  Tensor scratch = at::empty({2, features}, opts);
  // per-thread sums of dg, dg * x_hat, dg * z_hat over all steps and rows: the gradients of
  // shift, gain_x and gain_h (reduced once at the end)
  const int64_t threads = at::get_num_threads();
  Tensor partial = at::zeros({threads, 3, features}, opts);
  T* partial_p = partial.data_ptr<T>();
  const T* gx = gain_x.data_ptr<T>();
  const T* gh = gain_h.data_ptr<T>();
  const bool has_grad_out = grad_out.defined();
  const int64_t slots_x = second_x.defined() ? second_x.size(0) : 1;
  const int64_t slots_h = second_h.defined() ? second_h.size(0) : 1;
  for (int64_t t = steps - 1; t >= 0; --t) {
    const T* go_p = has_grad_out ? grad_out[t].data_ptr<T>() : nullptr;
    const T* dh_p = dh.data_ptr<T>();
    T* dc_p = dc.data_ptr<T>();
    const T* a_p = acts[t].data_ptr<T>();
    const T* c_p = c_all[t].data_ptr<T>();
    const T* cp_p = (t > 0 ? c_all[t - 1] : c0).data_ptr<T>();
    const T* px_p = px[t].data_ptr<T>();
    T* xstep_p = by_columns(op_x) ? x_hat_step.data_ptr<T>() : nullptr;
    const T* zh_p = z_hat[t].data_ptr<T>();
    T* gpx_p = grad_px[t].data_ptr<T>();
    const int64_t slot = t % chunk;
    T* gz_p = grad_z[slot].data_ptr<T>();
    const T* sx_p = op_x == ROW_BLOCKS ? stats_x[t].data_ptr<T>() : nullptr;
    const T* colx_a = by_columns(op_x) ? stats_x[t][0].data_ptr<T>()
                      : op_x == FIXED ? first_x[std::min(t0 + t, slots_x - 1)].data_ptr<T>()
                                      : nullptr;
    const T* colx_b = by_columns(op_x) ? stats_x[t][1].data_ptr<T>()
                      : op_x == FIXED ? second_x[std::min(t0 + t, slots_x - 1)].data_ptr<T>()
                                      : nullptr;
    const T* sh_p = op_h == ROW_BLOCKS ? stats_h[t].data_ptr<T>() : nullptr;
    const T* fx_p = op_x == FIXED ? second_x[std::min(t0 + t, slots_x - 1)].data_ptr<T>() : nullptr;
    const T* fh_p = op_h == FIXED ? second_h[std::min(t0 + t, slots_h - 1)].data_ptr<T>() : nullptr;
    at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> buf(3 * features);
      T* dgr = buf.data();
      T* d = dgr + features;
      T* xr = dgr + 2 * features;
      T* acc = partial_p + at::get_thread_num() * 3 * features;
      for (int64_t b = begin; b < end; ++b) {
        const int64_t r = b * features, q = b * hidden;
        const T* ar = a_p + r;
        for (int64_t j = 0; j < hidden; j += Vec<T>::size()) {
          const int64_t n = std::min<int64_t>(Vec<T>::size(), hidden - j);
          const Vec<T> one(T(1));
          Vec<T> dhv = Vec<T>::loadu(dh_p + q + j, n);
          if (go_p != nullptr) dhv = dhv + Vec<T>::loadu(go_p + q + j, n);
          const Vec<T> i = Vec<T>::loadu(ar + j, n), f = Vec<T>::loadu(ar + hidden + j, n);
          const Vec<T> a = Vec<T>::loadu(ar + 2 * hidden + j, n);
          const Vec<T> o = Vec<T>::loadu(ar + 3 * hidden + j, n);
          const Vec<T> tc = tanh_fast(Vec<T>::loadu(c_p + q + j, n));
          const Vec<T> dcv = Vec<T>::loadu(dc_p + q + j, n) + dhv * o * (one - tc * tc);
          (dcv * a * i * (one - i)).store(dgr + j, n);
          (dcv * Vec<T>::loadu(cp_p + q + j, n) * f * (one - f)).store(dgr + hidden + j, n);
          (dcv * i * (one - a * a)).store(dgr + 2 * hidden + j, n);
          (dhv * tc * o * (one - o)).store(dgr + 3 * hidden + j, n);
          (dcv * f).store(dc_p + q + j, n);
        }
        reapply_row<T>(op_x, px_p + r, xr, features, colx_a, colx_b,
                       sx_p ? sx_p + b * 2 * kBlocks : nullptr);
        if (xstep_p != nullptr) std::copy(xr, xr + features, xstep_p + r);
        const T* zr = zh_p + r;
        // the gradients of shift and the gains
        for (int64_t j = 0; j < features; j += Vec<T>::size()) {
          const int64_t n = std::min<int64_t>(Vec<T>::size(), features - j);
          const Vec<T> g = Vec<T>::loadu(dgr + j, n);
          (Vec<T>::loadu(acc + j, n) + g).store(acc + j, n);
          (Vec<T>::loadu(acc + features + j, n) + g * Vec<T>::loadu(xr + j, n))
              .store(acc + features + j, n);
          (Vec<T>::loadu(acc + 2 * features + j, n) + g * Vec<T>::loadu(zr + j, n))
              .store(acc + 2 * features + j, n);
        }
        // through the gains into the two normalizations (BATCH: finished by columns below)
        at::vec::map2<T>([](Vec<T> g, Vec<T> s) { return g * s; }, d, dgr, gx, features);
        if (by_columns(op_x))
          std::copy(d, d + features, gpx_p + r);
        else
          normalize_row_backward<T>(op_x, d, xr, gpx_p + r, features, fx_p,
                                    sx_p ? sx_p + b * 2 * kBlocks : nullptr);
        at::vec::map2<T>([](Vec<T> g, Vec<T> s) { return g * s; }, d, dgr, gh, features);
        if (by_columns(op_h))
          std::copy(d, d + features, gz_p + r);
        else
          normalize_row_backward<T>(op_h, d, zr, gz_p + r, features, fh_p,
                                    sh_p ? sh_p + b * 2 * kBlocks : nullptr);
      }
    });
    T* m_p = means.data_ptr<T>();
    auto finish_columns = [&](int64_t op, T* d, const T* y_hat, const Tensor& stats,
                              const Tensor& nu, const Tensor& accum) {
      if (op == BATCH || op == POWER_WARMUP)
        batch_columns_backward<T>(d, y_hat, stats[t][1].data_ptr<T>(), batch, features, m_p,
                                  m_p + features, /*centered=*/op == BATCH);
      else if (op == POWER_RUNNING)
        power_running_backward<T>(d, y_hat, stats[t][1].data_ptr<T>(), nu.data_ptr<T>(),
                                  accum.data_ptr<T>(), batch, features, scratch.data_ptr<T>());
    };
    finish_columns(op_x, gpx_p, xstep_p, stats_x, nu_x, accum_x);
    finish_columns(op_h, gz_p, zh_p, stats_h, nu_h, accum_h);
    dh = back(grad_z[slot]);
    if (slot == 0) {  // the chunk of steps t .. t + count - 1 (slots 0 .. count - 1) is done
      const int64_t count = std::min(chunk, steps - t);
      const Tensor gz = grad_z.narrow(0, 0, count).reshape({-1, features});
      const Tensor hp = t > 0 ? out.narrow(0, t - 1, count)
                              : at::cat({h0.unsqueeze(0), out.narrow(0, 0, count - 1)});
      grad_w.addmm_(gz.t(), hp.reshape({-1, hidden}));
    }
  }
  const Tensor sums = partial.sum(0);
  result = {grad_px, dh, dc, grad_w, sums[0], sums[1], sums[2]};
}

Tensor gain_or_ones(const c10::optional<Tensor>& gain, const Tensor& like, int64_t features) {
  if (gain.has_value() && gain->defined()) return gain->contiguous();
  return at::ones({features}, like.options());
}

}  // namespace

std::vector<Tensor> recurrence_forward(
    Tensor px, Tensor h0, Tensor c0, Tensor w_hh, Tensor shift,
    c10::optional<Tensor> gain_x, c10::optional<Tensor> gain_h, const NormTerm& x,
    const NormTerm& h, int64_t t0, bool keep, c10::optional<Tensor> w_packed) {
  TORCH_CHECK(px.dim() == 3 && px.size(2) % kBlocks == 0, "px must be (T, B, 4H)");
  TORCH_CHECK(px.size(0) > 0, "the recurrence needs at least one step");
  const int64_t features = px.size(2);
  px = px.contiguous();
  const Norm nx = make_norm(x.op, x.eps, x.first, x.second, x.momentum, x.accum_forward,
                            features);
  const Norm nh = make_norm(h.op, h.eps, h.first, h.second, h.momentum, h.accum_forward,
                            features);
  const Tensor gx = gain_or_ones(gain_x, px, features), gh = gain_or_ones(gain_h, px, features);
  std::vector<Tensor> result;
  AT_DISPATCH_FLOATING_TYPES(px.scalar_type(), "nq_recurrence_forward", [&] {
    forward_impl<scalar_t>(px, h0, c0, w_hh.contiguous(), shift.contiguous(), gx, gh, nx, nh,
                           t0, keep, w_packed.has_value() ? *w_packed : Tensor(), result);
  });
  return result;
}

std::vector<Tensor> recurrence_backward(
    c10::optional<Tensor> grad_out, c10::optional<Tensor> grad_h, c10::optional<Tensor> grad_c,
    Tensor px, Tensor h0, Tensor c0, Tensor out, Tensor c_all, std::vector<Tensor> acts,
    std::vector<Tensor> z_hat, Tensor stats_x, Tensor stats_h, Tensor w_hh,
    c10::optional<Tensor> gain_x, c10::optional<Tensor> gain_h, const NormTerm& x,
    const NormTerm& h, int64_t t0, c10::optional<Tensor> w_packed_t) {
  const int64_t op_x = x.op, op_h = h.op;
  const int64_t batch = out.size(1), hidden = out.size(2), features = kBlocks * hidden;
  TORCH_CHECK(op_x != AFFINE && op_h != AFFINE, "the AFFINE op is for inference only");
  Tensor go = grad_out.has_value() && grad_out->defined() ? grad_out->contiguous() : Tensor();
  Tensor dh = grad_h.has_value() && grad_h->defined() ? grad_h->contiguous().clone()
                                                      : at::zeros({batch, hidden}, out.options());
  Tensor dc = grad_c.has_value() && grad_c->defined() ? grad_c->contiguous().clone()
                                                      : at::zeros({batch, hidden}, out.options());
  const Tensor gx = gain_or_ones(gain_x, out, features), gh = gain_or_ones(gain_h, out, features);
  auto opt = [](const c10::optional<Tensor>& t) {
    return t.has_value() && t->defined() ? t->contiguous() : Tensor();
  };
  std::vector<Tensor> result;
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "nq_recurrence_backward", [&] {
    backward_impl<scalar_t>(go, dh, dc, px.contiguous(), h0.contiguous(), c0.contiguous(), out,
                            c_all, acts, z_hat, stats_x, stats_h, w_hh, gx, gh, op_x,
                            opt(x.first), opt(x.second), op_h, opt(h.second), t0,
                            opt(w_packed_t), opt(x.nu), opt(x.accum_backward), opt(h.nu),
                            opt(h.accum_backward), result);
  });
  return result;
}
