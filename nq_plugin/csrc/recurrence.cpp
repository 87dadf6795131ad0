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
//               accum_backward (2, F); nothing in a step needs the other rows, so each thread
//               sums its own rows' statistics over the loop, added to accum once at the end
//               (no barrier a step)
//   AFFINE      y_hat = y * first[slot] + second[slot] (a packed model's folded batch norm /
//               PowerNorm, nq_plugin/packed)
//   POWER_WARMUP   PowerNorm's warmup: y_hat = y / sqrt(mean_B(y^2) + eps) with the exact
//               backward, the forward statistics added to accum
// with slot = min(t, S - 1) for S rows of statistics. The normalizations of both terms, the gate
// activations and the cell update run in one pass per batch row while the row is in cache,
// with vectorized exp / tanh (at::vec); the backward walks the steps once the same way and
// forms dL/dW_h with one GEMM per chunk of steps. The batch rows are split between the threads
// for the whole loop (Team, below): no fork and join per step.
// The loop's elementwise work runs in at::vec's AVX-512 code where the module is built for an
// AVX-512 CPU (-march=native). The module's other sources keep AVX2's 8-float vectors
// (nq_plugin/native.py; the packed kernels' blocks are 8 rows), and vec_math.h's helpers take a
// namespace per capability, so the two widths never share a symbol. On an Intel Xeon with
// AVX-512, three alternated A/B pairs: the sequential-MNIST training step 2-11 % faster, the
// word size's batch-normalizing ops faster, the char size unchanged (benchmarks/README.md,
// 2026-12-07, night). AVX-512 F, BW, DQ and VL: what at::vec's AVX-512 code uses.
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && \
    defined(__AVX512VL__) && defined(CPU_CAPABILITY_AVX2) && !defined(NQ_AVX2_ONLY)
#undef CPU_CAPABILITY
#undef CPU_CAPABILITY_AVX2
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#endif
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <exception>
#include <limits>
#include <mutex>
#include <type_traits>
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
// by-columns ops whose step needs the whole batch's sums (the team meets at a barrier):
// POWER_RUNNING's scale is fixed, so a thread only adds its own rows' sums to its accumulators
inline bool whole_batch(int64_t op) { return op == BATCH || op == POWER_WARMUP; }
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

// Whether oneDNN's products give the right result here: outside a parallel region oneDNN
// splits a product between omp_get_max_threads() threads, and where its region gets fewer --
// OpenMP's thread limit (OMP_THREAD_LIMIT) below them, or dynamic adjustment (OMP_DYNAMIC) on
// -- the part of the missing ones is never computed (torch 2.13: a 6 x 20 . 20 x 80 product
// off by 69 % of its scale with a limit of 1 and 2 threads). Inside a region (a team's
// thread) it runs on that one thread, right. nq_plugin/nn/step_products.py asks the same.
inline bool onednn_right_here() {
  return omp_in_parallel() ||
         (!omp_get_dynamic() && omp_get_thread_limit() >= omp_get_max_threads());
}

// x W^T through oneDNN with W reordered once into its blocked layout (from
// mkldnn::_reorder_linear_weight; ~1.35x faster for these skinny GEMMs on an AMD EPYC Zen 4)
inline Tensor onednn_product(const Tensor& x, const Tensor& w_packed) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
  std::vector<c10::IValue> stack{x, w_packed, c10::IValue(), std::string("none"),
                                 c10::List<c10::optional<at::Scalar>>(), c10::IValue()};
  op.callBoxed(&stack);
  return stack[0].toTensor();
}

// The threads of the loop (the "team"): the batch rows are split between torch's intra-op
// threads once for the whole loop, and each thread runs its own rows' elementwise work, so a
// step needs no fork and join. The step GEMMs (h_{t-1} W_h^T forward, grad_z W_h backward,
// single-threaded inside the team) go one of two ways, as the caller planned them (StepWeights;
// nq_plugin/nn/step_products.py, step_weights: by columns from H=192 on):
// - "shared": each thread forms its output columns of the product for the whole batch, so it
//   reads only its part of W_h at a step (alone, 10 rows of all 1200 columns ran 1.4x slower
//   than 20 rows of 600; AMD EPYC Zen 3), through its part of W_h (oneDNN's layout or plain);
//   the team meets at a barrier after each product and after each step's elementwise work,
//   and dL/dW_h is each thread's rows of it, one GEMM per chunk of steps over the whole batch;
// - else each thread multiplies its own rows by the whole W_h (oneDNN's layout or plain),
//   with no barrier, and dL/dW_h is each thread's partial over its rows, summed once
//   at the end.
// The ops that normalize by columns (BATCH, POWER_*) meet at one more barrier per step, where
// each thread adds the others' partial column sums (double-buffered by step parity).
struct Rows {
  int64_t begin, end;
  int64_t size() const { return end - begin; }
};

inline Rows rows_of(int64_t part, int64_t parts, int64_t batch) {
  const int64_t per = batch / parts, extra = batch % parts;
  const int64_t begin = part * per + std::min(part, extra);
  return {begin, begin + per + (part < extra ? 1 : 0)};
}

// torch's intra-op threads, at most one per batch row
inline int64_t team_size(int64_t batch) {
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), batch));
}

// Runs body(part, parts) on each thread of one OpenMP region of at most `size` threads (fewer
// where the region is nested). The work goes in guarded phases: an exception in one thread
// skips every thread's later phases while all still meet each barrier, and the first exception
// is rethrown after the region.
class Team {
 public:
  explicit Team(int64_t size) : size_(size) {}
  template <typename F>
  void run(const F& body) {
    if (size_ == 1) {
      body(int64_t(0), int64_t(1));
    } else {
#pragma omp parallel num_threads(static_cast<int>(size_))
      body(int64_t(omp_get_thread_num()), int64_t(omp_get_num_threads()));
    }
    if (error_) std::rethrow_exception(error_);
  }
  template <typename F>
  void guarded(const F& phase) {
    if (failed_.load(std::memory_order_acquire)) return;
    try {
      phase();
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
      failed_.store(true, std::memory_order_release);
    }
  }
  static void barrier(int64_t parts) {
    if (parts > 1) {
#pragma omp barrier
    }
  }

 private:
  int64_t size_;
  std::atomic<bool> failed_{false};
  std::mutex mutex_;
  std::exception_ptr error_;
};

// (rows, F) at ptr as a tensor for the step GEMMs (no copy)
inline Tensor rows_tensor(const void* ptr, int64_t rows, int64_t features,
                          const at::TensorOptions& opts) {
  return at::from_blob(const_cast<void*>(ptr), {rows, features}, opts);
}

