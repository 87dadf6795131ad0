// y = x W^T with W = diag(s) B from packed codes B (1 bit: plus plane; 2 bits: nonzero and
// negative planes), computed from the packed words without unpacking them (exact fp32
// activations): each 32-bit word selects, bit by bit, which of 32 inputs are added and which
// subtracted. With AVX-512 one word is 2 masked adds + 2 masked subtracts on 16-lane vectors;
// with AVX2 the bits are shifted into the lanes' sign bits (4 chunks of 8 lanes); otherwise a
// portable loop.
// Layout: nq_plugin/packed/format.py (int32 words along the input, LSB first, zero padding).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>
#if defined(__AVX512F__) || defined(__AVX2__)
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
#elif defined(__AVX2__)
  // Lane j of chunk c holds input 8c + j; shifting the broadcast word left by 31 - (8c + j)
  // puts that input's bit into the lane's sign bit. Binary: flip the sign of x where the bit
  // is 0 and add. Ternary: an arithmetic shift turns the sign bit into an all-ones mask that
  // selects x for the add (nonzero & !negative) and the subtract (nonzero & negative).
  const __m256i lane = _mm256_setr_epi32(31, 30, 29, 28, 27, 26, 25, 24);
  const __m256i sign = _mm256_set1_epi32((int)0x80000000u);
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                   _mm256_setzero_ps()};
  for (int64_t k = 0; k < words; ++k) {
    if (neg == nullptr) {
      const __m256i w = _mm256_set1_epi32((int)plus[k]);
      for (int c = 0; c < 4; ++c) {
        const __m256i at_sign = _mm256_sllv_epi32(w, _mm256_sub_epi32(lane, _mm256_set1_epi32(8 * c)));
        const __m256 flip = _mm256_castsi256_ps(_mm256_andnot_si256(at_sign, sign));
        acc[c] = _mm256_add_ps(acc[c], _mm256_xor_ps(_mm256_loadu_ps(x + 32 * k + 8 * c), flip));
      }
    } else {
      const __m256i a = _mm256_set1_epi32((int)(plus[k] & ~neg[k]));
      const __m256i s = _mm256_set1_epi32((int)(plus[k] & neg[k]));
      for (int c = 0; c < 4; ++c) {
        const __m256i shift = _mm256_sub_epi32(lane, _mm256_set1_epi32(8 * c));
        const __m256 xs = _mm256_loadu_ps(x + 32 * k + 8 * c);
        const __m256 ma = _mm256_castsi256_ps(_mm256_srai_epi32(_mm256_sllv_epi32(a, shift), 31));
        const __m256 ms = _mm256_castsi256_ps(_mm256_srai_epi32(_mm256_sllv_epi32(s, shift), 31));
        acc[c] = _mm256_sub_ps(_mm256_add_ps(acc[c], _mm256_and_ps(xs, ma)), _mm256_and_ps(xs, ms));
      }
    }
  }
  const __m256 sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
  return _mm_cvtss_f32(lo);
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


