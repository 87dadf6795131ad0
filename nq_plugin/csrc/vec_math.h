// Vectorized gate activations shared by the extension's sources (at::vec; AVX2 code where the
// extension is built with CPU_CAPABILITY_AVX2, nq_plugin/native.py).
#pragma once
#include <ATen/cpu/vec/vec.h>

namespace nq_native {

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

}  // namespace nq_native