// A step product x W^T as planned (StepWeights): the whole of it for some rows of x, or one
// thread's output columns for all of them. ``fallback`` is W^T (K, N), a view, for the columns
// of a region with fewer threads than planned (nested) and for a plan of parts run by a team of
// one (the number of torch's threads changed since).
class StepProduct {
 public:
  StepProduct(const StepWeights& weights, Tensor fallback, int64_t team)
      : w_(weights), fallback_(std::move(fallback)),
        split_(weights.parts.size() > 1 && team > 1) {
    TORCH_CHECK(!w_.parts.empty(), "a step product needs its weights (StepWeights.parts)");
  }
  // whether the team splits the product by output columns (else by the batch rows)
  bool split_columns() const { return split_; }
  // x (rows, K) times the whole W^T: a new (rows, N)
  Tensor whole(const Tensor& x) const {
    if (w_.parts.size() != 1 || !fits(x)) return at::mm(x, fallback_);
    switch (w_.layout) {
      case StepLayout::kOneDnn:
        return onednn_product(x, w_.parts[0]);
      case StepLayout::kPanels: {
        Tensor out = at::empty({x.size(0), fallback_.size(1)}, x.options());
        step_gemm_out(out, x, w_.parts[0]);
        return out;
      }
      default:
        return at::mm(x, w_.parts[0]);
    }
  }
  // thread p's output columns c of x (B, K) times W^T, into out (B, N_c), a view of the whole
  // batch's product
  void columns(Tensor out, const Tensor& x, int64_t p, int64_t nt, const Rows& c) const {
    if (nt != static_cast<int64_t>(w_.parts.size()) || !fits(x)) {
      at::mm_out(out, x, fallback_.narrow(1, c.begin, c.size()));
      return;
    }
    switch (w_.layout) {
      case StepLayout::kOneDnn:
        out.copy_(onednn_product(x, w_.parts[p]));
        break;
      case StepLayout::kPanels:
        step_gemm_out(out, x, w_.parts[p]);
        break;
      default:
        at::mm_out(out, x, w_.parts[p]);
    }
  }

 private:
  // the step GEMM's panels are float32 (a float64 loop's plan has plain parts; this keeps a
  // mismatched plan exact); oneDNN's layout only where oneDNN computes right (else through
  // the fallback, W^T as it lies)
  bool fits(const Tensor& x) const {
    if (w_.layout == StepLayout::kOneDnn) return onednn_right_here();
    return w_.layout != StepLayout::kPanels || x.scalar_type() == at::kFloat;
  }

  const StepWeights& w_;
  Tensor fallback_;
  bool split_;
};

// Two column sums over `rows` rows of (rows, F) data: fun(offset, column, n, s1, s2) adds a
// vector's terms; out1 / out2 get the sums. Over blocks of kSumVectors vectors of columns,
// each block's sums held in registers down all the rows (summed in row order, as row by row;
// with the sums in memory, each vector's two loads and two stores of them bounded the pass)
template <typename T, typename F2>
void column_sums2(int64_t rows, int64_t features, T* out1, T* out2, const F2& fun) {
  constexpr int64_t kSumVectors = 4;
  constexpr int64_t kLanes = Vec<T>::size();
  constexpr int64_t kWidth = kSumVectors * kLanes;
  int64_t j0 = 0;
  for (; j0 + kWidth <= features; j0 += kWidth) {
    Vec<T> s1[kSumVectors], s2[kSumVectors];
    for (int64_t u = 0; u < kSumVectors; ++u) s1[u] = s2[u] = Vec<T>(T(0));
    for (int64_t b = 0; b < rows; ++b) {
      const int64_t o = b * features + j0;
      for (int64_t u = 0; u < kSumVectors; ++u)
        fun(o + u * kLanes, j0 + u * kLanes, kLanes, s1[u], s2[u]);
    }
    for (int64_t u = 0; u < kSumVectors; ++u) {
      s1[u].store(out1 + j0 + u * kLanes);
      s2[u].store(out2 + j0 + u * kLanes);
    }
  }
  for (; j0 < features; j0 += kLanes) {  // the last columns, a vector at a time
    const int64_t n = std::min<int64_t>(kLanes, features - j0);
    Vec<T> s1(T(0)), s2(T(0));
    for (int64_t b = 0; b < rows; ++b) fun(b * features + j0, j0, n, s1, s2);
    s1.store(out1 + j0, n);
    s2.store(out2 + j0, n);
  }
}

