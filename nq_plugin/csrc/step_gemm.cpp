// The loop's own GEMM for its step products y = x W^T (float32, AVX2 + FMA): W copied once a
// loop call into panels of 16 output columns, each panel (K, 16) contiguous (step_gemm_pack),
// and each step's product computed from x as it lies -- a 6 x 16 block of y in 12 registers,
// one broadcast of x and two loads of the panel per 12 FMAs, over chunks of K whose panel stays
// in L1 while x's rows stream from L2 (the BLIS micro-kernel's shape, Van Zee & van de Geijn,
// ACM TOMS 2015). A library sgemm copies its operands into panels of its own at every call: in
// the char-size training loop (one thread's 64 x 512 . 512 x 1024) MKL's copy routines took
// about 12 % of the cycles (perf, AMD EPYC Zen 3; benchmarks/README.md). Whether it runs
// faster than the library's product is timed per shape by the planner
// (nq_plugin/nn/step_products.py, part_layout; benchmarks/step_gemm_kernel.py).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define NQ_STEP_GEMM 1
#endif

#include "native.h"

namespace {
constexpr int64_t kPanel = 16;   // output columns a panel (two 256-bit registers)
constexpr int64_t kBlockK = 256;  // inputs a chunk: a panel's chunk is 16 KB, in L1

#ifdef NQ_STEP_GEMM
// c (MR x 16, row stride ldc) = (first ? 0 : c) + a (MR x kc, row stride lda) . b (kc x 16)
template <int MR>
inline void block(const float* __restrict a, int64_t lda, const float* __restrict b, int64_t kc,
                  float* c, int64_t ldc, bool first) {
  static_assert(MR >= 1 && MR <= 6, "a block is 1 to 6 rows");
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  // named registers, not an array: GCC kept an array's sums in memory (2.5x slower). Row i of
  // the block: its x broadcast, times the panel's two halves into its two sums.
#define NQ_STEP_GEMM_ROW(i)                                \
  if (MR > i) {                                            \
    const __m256 x = _mm256_broadcast_ss(a + i * lda + k); \
    c##i##0 = _mm256_fmadd_ps(x, b0, c##i##0);             \
    c##i##1 = _mm256_fmadd_ps(x, b1, c##i##1);             \
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b + k * kPanel), b1 = _mm256_loadu_ps(b + k * kPanel + 8);
    NQ_STEP_GEMM_ROW(0)
    NQ_STEP_GEMM_ROW(1)
    NQ_STEP_GEMM_ROW(2)
    NQ_STEP_GEMM_ROW(3)
    NQ_STEP_GEMM_ROW(4)
    NQ_STEP_GEMM_ROW(5)
  }
#undef NQ_STEP_GEMM_ROW
  const __m256 sums[6][2] = {{c00, c01}, {c10, c11}, {c20, c21},
                             {c30, c31}, {c40, c41}, {c50, c51}};
  for (int i = 0; i < MR; ++i) {
    float* ci = c + i * ldc;
    if (first) {
      _mm256_storeu_ps(ci, sums[i][0]);
      _mm256_storeu_ps(ci + 8, sums[i][1]);
    } else {
      _mm256_storeu_ps(ci, _mm256_add_ps(sums[i][0], _mm256_loadu_ps(ci)));
      _mm256_storeu_ps(ci + 8, _mm256_add_ps(sums[i][1], _mm256_loadu_ps(ci + 8)));
    }
  }
}

inline void rows_block(int64_t rows, const float* a, int64_t lda, const float* b, int64_t kc,
                       float* c, int64_t ldc, bool first) {
  switch (rows) {
    case 6: block<6>(a, lda, b, kc, c, ldc, first); break;
    case 5: block<5>(a, lda, b, kc, c, ldc, first); break;
    case 4: block<4>(a, lda, b, kc, c, ldc, first); break;
    case 3: block<3>(a, lda, b, kc, c, ldc, first); break;
    case 2: block<2>(a, lda, b, kc, c, ldc, first); break;
    default: block<1>(a, lda, b, kc, c, ldc, first);
  }
}
#endif
}  // namespace

