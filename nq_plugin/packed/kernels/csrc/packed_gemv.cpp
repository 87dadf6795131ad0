// y = x W^T with W = diag(s) B from packed codes B (1 bit: plus plane; 2 bits: nonzero and
// negative planes), computed from the packed words without unpacking them (exact fp32
// activations): each 32-bit word selects, bit by bit, which of 32 inputs are added and which
// subtracted. With AVX-512 one word is 2 masked adds + 2 masked subtracts on 16-lane vectors.
// Layout: nq_plugin/packed/format.py (int32 words along the input, LSB first, zero padding).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cstdint>
#include <vector>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace {

// sum over the columns of one row: +x where plus bit set, -x elsewhere (binary), or
// +x where nonzero & !negative, -x where nonzero & negative (ternary).
inline float row_dot(const uint32_t* plus, const uint32_t* neg, int64_t words,
                     const float* x) {
#ifdef __AVX512F__
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  for (int64_t k = 0; k < words; ++k) {
    const __m512 x0 = _mm512_loadu_ps(x + 32 * k);
    const __m512 x1 = _mm512_loadu_ps(x + 32 * k + 16);
    uint32_t add, sub;
    if (neg == nullptr) {
      add = plus[k];
      sub = ~plus[k];
    } else {
      add = plus[k] & ~neg[k];
      sub = plus[k] & neg[k];
    }
    acc0 = _mm512_mask_add_ps(acc0, (__mmask16)(add & 0xFFFF), acc0, x0);
    acc1 = _mm512_mask_add_ps(acc1, (__mmask16)(add >> 16), acc1, x1);
    acc0 = _mm512_mask_sub_ps(acc0, (__mmask16)(sub & 0xFFFF), acc0, x0);
    acc1 = _mm512_mask_sub_ps(acc1, (__mmask16)(sub >> 16), acc1, x1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
#else
  float acc[32] = {0};
  for (int64_t k = 0; k < words; ++k) {
    const uint32_t p = plus[k];
    const uint32_t n = neg == nullptr ? 0u : neg[k];
    const float* xs = x + 32 * k;
    for (int i = 0; i < 32; ++i) {
      const float on = (float)((p >> i) & 1u);
      const float sign = neg == nullptr ? 2.f * on - 1.f : on * (1.f - 2.f * (float)((n >> i) & 1u));
      acc[i] += sign * xs[i];
    }
  }
  float s = 0.f;
  for (int i = 0; i < 32; ++i) s += acc[i];
  return s;
#endif
}

}  // namespace

// x: (N, columns) float32; plus (and neg for 2 bits): (R, words) int32; scale: (R,) float32.
torch::Tensor packed_gemv(torch::Tensor x, torch::Tensor plus, c10::optional<torch::Tensor> neg,
                          torch::Tensor scale, int64_t columns) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat32, "x must be (N, n) float32");
  TORCH_CHECK(plus.dim() == 2 && plus.scalar_type() == torch::kInt32, "planes must be int32");
  const int64_t n = x.size(0), rows = plus.size(0), words = plus.size(1);
  TORCH_CHECK(x.size(1) == columns && words * 32 >= columns, "x does not fit the packed matrix");
  auto xp = torch::zeros({n, words * 32}, x.options());  // zero padding: padded bits ignored
  xp.narrow(1, 0, columns).copy_(x);
  auto plus_c = plus.contiguous();
  torch::Tensor neg_c;
  const uint32_t* negp = nullptr;
  if (neg.has_value()) {
    neg_c = neg->contiguous();
    TORCH_CHECK(neg_c.sizes() == plus_c.sizes(), "planes differ in shape");
    negp = reinterpret_cast<const uint32_t*>(neg_c.data_ptr<int32_t>());
  }
  auto scale_c = scale.contiguous();
  auto y = torch::empty({n, rows}, x.options());
  const uint32_t* pp = reinterpret_cast<const uint32_t*>(plus_c.data_ptr<int32_t>());
  const float* xd = xp.data_ptr<float>();
  const float* sd = scale_c.data_ptr<float>();
  float* yd = y.data_ptr<float>();
  at::parallel_for(0, rows, 256, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const uint32_t* pr = pp + r * words;
      const uint32_t* nr = negp == nullptr ? nullptr : negp + r * words;
      for (int64_t b = 0; b < n; ++b) {
        yd[b * rows + r] = sd[r] * row_dot(pr, nr, words, xd + b * words * 32);
      }
    }
  });
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("packed_gemv", &packed_gemv, "x W^T from packed 1/2-bit words (fp32 activations)");
}