// out[j] = sum over the team's parts of part p's row `row` (parts at `stride` apart)
template <typename T>
void add_parts(const T* partials, int64_t stride, int64_t parts, int64_t row,
               int64_t features, T* out) {
  std::copy(partials + row * features, partials + (row + 1) * features, out);
  for (int64_t p = 1; p < parts; ++p) {
    const T* src = partials + p * stride + row * features;
    at::vec::map2<T>([](Vec<T> a, Vec<T> b) { return a + b; }, out, out, src, features);
  }
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

// Forward column statistics of one term (BATCH, POWER_*), step t: each thread's partial sums
// over its rows, then, after the barrier, the whole batch's columns from all parts.
// A part's three rows: BATCH the part's first row (p, the shift against cancellation),
// sum (y - p) and sum (y - p)^2; POWER_* only sum y^2 in the third.
constexpr int64_t kPartRows = 3;

template <typename T>
void forward_partials(int64_t op, const T* y, int64_t rows, int64_t features, T* part) {
  if (op == BATCH) {
    const T* p = y;
    std::copy(p, p + features, part);
    column_sums2<T>(rows, features, part + features, part + 2 * features,
                    [&](int64_t o, int64_t j, int64_t n, Vec<T>& s1, Vec<T>& s2) {
                      const Vec<T> d = Vec<T>::loadu(y + o, n) - Vec<T>::loadu(p + j, n);
                      s1 = s1 + d;
                      s2 = s2 + d * d;
                    });
  } else {
    column_sums2<T>(rows, features, part + features, part + 2 * features,
                    [&](int64_t o, int64_t j, int64_t n, Vec<T>& s1, Vec<T>& s2) {
                      const Vec<T> v = Vec<T>::loadu(y + o, n);
                      s2 = s2 + v * v;
                    });
  }
}

// The whole batch's columns of step t from the parts' sums: BATCH mean / invstd (the parts'
// means and squared deviations combined as Chan et al.'s pairwise variance), and, where
// `update` (one thread), the running mean and unbiased variance of the step's slot;
// POWER_WARMUP zero / 1 / psi, and, where `update`, the step's statistics added to the
// accumulators (POWER_RUNNING: running_power_columns, below).
template <typename T>
void forward_columns(const Norm& norm, const T* partials, int64_t stride, int64_t parts,
                     int64_t batch, int64_t features, int64_t t, T* a, T* b, bool update) {
  if (norm.op == BATCH) {
    const T total = T(batch);
    std::fill(a, a + features, T(0));
    for (int64_t p = 0; p < parts; ++p) {  // a = the mean
      const T n = T(rows_of(p, parts, batch).size());
      const T* part = partials + p * stride;
      for (int64_t j = 0; j < features; ++j)
        a[j] += n * part[j] + part[features + j];  // n (shift + mean of the shifted)
    }
    for (int64_t j = 0; j < features; ++j) a[j] /= total;
    std::fill(b, b + features, T(0));
    for (int64_t p = 0; p < parts; ++p) {  // b = the sum of squared deviations
      const T n = T(rows_of(p, parts, batch).size());
      const T* part = partials + p * stride;
      for (int64_t j = 0; j < features; ++j) {
        const T s1 = part[features + j], mean_p = part[j] + s1 / n, d = mean_p - a[j];
        b[j] += part[2 * features + j] - s1 * s1 / n + n * d * d;
      }
    }
    const int64_t s = norm.slot(t);
    T* rm = norm.first.data_ptr<T>() + s * features;
    T* rv = norm.second.data_ptr<T>() + s * features;
    const T m = T(norm.momentum), keep = T(1) - T(norm.momentum);
    const T unbias = total / T(batch - 1), eps = T(norm.eps);
    for (int64_t j = 0; j < features; ++j) {
      const T var = std::max(b[j] / total, T(0));  // the biased variance
      if (update) {
        rm[j] = keep * rm[j] + m * a[j];
        rv[j] = keep * rv[j] + m * var * unbias;
      }
      b[j] = T(1) / std::sqrt(var + eps);
    }
  } else {  // POWER_WARMUP
    TORCH_CHECK(norm.op == POWER_WARMUP, "forward_columns: op ", norm.op);
    add_parts(partials, stride, parts, 2, features, b);  // sum y^2
    T* acc = norm.accum.data_ptr<T>();
    for (int64_t j = 0; j < features; ++j) {
      const T sq = b[j];
      const T s = T(1) / std::sqrt(sq / T(batch) + T(norm.eps));
      if (update) {
        acc[j] += sq;
        acc[features + j] += sq * s * s;
        acc[2 * features + j] += T(batch);
      }
      a[j] = T(0);
      b[j] = s;
    }
  }
}

// POWER_RUNNING's columns of step t from one thread's own sums (no barrier: its scale is fixed):
// a = 0, b = 1 / psi, and the thread's rows' statistics added to its own accumulators ``acc``
// (3, F; summed into the normalization's after the loop): sum y^2, sum y_hat^2, the count.
template <typename T>
void running_power_columns(const Norm& norm, const T* part, int64_t rows, int64_t features,
                           T* a, T* b, T* acc) {
  const T* sq = part + 2 * features;  // the thread's rows' sum y^2
  const T* fixed = norm.second.data_ptr<T>();
  for (int64_t j = 0; j < features; ++j) {
    const T s = fixed[j];
    acc[j] += sq[j];
    acc[features + j] += sq[j] * s * s;
    acc[2 * features + j] += T(rows);
    a[j] = T(0);
    b[j] = s;
  }
}

// The backward of a by-columns term over a thread's rows, in place of d, from the whole
// batch's sums (sums: sum d, sum d * y_hat): BATCH / POWER_WARMUP
// dx = invstd (d - mean_B(d) [BATCH only] - y_hat mean_B(d y_hat)); POWER_RUNNING
// dy = (d - nu y_hat) / psi, with sums a thread's own rows' (no barrier: its scale is fixed),
// (sum d y_hat, the rows) added to its own accumulators ``accum_backward`` (2, F).
template <typename T>
void backward_columns(int64_t op, T* d, const T* y_hat, const T* invstd, const T* sums,
                      const T* nu, T* accum_backward, int64_t rows, int64_t batch,
                      int64_t features, T* means) {
  if (op == POWER_RUNNING) {
    for (int64_t j = 0; j < features; ++j) {
      accum_backward[j] += sums[features + j];
      accum_backward[features + j] += T(rows);
    }
    for (int64_t b = 0; b < rows; ++b) {
      T* dr = d + b * features;
      const T* yr = y_hat + b * features;
      at::vec::map3<T>([](Vec<T> g, Vec<T> y, Vec<T> v) { return g - v * y; }, dr, dr, yr, nu,
                       features);
      at::vec::map2<T>([](Vec<T> g, Vec<T> s) { return g * s; }, dr, dr, invstd, features);
    }
    return;
  }
  const bool centered = op == BATCH;
  const T inv = T(1) / T(batch);
  for (int64_t j = 0; j < features; ++j) {
    means[j] = centered ? sums[j] * inv : T(0);
    means[features + j] = sums[features + j] * inv;
  }
  for (int64_t b = 0; b < rows; ++b) {
    const int64_t r = b * features;
    for (int64_t j = 0; j < features; j += Vec<T>::size()) {
      const int64_t n = std::min<int64_t>(Vec<T>::size(), features - j);
      const Vec<T> g = Vec<T>::loadu(d + r + j, n), y = Vec<T>::loadu(y_hat + r + j, n);
      ((g - Vec<T>::loadu(means + j, n) - y * Vec<T>::loadu(means + features + j, n)) *
       Vec<T>::loadu(invstd + j, n))
          .store(d + r + j, n);
    }
  }
}

// the steps whose z_hat and activations one saved block holds (one allocation per block)
constexpr int64_t kSaveChunk = 16;

// Fused inputs wider than this go through the step GEMM (float32, where the build has it):
// narrower ones (sequential MNIST's one pixel) take one pass over F per input column
constexpr int64_t kPassColumns = 4;

}  // namespace

// Each row of x (rows, K)'s one column if every row is one-hot (one entry 1, the others 0),
// else an undefined tensor: the char models' input (nq_lstm_lm --one-hot-input), whose projection
// px = x W_x^T is then row k of W_x^T, bit for bit (1 w = w, 0 w = 0 for finite w).
Tensor one_hot_columns(const Tensor& x) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "one_hot_columns takes a contiguous (rows, K) "
              "tensor, got ", x.sizes());
  Tensor index = at::empty({x.size(0)}, x.options().dtype(at::kLong));
  int64_t* out = index.data_ptr<int64_t>();
  const int64_t rows = x.size(0), columns = x.size(1);
  bool one_hot = columns > 0;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "one_hot_columns", [&] {
    const scalar_t* p = x.data_ptr<scalar_t>();
    for (int64_t b = 0; b < rows && one_hot; ++b) {
      const scalar_t* row = p + b * columns;
      int64_t hot = -1;
      for (int64_t k = 0; k < columns; ++k) {
        if (row[k] == scalar_t(0)) continue;
        if (row[k] != scalar_t(1) || hot >= 0) {
          one_hot = false;
          break;
        }
        hot = k;
      }
      one_hot = one_hot && hot >= 0;
      out[b] = hot;
    }
  });
  return one_hot ? index : Tensor();
}