// diag(scale) B as a dense (R, columns) float32 matrix: the decode for batches where one GEMM on
// the dense matrix beats the GEMV above (scale omitted: the codes themselves). One pass over the
// words; the inner loop over a word's 32 bits is written for the compiler to vectorize.
torch::Tensor packed_unpack(torch::Tensor plus, c10::optional<torch::Tensor> neg,
                            c10::optional<torch::Tensor> scale, int64_t columns) {
  TORCH_CHECK(plus.dim() == 2 && plus.scalar_type() == torch::kInt32, "planes must be int32");
  const int64_t rows = plus.size(0), words = plus.size(1);
  TORCH_CHECK(words * 32 >= columns && columns > (words - 1) * 32,
              "columns do not fit the packed words");
  auto plus_c = plus.contiguous();
  torch::Tensor neg_c, scale_c;
  const uint32_t* negp = nullptr;
  const float* sd = nullptr;
  if (neg.has_value()) {
    neg_c = neg->contiguous();
    TORCH_CHECK(neg_c.sizes() == plus_c.sizes(), "planes differ in shape");
    negp = reinterpret_cast<const uint32_t*>(neg_c.data_ptr<int32_t>());
  }
  if (scale.has_value()) {
    scale_c = scale->contiguous().to(torch::kFloat32);
    TORCH_CHECK(scale_c.numel() == rows, "one scale per row");
    sd = scale_c.data_ptr<float>();
  }
  auto out = torch::empty({rows, columns}, plus.options().dtype(torch::kFloat32));
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

namespace {
torch::Tensor padded(const torch::Tensor& x, int64_t words) {
  auto xp = torch::zeros({x.size(0), words * 32}, x.options());
  xp.narrow(1, 0, x.size(1)).copy_(x);
  return xp;
}
const uint32_t* words_of(const c10::optional<torch::Tensor>& t) {
  return t.has_value() ? reinterpret_cast<const uint32_t*>(t->data_ptr<int32_t>()) : nullptr;
}
inline double sigmoid(double v) { return 1.0 / (1.0 + std::exp(-v)); }
}  // namespace

// One whole LSTM step from packed words (the CPU twin of the fused Triton step): for rows
// j, H + j, 2H + j, 3H + j the gate pre-activations ax * (B_x x) + ah * (B_h h) + shift, then
// c' = sigmoid(f) c + sigmoid(i) tanh(g), h' = sigmoid(o) tanh(c'). ax, ah, shift fold the
// per-row scales, a per-feature affine normalization and the bias. x (B, K), h and c (B, H)
// float32; planes contiguous int32 (R = 4H rows); returns {h', c'}.
std::vector<torch::Tensor> packed_lstm_step(torch::Tensor x, torch::Tensor h, torch::Tensor c,
                                            torch::Tensor ih_plus,
                                            c10::optional<torch::Tensor> ih_neg,
                                            torch::Tensor hh_plus,
                                            c10::optional<torch::Tensor> hh_neg,
                                            torch::Tensor ax, torch::Tensor ah,
                                            torch::Tensor shift) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && h.scalar_type() == torch::kFloat32 &&
              c.scalar_type() == torch::kFloat32, "x, h, c must be float32");
  const int64_t batch = x.size(0), hidden = h.size(1), rows = 4 * hidden;
  const int64_t wx = ih_plus.size(1), wh = hh_plus.size(1);
  TORCH_CHECK(ih_plus.size(0) == rows && hh_plus.size(0) == rows, "planes must have 4H rows");
  TORCH_CHECK(x.size(1) <= wx * 32 && hidden <= wh * 32, "inputs do not fit the packed words");
  auto xp = padded(x.contiguous(), wx), hp = padded(h.contiguous(), wh);
  auto cc = c.contiguous();
  auto gates = torch::empty({batch, rows}, x.options());
  const uint32_t* ip = reinterpret_cast<const uint32_t*>(ih_plus.data_ptr<int32_t>());
  const uint32_t* hp_w = reinterpret_cast<const uint32_t*>(hh_plus.data_ptr<int32_t>());
  const uint32_t* in_ = words_of(ih_neg);
  const uint32_t* hn = words_of(hh_neg);
  const float *axd = ax.data_ptr<float>(), *ahd = ah.data_ptr<float>(),
              *sd = shift.data_ptr<float>(), *xd = xp.data_ptr<float>(), *hd = hp.data_ptr<float>();
  float* gd = gates.data_ptr<float>();
  at::parallel_for(0, rows, 128, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t b = 0; b < batch; ++b) {
        const float gx = row_dot(ip + r * wx, in_ == nullptr ? nullptr : in_ + r * wx, wx,
                                 xd + b * wx * 32);
        const float gh = row_dot(hp_w + r * wh, hn == nullptr ? nullptr : hn + r * wh, wh,
                                 hd + b * wh * 32);
        gd[b * rows + r] = (float)((double)axd[r] * gx + (double)ahd[r] * gh + (double)sd[r]);
      }
    }
  });
  auto h_out = torch::empty({batch, hidden}, x.options());
  auto c_out = torch::empty({batch, hidden}, x.options());
  const float* cd = cc.data_ptr<float>();
  float *ho = h_out.data_ptr<float>(), *co = c_out.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b) {
    const float* g = gd + b * rows;
    for (int64_t j = 0; j < hidden; ++j) {
      // the few elementwise operations in double: as close to torch's as the products allow
      const double i = sigmoid(g[j]), f = sigmoid(g[hidden + j]);
      const double a = std::tanh((double)g[2 * hidden + j]), o = sigmoid(g[3 * hidden + j]);
      const double cn = f * cd[b * hidden + j] + i * a;
      co[b * hidden + j] = (float)cn;
      ho[b * hidden + j] = (float)(o * std::tanh(cn));
    }
  }
  return {h_out, c_out};
}
