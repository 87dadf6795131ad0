// Vectorized gate activations, the LSTM cell and layer norm's block statistics, shared by the
// extension's sources (at::vec; AVX2 code where the extension is built with
// CPU_CAPABILITY_AVX2, nq_plugin/native.py, and AVX-512 code in recurrence.cpp where the CPU
// has it).
#pragma once
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <cmath>
#include <cstdint>
#include <utility>

namespace nq_native {
// one copy of each helper per vector width (CPU_CAPABILITY: AVX2, or AVX512 in recurrence.cpp's
// unit where the CPU has it): the widths' instances never share a symbol
inline namespace CPU_CAPABILITY {

template <typename T>
using Vec = at::vec::Vectorized<T>;

// exp with at::vec's polynomial (exp_u20: within 20 ulp, several times faster than Sleef's exp;
// the cell's results stay within 1e-6 of torch.sigmoid / torch.tanh)
template <typename T>
inline Vec<T> sigmoid(const Vec<T>& x) {
  return (Vec<T>(T(1)) + x.neg().exp_u20()).reciprocal();
}

// tanh(x) = 1 - 2 / (exp(2x) + 1)
template <typename T>
inline Vec<T> tanh_fast(const Vec<T>& x) {
  const Vec<T> one(T(1));
  return one - Vec<T>(T(2)) * (one + (x + x).exp_u20()).reciprocal();
}

// One vector of the LSTM cell (gate order i, f, a, o as nq_plugin/nn/cell.py): from the gates'
// pre-activations and c_{t-1}, the activations and c_t = sigma(f) c_{t-1} + sigma(i) tanh(a),
// h_t = sigma(o) tanh(c_t) -- the one cell of the native recurrence (recurrence.cpp, which
// keeps the activations for its backward) and of the packed fused step (packed_step.cpp).
template <typename T>
struct CellVec {
  Vec<T> i, f, a, o, c, h;
};

template <typename T>
inline CellVec<T> lstm_cell(const Vec<T>& gi, const Vec<T>& gf, const Vec<T>& ga,
                            const Vec<T>& go, const Vec<T>& c_prev) {
  CellVec<T> r;
  r.i = sigmoid(gi);
  r.f = sigmoid(gf);
  r.a = tanh_fast(ga);
  r.o = sigmoid(go);
  r.c = r.f * c_prev + r.i * r.a;
  r.h = r.o * tanh_fast(r.c);
  return r;
}

// out[0..n) = (x - mean) / sqrt(var + eps) with x's mean and biased variance: layer norm's
// statistics over one gate block (Ba et al. 2016; the paper's layer-normalized LSTM), for the
// native recurrence (recurrence.cpp, ROW_BLOCKS) and the packed fused step (packed_step.cpp)
// alike. out may be x. Returns {mean, rstd} (the backward's saved statistics).
template <typename T>
inline std::pair<T, T> standardize(const T* x, T* out, int64_t n, double eps) {
  const T mean = at::vec::reduce_all<T>([](Vec<T>& a, Vec<T>& b) { return a + b; }, x, n) / T(n);
  const T var = at::vec::map_reduce_all<T>(
                    [mean](Vec<T> v) { auto d = v - Vec<T>(mean); return d * d; },
                    [](Vec<T> a, Vec<T> b) { return a + b; }, x, n) / T(n);
  const T rstd = T(1) / std::sqrt(var + T(eps));
  at::vec::map<T>([mean, rstd](Vec<T> v) { return (v - Vec<T>(mean)) * Vec<T>(rstd); }, out, x,
                  n);
  return {mean, rstd};
}

}  // namespace CPU_CAPABILITY
}  // namespace nq_native