namespace {

// The input term px = x W_x^T: given for all steps ((T, B, F), one GEMM outside), or, for
// narrow inputs (the fused projection: K columns; nq_plugin/nn/recurrence.py, fuses_input:
// sequential MNIST's K = 1, the char models' 50 symbols), computed in the loop from x (T, B, K)
// and W_x^T (K, F) for a thread's rows at a time, so that no (T, B, F) block is written or read
// (forward), nor its gradient (backward: dL/dW_x and dL/dx are summed in the loop). Up to
// kPassColumns columns by one pass over F per column; wider, in float32, by the step GEMM from
// W_x's panels (px, and dL/dx = dL/dpx W_x), and dL/dW_x by one GEMM per chunk of steps, as
// dL/dW_h (at the char size: the (T, B, 4H) block and its gradient are 52 MB each, written,
// read, and read twice more by the GEMMs of the projection's backward outside the loop); and
// where every row of x is one-hot (the char models' input; one_hot_columns), px is a copy of
// W_x^T's row k and dL/dW_x^T's row k the sum of its rows' dL/dpx: no product at all (dL/dx,
// where asked for, still the step GEMM's).
template <typename T>
struct InputTerm {
  const T* data;  // px (T, B, F), or x (T, B, K) where fused
  const T* w_t;   // W_x^T (K, F) where fused, else nullptr
  int64_t batch, features, columns;
  // where the step GEMM computes the fused products: the panels of W_x (px = x W_x^T) and of
  // W_x^T (dL/dx = dL/dpx W_x); else undefined
  Tensor panels_x, panels_x_t;
  // where x is one-hot (one_hot_columns, (T B)): each row's column k, whose px is row k of
  // W_x^T (a copy, no product) and whose dL/dpx is added to row k of dL/dW_x^T; else nullptr
  Tensor hot;
  const int64_t* hot_p = nullptr;
  bool fused() const { return w_t != nullptr; }
  bool by_gemm() const { return panels_x.defined(); }
  // the step GEMM's panels for a fused input of float32 wider than kPassColumns, and x's
  // columns where it is one-hot
  void plan(const Tensor& x, const Tensor& w_x_t) {
    if constexpr (std::is_same_v<T, float>) {
      if (fused() && columns > kPassColumns && step_gemm_supported()) {
        panels_x = step_gemm_pack(w_x_t.t());
        panels_x_t = step_gemm_pack(w_x_t);
        hot = one_hot_columns(x.view({-1, columns}));
        if (hot.defined()) hot_p = hot.data_ptr<int64_t>();
      }
    }
  }
  // (rows, cols) at p as a tensor of T (rows_tensor, no copy)
  static Tensor view(const T* p, int64_t rows, int64_t cols) {
    return rows_tensor(p, rows, cols,
                       at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
  }
  // px of rows [begin, begin + rows) of step t, (rows, F): in px, or computed into buf
  const T* rows(int64_t t, int64_t begin, int64_t rows, T* buf) const {
    if (!fused()) return data + (t * batch + begin) * features;
    const T* x = data + (t * batch + begin) * columns;
    if (hot_p != nullptr) {
      for (int64_t b = 0; b < rows; ++b) {
        const T* w = w_t + hot_p[t * batch + begin + b] * features;
        std::copy(w, w + features, buf + b * features);
      }
      return buf;
    }
    if (by_gemm()) {
      Tensor out = view(buf, rows, features);
      step_gemm_out(out, view(x, rows, columns), panels_x);
      return buf;
    }
    for (int64_t b = 0; b < rows; ++b) {
      T* o = buf + b * features;
      const T* xb = x + b * columns;
      const Vec<T> x0(xb[0]);
      at::vec::map<T>([x0](Vec<T> w) { return w * x0; }, o, w_t, features);
      for (int64_t k = 1; k < columns; ++k) {
        const Vec<T> xk(xb[k]);
        at::vec::map2<T>([xk](Vec<T> a, Vec<T> w) { return a + w * xk; }, o, o,
                         w_t + k * features, features);
      }
    }
    return buf;
  }
  // whether the backward keeps dL/dpx and x for a chunk of steps (backward_gemm)
  bool chunked() const { return by_gemm() && hot_p == nullptr; }
  // by_gemm(): the fused projection's backward for rows [begin, begin + rows) of step t from
  // their dL/dpx (rows, F): where grad_x is given, dL/dx = dpx W_x (the step GEMM); one-hot
  // rows add their dL/dpx to dL/dW_x^T's row k; else (chunked()) dpx is slot `slot` of the
  // thread's chunk (chunk_dpx: (slots, rows, F)), x's rows go to the same slot of chunk_x
  // (slots, rows, K), and at slot 0 (the chunk of steps t .. t + count - 1 done)
  // dL/dW_x^T (K, F) += x^T dpx over the chunk, one GEMM
  void backward_gemm(int64_t t, int64_t begin, int64_t rows, int64_t slot, int64_t count,
                     const T* dpx, const T* chunk_dpx, T* chunk_x, T* grad_w_t,
                     T* grad_x) const {
    if (grad_x != nullptr) {
      Tensor out = view(grad_x + (t * batch + begin) * columns, rows, columns);
      step_gemm_out(out, view(dpx, rows, features), panels_x_t);
    }
    if (hot_p != nullptr) {
      for (int64_t b = 0; b < rows; ++b) {
        T* g = grad_w_t + hot_p[t * batch + begin + b] * features;
        at::vec::map2<T>([](Vec<T> a, Vec<T> d) { return a + d; }, g, g, dpx + b * features,
                         features);
      }
      return;
    }
    const T* x = data + (t * batch + begin) * columns;
    std::copy(x, x + rows * columns, chunk_x + slot * rows * columns);
    if (slot == 0)
      view(grad_w_t, columns, features)
          .addmm_(view(chunk_x, count * rows, columns).t(),
                  view(chunk_dpx, count * rows, features));
  }
  // the fused projection's backward for rows [begin, begin + rows) of step t from their
  // dL/dpx (rows, F): dL/dW_x^T (K, F) += x^T dpx, and, where grad_x is given, dL/dx = dpx W_x
  void backward_rows(int64_t t, int64_t begin, int64_t rows, const T* dpx, T* grad_w_t,
                     T* grad_x) const {
    const T* x = data + (t * batch + begin) * columns;
    for (int64_t b = 0; b < rows; ++b) {
      const T* d = dpx + b * features;
      for (int64_t k = 0; k < columns; ++k) {
        const Vec<T> xk(x[b * columns + k]);
        T* g = grad_w_t + k * features;
        at::vec::map2<T>([xk](Vec<T> a, Vec<T> v) { return a + v * xk; }, g, g, d, features);
        if (grad_x != nullptr)
          grad_x[(t * batch + begin + b) * columns + k] = at::vec::map2_reduce_all<T>(
              [](Vec<T> a, Vec<T> w) { return a * w; },
              [](Vec<T> a, Vec<T> c) { return a + c; }, d, w_t + k * features, features);
      }
    }
  }
};

template <typename T>
void forward_impl(const Tensor& px, const Tensor& w_x_t, const Tensor& h0, const Tensor& c0,
                  const Tensor& w_hh, const Tensor& shift, const Tensor& gain_x,
                  const Tensor& gain_h, const Norm& nx, const Norm& nh, int64_t t0, bool keep,
                  const StepWeights& step, std::vector<Tensor>& result) {
  const int64_t steps = px.size(0), batch = px.size(1);
  const int64_t features = w_x_t.defined() ? w_x_t.size(1) : px.size(2);
  const int64_t hidden = features / kBlocks;
  auto opts = px.options();
  // kept for the backward: the recurrent term's z_hat, the gate activations (blocks of
  // kSaveChunk steps), the cell states and the normalizations' statistics (the input term's
  // y_hat is recomputed from px)
  Tensor out = at::empty({steps, batch, hidden}, opts);
  std::vector<Tensor> z_hat, acts;
  if (keep) {
    for (int64_t t = 0; t < steps; t += kSaveChunk) {
      const int64_t count = std::min(kSaveChunk, steps - t);
      z_hat.push_back(at::empty({count, batch, features}, opts));
      acts.push_back(at::empty({count, batch, features}, opts));
    }
  }
  Tensor c_all = at::empty({keep ? steps : 2, batch, hidden}, opts);
  auto stats_for = [&](const Norm& n) {
    if (keep && n.op == ROW_BLOCKS) return at::empty({steps, batch, 2 * kBlocks}, opts);
    if (keep && by_columns(n.op)) return at::empty({steps, 2, features}, opts);
    return at::empty({0}, opts);
  };
  Tensor stats_x = stats_for(nx), stats_h = stats_for(nh);
  const Tensor h0c = h0.contiguous(), c0c = c0.contiguous();
  const T* h0_p = h0c.data_ptr<T>();
  const T* c0_p = c0c.data_ptr<T>();
  InputTerm<T> input{px.data_ptr<T>(), w_x_t.defined() ? w_x_t.data_ptr<T>() : nullptr,
                     batch, features, px.size(2)};
  input.plan(px, w_x_t);
  T* out_p = out.data_ptr<T>();
  T* c_all_p = c_all.data_ptr<T>();
  const T* shift_p = shift.data_ptr<T>();
  const T* gx = gain_x.data_ptr<T>();
  const T* gh = gain_h.data_ptr<T>();
  const bool cols_x = by_columns(nx.op), cols_h = by_columns(nh.op);
  if (nx.op == BATCH || nh.op == BATCH)
    TORCH_CHECK(batch > 1, "batch normalization in training needs at least 2 sequences");
  const int64_t parts = team_size(batch);
  // the parts' column sums: (parity, part, term, kPartRows, F)
  const int64_t stride = 2 * kPartRows * features;
  Tensor partials = at::empty({(cols_x || cols_h) ? 2 * parts : 0, 2, kPartRows, features},
                              opts);
  T* partials_p = partials.data_ptr<T>();
  // the team meets after the partial sums only for a term that needs the whole batch's
  const bool meet = whole_batch(nx.op) || whole_batch(nh.op);
  // each thread's statistics of a POWER_RUNNING term: (part, term, 3, F), summed after the loop
  Tensor power_acc = at::zeros(
      {(nx.op == POWER_RUNNING || nh.op == POWER_RUNNING) ? parts : 0, 2, 3, features}, opts);
  const int64_t step_size = batch * features, state_size = batch * hidden;
  // z = h W_h^T; a team that splits it by columns forms z of the whole batch
  const StepProduct recurrent(step, w_hh.detach().t(), parts);
  const bool shared = recurrent.split_columns();
  Tensor z_all = shared ? at::empty({batch, features}, opts) : Tensor();
  Team team(parts);
  team.run([&](int64_t p, int64_t nt) {
    const Rows r = rows_of(p, nt, batch);
    const Rows cols = rows_of(p, nt, features);
    std::vector<T> buf(6 * features);
    T* xr = buf.data();
    T* zr_own = xr + features;
    T* col = xr + 2 * features;  // this step's column vectors: x's a, b, then h's a, b
    std::vector<T> px_buf(input.fused() ? r.size() * features : 0);
    for (int64_t t = 0; t < steps; ++t) {
      const T* px_rows = nullptr;  // this step's px, from row r.begin
      const T* h_prev = t == 0 ? h0_p : out_p + (t - 1) * state_size;
      const T* c_prev = t == 0 ? c0_p : c_all_p + (keep ? t - 1 : (t - 1) % 2) * state_size;
      T* c_next = c_all_p + (keep ? t : t % 2) * state_size;
      T* parts_t = partials_p + (t % 2) * nt * stride;
      Tensor z;
      const T* z_p = nullptr;  // this step's z, from row r.begin
      team.guarded([&] {
        if (shared) {  // this thread's columns of z for the whole batch
          recurrent.columns(z_all.narrow(1, cols.begin, cols.size()),
                            rows_tensor(h_prev, batch, hidden, opts), p, nt, cols);
        } else {
          z = recurrent.whole(rows_tensor(h_prev + r.begin * hidden, r.size(), hidden, opts));
          TORCH_CHECK(z.is_contiguous(), "the step GEMM's output must be contiguous");
        }
      });
      if (shared) Team::barrier(nt);  // z complete
      team.guarded([&] {
        z_p = shared ? z_all.data_ptr<T>() + r.begin * features : z.data_ptr<T>();
        px_rows = input.rows(t, r.begin, r.size(), px_buf.data());
        if (cols_x)
          forward_partials<T>(nx.op, px_rows, r.size(), features, parts_t + p * stride);
        if (cols_h)
          forward_partials<T>(nh.op, z_p, r.size(), features,
                              parts_t + p * stride + kPartRows * features);
      });
      if (meet) Team::barrier(nt);
      team.guarded([&] {
        const T *ax = nullptr, *bx = nullptr, *ah = nullptr, *bh = nullptr;
        T* own_acc = power_acc.numel() ? power_acc.data_ptr<T>() + p * 6 * features : nullptr;
        if (nx.op == POWER_RUNNING) {
          running_power_columns<T>(nx, parts_t + p * stride, r.size(), features, col,
                                   col + features, own_acc);
        } else if (cols_x) {
          forward_columns<T>(nx, parts_t, stride, nt, batch, features, t0 + t, col,
                             col + features, p == 0);
        }
        if (cols_x) {
          ax = col;
          bx = col + features;
          if (keep && p == 0)
            std::copy(col, col + 2 * features, stats_x.data_ptr<T>() + t * 2 * features);
        } else if (nx.op == FIXED || nx.op == AFFINE) {
          ax = nx.first.data_ptr<T>() + nx.slot(t0 + t) * features;
          bx = nx.second.data_ptr<T>() + nx.slot(t0 + t) * features;
        }
        if (nh.op == POWER_RUNNING) {
          running_power_columns<T>(nh, parts_t + p * stride + kPartRows * features, r.size(),
                                   features, col + 2 * features, col + 3 * features,
                                   own_acc + 3 * features);
        } else if (cols_h) {
          forward_columns<T>(nh, parts_t + kPartRows * features, stride, nt, batch, features,
                             t0 + t, col + 2 * features, col + 3 * features, p == 0);
        }
        if (cols_h) {
          ah = col + 2 * features;
          bh = col + 3 * features;
          if (keep && p == 0)
            std::copy(col + 2 * features, col + 4 * features,
                      stats_h.data_ptr<T>() + t * 2 * features);
        } else if (nh.op == FIXED || nh.op == AFFINE) {
          ah = nh.first.data_ptr<T>() + nh.slot(t0 + t) * features;
          bh = nh.second.data_ptr<T>() + nh.slot(t0 + t) * features;
        }
        const int64_t block = t / kSaveChunk, within = t % kSaveChunk;
        T* zh_keep = keep ? z_hat[block].data_ptr<T>() + within * step_size : nullptr;
        T* acts_p = keep ? acts[block].data_ptr<T>() + within * step_size : nullptr;
        T* sx_p = (keep && nx.op == ROW_BLOCKS) ? stats_x.data_ptr<T>() + t * batch * 2 * kBlocks
                                                : nullptr;
        T* sh_p = (keep && nh.op == ROW_BLOCKS) ? stats_h.data_ptr<T>() + t * batch * 2 * kBlocks
                                                : nullptr;
        T* h_p = out_p + t * state_size;
        for (int64_t b = r.begin; b < r.end; ++b) {
          const int64_t row = b * features, q = b * hidden;
          T* zr = keep ? zh_keep + row : zr_own;
          normalize_row<T>(nx.op, px_rows + (b - r.begin) * features, xr, features, nx.eps,
                           ax, bx,
                           sx_p ? sx_p + b * 2 * kBlocks : nullptr);
          normalize_row<T>(nh.op, z_p + (b - r.begin) * features, zr, features, nh.eps, ah, bh,
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
                                                     Vec<T>::loadu(c_prev + q + j, n));
            cell.h.store(h_p + q + j, n);
            cell.c.store(c_next + q + j, n);
            if (acts_p != nullptr) {
              T* ar = acts_p + row;
              cell.i.store(ar + j, n);
              cell.f.store(ar + hidden + j, n);
              cell.a.store(ar + 2 * hidden + j, n);
              cell.o.store(ar + 3 * hidden + j, n);
            }
          }
        }
      });
      if (shared) Team::barrier(nt);  // h_t complete before the next step's product
    }
  });
  if (power_acc.numel()) {
    const Tensor sums = power_acc.sum(0);
    if (nx.op == POWER_RUNNING) nx.accum.add_(sums[0]);
    if (nh.op == POWER_RUNNING) nh.accum.add_(sums[1]);
  }
  const int64_t last = steps - 1;
  result = {out, out[last].clone(), c_all[keep ? last : last % 2].clone()};
  if (keep) {
    result.insert(result.end(), {c_all, stats_x, stats_h});
    result.insert(result.end(), z_hat.begin(), z_hat.end());
    result.insert(result.end(), acts.begin(), acts.end());
  }
}

template <typename T>
void backward_impl(const Tensor& grad_out, Tensor dh, Tensor dc, const Tensor& px,
                   const Tensor& w_x_t, bool grad_input, const Tensor& h0, const Tensor& c0,
                   const Tensor& out, const Tensor& c_all,
                   const std::vector<Tensor>& acts, const std::vector<Tensor>& z_hat,
                   const Tensor& stats_x,
                   const Tensor& stats_h, const Tensor& w_hh, const Tensor& gain_x,
                   const Tensor& gain_h, int64_t op_x, const Tensor& first_x,
                   const Tensor& second_x, int64_t op_h, const Tensor& second_h, int64_t t0,
                   const Tensor& nu_x, const Tensor& accum_x, const Tensor& nu_h,
                   const Tensor& accum_h, const StepWeights& step, std::vector<Tensor>& result) {
  const int64_t steps = out.size(0), batch = out.size(1), hidden = out.size(2);
  const int64_t features = kBlocks * hidden;
  TORCH_CHECK(static_cast<int64_t>(acts.size()) == (steps + kSaveChunk - 1) / kSaveChunk &&
                  acts.size() == z_hat.size(),
              "the saved activations do not match the forward's blocks of steps");
  auto opts = out.options();
  InputTerm<T> input{px.data_ptr<T>(), w_x_t.defined() ? w_x_t.data_ptr<T>() : nullptr,
                     batch, features, px.size(2)};
  input.plan(px, w_x_t);
  // dL/dpx (T, B, F), or, with the fused projection, dL/dx (T, B, K) where asked for and each
  // thread's dL/dW_x^T (K, F)
  Tensor grad_px = input.fused() ? at::empty({grad_input ? steps : 0, batch, px.size(2)}, opts)
                                 : at::empty({steps, batch, features}, opts);
  const int64_t parts = team_size(batch);
  // dh = grad_z W_h (the product x (W_h^T)^T); a team that splits it by columns forms dh of
  // the whole batch
  const StepProduct back(step, w_hh.detach(), parts);
  const bool shared = back.split_columns();
  // dL/dW_h = sum_t grad_z_t^T h_{t-1}: grad_z and h_{t-1} are kept for a chunk of steps, one
  // GEMM per chunk: alone, a thread keeps its rows (one partial dL/dW_h per thread, summed at
  // the end); in a shared team, the whole batch's, and each thread forms its rows of dL/dW_h.
  // A chunk is 32 steps from 64 batch rows on (GEMMs over 2048 rows of dL/dz: the char-size
  // training step was faster than with 16 in each of four A/B runs, AMD EPYC Zen 3), else 16
  // (the word size, 20 rows, gained nothing from 32)
  const int64_t chunk = std::min<int64_t>(steps, batch >= 64 ? 32 : 16);
  // The chunk's buffers: in a shared team each slot holds the whole batch; alone, a thread's
  // rows [begin, end) have a block of their own from row chunk * begin, so that the blocks do
  // not overlap however many threads the region has (a thread limit, OMP_THREAD_LIMIT below
  // torch's threads, gives it fewer than planned)
  Tensor grad_z = at::empty({chunk * batch, features}, opts);
  Tensor h_prev = at::empty({chunk * batch, hidden}, opts);
  // dL/dW_h: the first chunk's GEMM writes it (no zero fill), the later ones add to it; the
  // region's threads each write one (shared: the one), summed after the loop
  Tensor grad_w = at::empty({shared ? 1 : parts, features, hidden}, opts);
  int64_t written = 1;  // the partials of dL/dW_h the region's threads wrote
  // the input term's y_hat of this step, for the ops finished by columns
  Tensor x_hat_step = at::empty({by_columns(op_x) ? batch : 0, features}, opts);
  // per-thread sums of dg, dg * x_hat, dg * z_hat over all steps and rows: the gradients of
  // shift, gain_x and gain_h (reduced once at the end)
  Tensor partial = at::zeros({parts, 3, features}, opts);
  Tensor grad_w_x = at::zeros({input.fused() ? parts : 0, px.size(2), features}, opts);
  const bool cols_x = by_columns(op_x), cols_h = by_columns(op_h);
  const int64_t stride = 2 * 2 * features;  // a part's (term, sum, F)
  Tensor partials = at::empty({(cols_x || cols_h) ? 2 * parts : 0, 2, 2, features}, opts);
  T* partials_p = partials.data_ptr<T>();
  // the team meets after the partial sums only for a term that needs the whole batch's
  const bool meet = whole_batch(op_x) || whole_batch(op_h);
  // each thread's backward statistics of a POWER_RUNNING term: (part, term, 2, F), summed
  // after the loop
  Tensor power_acc = at::zeros(
      {(op_x == POWER_RUNNING || op_h == POWER_RUNNING) ? parts : 0, 2, 2, features}, opts);
  T* partial_p = partial.data_ptr<T>();
  const T* gx = gain_x.data_ptr<T>();
  const T* gh = gain_h.data_ptr<T>();
  const T* go_all = grad_out.defined() ? grad_out.data_ptr<T>() : nullptr;
  T* dh_p = dh.data_ptr<T>();
  T* dc_p = dc.data_ptr<T>();
  const T* h0_p = h0.data_ptr<T>();
  const T* c0_p = c0.data_ptr<T>();
  const T* out_p = out.data_ptr<T>();
  const T* c_all_p = c_all.data_ptr<T>();
  T* gpx_all = grad_px.data_ptr<T>();
  T* xstep_all = cols_x ? x_hat_step.data_ptr<T>() : nullptr;
  const int64_t slots_x = second_x.defined() ? second_x.size(0) : 1;
  const int64_t slots_h = second_h.defined() ? second_h.size(0) : 1;
  const int64_t step_size = batch * features, state_size = batch * hidden;
  Team team(parts);
  team.run([&](int64_t p, int64_t nt) {
    const Rows r = rows_of(p, nt, batch);
    const int64_t rows = r.size();
    const Rows hcols = rows_of(p, nt, hidden), fcols = rows_of(p, nt, features);
    // a shared team's chunk buffers hold the whole batch (row b of slot s at s * batch + b)
    const int64_t slot_rows = shared ? batch : rows, first_row = shared ? r.begin : 0;
    std::vector<T> buf(10 * features);
    T* dgr = buf.data();
    T* d = dgr + features;
    T* x_own = dgr + 2 * features;
    T* sums = dgr + 3 * features;   // a by-columns term's two whole-batch sums (2 F)
    T* means = dgr + 5 * features;  // 2 F
    T* acc = partial_p + p * 3 * features;
    // with a term by columns: this step's sums over the thread's rows of dg, dg * x_hat and
    // dg * z_hat (3 F), added to acc after the rows; its partial column sums of
    // d = gain * dg and of d * y_hat are the gain times two of them
    T* step_acc = (cols_x || cols_h) ? dgr + 7 * features : acc;
    if (p == 0 && !shared) written = nt;
    T* gz_own = grad_z.data_ptr<T>() + (shared ? 0 : chunk * r.begin * features);
    T* hp_own = h_prev.data_ptr<T>() + (shared ? 0 : chunk * r.begin * hidden);
    T* gw_own = grad_w.data_ptr<T>() + (shared ? 0 : p * features * hidden);
    T* gwx_own = input.fused() ? grad_w_x.data_ptr<T>() + p * px.size(2) * features : nullptr;
    // with the fused projection: this step's px and dL/dpx of the thread's rows; through the
    // step GEMM, dL/dpx and x of the thread's rows for a chunk of steps (InputTerm::backward_gemm)
    std::vector<T> px_buf(input.fused() ? 2 * rows * features : 0);
    std::vector<T> chunk_dpx(input.chunked() ? chunk * rows * features : 0);
    std::vector<T> chunk_x(input.chunked() ? chunk * rows * input.columns : 0);
    for (int64_t t = steps - 1; t >= 0; --t) {
      const int64_t slot = t % chunk;
      const int64_t block = t / kSaveChunk, within = t % kSaveChunk;
      const T* a_p = acts[block].data_ptr<T>() + within * step_size;
      const T* zh_p = z_hat[block].data_ptr<T>() + within * step_size;
      const T* c_p = c_all_p + t * state_size;
      const T* cp_p = t > 0 ? c_all_p + (t - 1) * state_size : c0_p;
      const T* hp_p = t > 0 ? out_p + (t - 1) * state_size : h0_p;
      const T* go_p = go_all != nullptr ? go_all + t * state_size : nullptr;
      // this step's px and dL/dpx, from row r.begin
      const T* px_rows = input.rows(t, r.begin, rows, px_buf.data());
      T* gpx_rows = input.chunked() ? chunk_dpx.data() + slot * rows * features
                    : input.fused() ? px_buf.data() + rows * features
                                    : gpx_all + (t * batch + r.begin) * features;
      // this step's rows, from row r.begin
      T* gz_p = gz_own + (slot * slot_rows + first_row) * features;
      T* parts_t = partials_p + (t % 2) * nt * stride;
      const T* sx_p = op_x == ROW_BLOCKS ? stats_x.data_ptr<T>() + t * batch * 2 * kBlocks
                                         : nullptr;
      const T* sh_p = op_h == ROW_BLOCKS ? stats_h.data_ptr<T>() + t * batch * 2 * kBlocks
                                         : nullptr;
      const T* colx_a = cols_x ? stats_x.data_ptr<T>() + t * 2 * features
                        : op_x == FIXED ? first_x.data_ptr<T>() +
                                              std::min(t0 + t, slots_x - 1) * features
                                        : nullptr;
      const T* colx_b = cols_x ? stats_x.data_ptr<T>() + (t * 2 + 1) * features
                        : op_x == FIXED ? second_x.data_ptr<T>() +
                                              std::min(t0 + t, slots_x - 1) * features
                                        : nullptr;
      const T* fx_p = op_x == FIXED ? colx_b : nullptr;
      const T* fh_p = op_h == FIXED ? second_h.data_ptr<T>() +
                                          std::min(t0 + t, slots_h - 1) * features
                                    : nullptr;
      team.guarded([&] {
        if (step_acc != acc) std::fill(step_acc, step_acc + 3 * features, T(0));
        for (int64_t b = r.begin; b < r.end; ++b) {
          const int64_t row = b * features, q = b * hidden, own = b - r.begin;
          const T* ar = a_p + row;
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
          std::copy(hp_p + q, hp_p + q + hidden,
                    hp_own + (slot * slot_rows + first_row + own) * hidden);
          // the input term's y_hat again (kept for the by-columns finish where it has one)
          T* xr = xstep_all != nullptr ? xstep_all + row : x_own;
          reapply_row<T>(op_x, px_rows + own * features, xr, features, colx_a, colx_b,
                         sx_p ? sx_p + b * 2 * kBlocks : nullptr);
          const T* zr = zh_p + row;
          // the gradients of shift and the gains
          T* sa = step_acc;
          for (int64_t j = 0; j < features; j += Vec<T>::size()) {
            const int64_t n = std::min<int64_t>(Vec<T>::size(), features - j);
            const Vec<T> g = Vec<T>::loadu(dgr + j, n);
            (Vec<T>::loadu(sa + j, n) + g).store(sa + j, n);
            (Vec<T>::loadu(sa + features + j, n) + g * Vec<T>::loadu(xr + j, n))
                .store(sa + features + j, n);
            (Vec<T>::loadu(sa + 2 * features + j, n) + g * Vec<T>::loadu(zr + j, n))
                .store(sa + 2 * features + j, n);
          }
          // through the gains into the two normalizations (by columns: finished below)
          T* gz_row = gz_p + own * features;
          if (cols_x)
            at::vec::map2<T>([](Vec<T> g, Vec<T> s) { return g * s; }, gpx_rows + own * features,
                             dgr, gx, features);
          else {
            at::vec::map2<T>([](Vec<T> g, Vec<T> s) { return g * s; }, d, dgr, gx, features);
            normalize_row_backward<T>(op_x, d, xr, gpx_rows + own * features, features, fx_p,
                                      sx_p ? sx_p + b * 2 * kBlocks : nullptr);
          }
          if (cols_h)
            at::vec::map2<T>([](Vec<T> g, Vec<T> s) { return g * s; }, gz_row, dgr, gh,
                             features);
          else {
            at::vec::map2<T>([](Vec<T> g, Vec<T> s) { return g * s; }, d, dgr, gh, features);
            normalize_row_backward<T>(op_h, d, zr, gz_row, features, fh_p,
                                      sh_p ? sh_p + b * 2 * kBlocks : nullptr);
          }
        }
        if (step_acc != acc) {
          at::vec::map2<T>([](Vec<T> a, Vec<T> v) { return a + v; }, acc, acc, step_acc,
                           3 * features);
          // the partial column sums of d = gain * dg and d * y_hat: (sum d, sum d * y_hat) of
          // each term by columns, from this step's sums of dg and dg * y_hat
          const T* sum_dg = step_acc;
          auto gained = [&](const T* gain, const T* sum_dg_y, T* part) {
            auto times = [](Vec<T> g, Vec<T> v) { return g * v; };
            at::vec::map2<T>(times, part, gain, sum_dg, features);
            at::vec::map2<T>(times, part + features, gain, sum_dg_y, features);
          };
          if (cols_x) gained(gx, step_acc + features, parts_t + p * stride);
          if (cols_h) gained(gh, step_acc + 2 * features, parts_t + p * stride + 2 * features);
        }
      });
      if (meet) Team::barrier(nt);
      team.guarded([&] {
        T* own_acc = power_acc.numel() ? power_acc.data_ptr<T>() + p * 4 * features : nullptr;
        // a term's column sums: the whole batch's, or POWER_RUNNING's own rows'
        auto column_sums = [&](int64_t op, int64_t first_row) {
          const bool own = op == POWER_RUNNING;
          const T* from = own ? parts_t + p * stride : parts_t;
          add_parts(from, stride, own ? 1 : nt, first_row, features, sums);
          add_parts(from, stride, own ? 1 : nt, first_row + 1, features, sums + features);
        };
        if (cols_x) {
          column_sums(op_x, 0);
          backward_columns<T>(op_x, gpx_rows, xstep_all + r.begin * features,
                              colx_b, sums, nu_x.defined() ? nu_x.data_ptr<T>() : nullptr,
                              own_acc, rows, batch, features, means);
        }
        if (cols_h) {
          column_sums(op_h, 2);
          backward_columns<T>(op_h, gz_p, zh_p + r.begin * features,
                              stats_h.data_ptr<T>() + (t * 2 + 1) * features, sums,
                              nu_h.defined() ? nu_h.data_ptr<T>() : nullptr,
                              own_acc == nullptr ? nullptr : own_acc + 2 * features, rows,
                              batch, features, means);
        }
        if (input.by_gemm())
          input.backward_gemm(t, r.begin, rows, slot, std::min(chunk, steps - t), gpx_rows,
                              chunk_dpx.data(), chunk_x.data(), gwx_own,
                              grad_input ? gpx_all : nullptr);
        else if (input.fused())
          input.backward_rows(t, r.begin, rows, gpx_rows, gwx_own,
                              grad_input ? gpx_all : nullptr);
        if (!shared) {
          const Tensor dh_rows = back.whole(rows_tensor(gz_p, rows, features, opts));
          std::copy(dh_rows.data_ptr<T>(), dh_rows.data_ptr<T>() + rows * hidden,
                    dh_p + r.begin * hidden);
        }
      });
      if (shared) Team::barrier(nt);  // grad_z of the whole batch complete
      team.guarded([&] {
        if (shared) {  // this thread's columns of dh for the whole batch
          back.columns(dh.narrow(1, hcols.begin, hcols.size()),
                       rows_tensor(gz_own + slot * batch * features, batch, features, opts), p,
                       nt, hcols);
        }
        if (slot == 0) {  // the chunk of steps t .. t + count - 1 (slots 0 .. count - 1) is done
          const int64_t count = std::min(chunk, steps - t);
          Tensor gw = at::from_blob(gw_own, {features, hidden}, opts);
          Tensor gz_t = rows_tensor(gz_own, count * slot_rows, features, opts).t();
          const Tensor hp = rows_tensor(hp_own, count * slot_rows, hidden, opts);
          if (shared) {  // this thread's rows of dL/dW_h
            gw = gw.narrow(0, fcols.begin, fcols.size());
            gz_t = gz_t.narrow(0, fcols.begin, fcols.size());
          }
          if (t + count == steps)  // the first chunk of the backward (the last steps)
            at::mm_out(gw, gz_t, hp);
          else
            gw.addmm_(gz_t, hp);
        }
      });
      if (shared) Team::barrier(nt);  // dh complete, the chunk's buffers free
    }
  });
  if (power_acc.numel()) {
    const Tensor power_sums = power_acc.sum(0);
    if (op_x == POWER_RUNNING) accum_x.add_(power_sums[0]);
    if (op_h == POWER_RUNNING) accum_h.add_(power_sums[1]);
  }
  const Tensor sums = partial.sum(0);
  result = {grad_px, dh, dc, written == 1 ? grad_w[0] : grad_w.narrow(0, 0, written).sum(0),
            sums[0], sums[1], sums[2],
            input.fused() ? grad_w_x.sum(0).t().contiguous() : Tensor()};
}

Tensor gain_or_ones(const c10::optional<Tensor>& gain, const Tensor& like, int64_t features) {
  if (gain.has_value() && gain->defined()) return gain->contiguous();
  return at::ones({features}, like.options());
}

}  // namespace