bool step_gemm_supported() {
#ifdef NQ_STEP_GEMM
  return true;
#else
  return false;
#endif
}

at::Tensor step_gemm_pack(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == at::kFloat && weight.device().is_cpu(),
              "step_gemm_pack takes a 2-D float32 CPU weight (N, K), got ", weight.sizes(), " ",
              weight.scalar_type());
  const int64_t n = weight.size(0), k = weight.size(1);
  const int64_t panels = (n + kPanel - 1) / kPanel;
  // (panels, K, 16): panel p's row k holds W[16p .. 16p + 15, k], zeros past N
  at::Tensor packed = at::empty({panels, k, kPanel}, weight.options());
  const at::Tensor w = weight.contiguous();
  const float* src = w.data_ptr<float>();
  float* dst = packed.data_ptr<float>();
  at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      float* out = dst + p * k * kPanel;
      for (int64_t i = 0; i < k; ++i)
        for (int64_t j = 0; j < kPanel; ++j) {
          const int64_t row = p * kPanel + j;
          out[i * kPanel + j] = row < n ? src[row * k + i] : 0.f;
        }
    }
  });
  return packed;
}

void step_gemm_out(at::Tensor& out, const at::Tensor& x, const at::Tensor& packed) {
  TORCH_CHECK(step_gemm_supported(), "the step GEMM needs an AVX2 and FMA build of the "
              "extension: plan plain products (nq_plugin/nn/step_products.py)");
  TORCH_CHECK(x.dim() == 2 && out.dim() == 2 && packed.dim() == 3 &&
              x.scalar_type() == at::kFloat && out.scalar_type() == at::kFloat &&
              x.size(0) == out.size(0) && packed.size(1) == x.size(1) &&
              packed.size(2) == kPanel && packed.size(0) * kPanel >= out.size(1) &&
              packed.size(0) * kPanel < out.size(1) + kPanel,
              "step_gemm_out: out (M, N) = x (M, K) . packed (ceil(N / 16), K, 16) in float32, "
              "got out ", out.sizes(), ", x ", x.sizes(), ", packed ", packed.sizes());
  TORCH_CHECK(x.stride(1) == 1 && out.stride(1) == 1 && packed.is_contiguous(),
              "step_gemm_out: the rows of x and out must be contiguous");
#ifdef NQ_STEP_GEMM
  const int64_t m = x.size(0), n = out.size(1), k = x.size(1);
  const int64_t lda = x.stride(0), ldc = out.stride(0);
  const float* a = x.data_ptr<float>();
  const float* bp = packed.data_ptr<float>();
  float* c = out.data_ptr<float>();
  const int64_t panels = packed.size(0);
  if (k == 0) {
    out.zero_();
    return;
  }
  alignas(32) float edge[6 * kPanel];  // the last panel's block where N is not a multiple of 16
  for (int64_t k0 = 0; k0 < k; k0 += kBlockK) {
    const int64_t kc = std::min(kBlockK, k - k0);
    const bool first = k0 == 0;
    for (int64_t p = 0; p < panels; ++p) {
      const float* b = bp + (p * k + k0) * kPanel;
      const int64_t width = std::min(kPanel, n - p * kPanel);
      for (int64_t i = 0; i < m; i += 6) {
        const int64_t rows = std::min<int64_t>(6, m - i);
        float* ci = c + i * ldc + p * kPanel;
        if (width == kPanel) {
          rows_block(rows, a + i * lda + k0, lda, b, kc, ci, ldc, first);
          continue;
        }
        for (int64_t r = 0; r < rows; ++r)
          std::memcpy(edge + r * kPanel, ci + r * ldc, sizeof(float) * (first ? 0 : width));
        rows_block(rows, a + i * lda + k0, lda, b, kc, edge, kPanel, first);
        for (int64_t r = 0; r < rows; ++r)
          std::memcpy(ci + r * ldc, edge + r * kPanel, sizeof(float) * width);
      }
    }
  }
#endif
}