std::vector<Tensor> recurrence_forward(
    Tensor px, Tensor h0, Tensor c0, Tensor w_hh, Tensor shift,
    c10::optional<Tensor> gain_x, c10::optional<Tensor> gain_h, const NormTerm& x,
    const NormTerm& h, int64_t t0, bool keep, c10::optional<Tensor> w_x,
    const StepWeights& step) {
  const bool fused = w_x.has_value() && w_x->defined();
  TORCH_CHECK(px.dim() == 3 && px.size(0) > 0,
              "px must be (T, B, 4H) (or x (T, B, K) with W_x) with at least one step");
  TORCH_CHECK(fused ? (w_x->dim() == 2 && w_x->size(1) == px.size(2) &&
                       w_x->size(0) % kBlocks == 0 && w_x->scalar_type() == px.scalar_type())
                    : px.size(2) % kBlocks == 0,
              "px must be (T, B, 4H), or x (T, B, K) with W_x (4H, K) of its dtype");
  const int64_t features = fused ? w_x->size(0) : px.size(2);
  px = px.contiguous();
  const Tensor w_x_t = fused ? w_x->t().contiguous() : Tensor();
  const Norm nx = make_norm(x.op, x.eps, x.first, x.second, x.momentum, x.accum_forward,
                            features);
  const Norm nh = make_norm(h.op, h.eps, h.first, h.second, h.momentum, h.accum_forward,
                            features);
  const Tensor gx = gain_or_ones(gain_x, px, features), gh = gain_or_ones(gain_h, px, features);
  std::vector<Tensor> result;
  AT_DISPATCH_FLOATING_TYPES(px.scalar_type(), "nq_recurrence_forward", [&] {
    forward_impl<scalar_t>(px, w_x_t, h0, c0, w_hh.contiguous(), shift.contiguous(), gx, gh,
                           nx, nh, t0, keep, step, result);
  });
  return result;
}

std::vector<Tensor> recurrence_backward(
    c10::optional<Tensor> grad_out, c10::optional<Tensor> grad_h, c10::optional<Tensor> grad_c,
    Tensor px, Tensor h0, Tensor c0, Tensor out, Tensor c_all, std::vector<Tensor> acts,
    std::vector<Tensor> z_hat, Tensor stats_x, Tensor stats_h, Tensor w_hh,
    c10::optional<Tensor> gain_x, c10::optional<Tensor> gain_h, const NormTerm& x,
    const NormTerm& h, int64_t t0, c10::optional<Tensor> w_x, bool grad_input,
    const StepWeights& step) {
  const int64_t op_x = x.op, op_h = h.op;
  const Tensor w_x_t = w_x.has_value() && w_x->defined() ? w_x->t().contiguous() : Tensor();
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
    backward_impl<scalar_t>(go, dh, dc, px.contiguous(), w_x_t, grad_input, h0.contiguous(),
                            c0.contiguous(), out,
                            c_all, acts, z_hat, stats_x, stats_h, w_hh, gx, gh, op_x,
                            opt(x.first), opt(x.second), op_h, opt(h.second), t0,
                            opt(x.nu), opt(x.accum_backward), opt(h.nu), opt(h.accum_backward),
                            step, result);
  });
  return result;
}

double step_product_seconds(const Tensor& x, const Tensor& weight, const StepWeights& step,
                            int64_t rounds, int64_t calls) {
  TORCH_CHECK(x.dim() == 2 && weight.dim() == 2 && x.size(1) == weight.size(1),
              "step_product_seconds: x (B, K) and weight (N, K) expected, got ", x.sizes(),
              " and ", weight.sizes());
  const int64_t batch = x.size(0), columns = weight.size(0);
  const Tensor xc = x.contiguous();
  const StepProduct product(step, weight.t(), team_size(batch));
  const bool shared = product.split_columns();
  Tensor out = at::empty({batch, columns}, x.options());
  double best = std::numeric_limits<double>::infinity();
  Team team(team_size(batch));
  team.run([&](int64_t p, int64_t nt) {
    const Rows r = rows_of(p, nt, batch), cols = rows_of(p, nt, columns);
    const Tensor own = xc.narrow(0, r.begin, r.size());
    for (int64_t round = 0; round < rounds; ++round) {
      Team::barrier(nt);
      const auto start = std::chrono::steady_clock::now();
      for (int64_t call = 0; call < calls; ++call) {
        team.guarded([&] {
          if (shared)
            product.columns(out.narrow(1, cols.begin, cols.size()), xc, p, nt, cols);
          else
            product.whole(own);
        });
        if (shared) Team::barrier(nt);  // as the loop meets after each product
      }
      Team::barrier(nt);
      if (p == 0)
        best = std::min(best, std::chrono::duration<double>(
                                  std::chrono::steady_clock::now() - start).count() / calls);
    }
  });
  return best;
}
