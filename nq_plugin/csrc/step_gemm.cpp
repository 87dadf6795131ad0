// The loop's own GEMM for its step products y = x W^T (float32; AVX2 + FMA, AVX-512 where the
// build has it): W copied once a loop call into panels of 16 output columns, each panel (K, 16)
// contiguous (step_gemm_pack), and each step's product computed from x as it lies, over chunks
// of K whose panels stay in L1 while x's rows stream from L2 (the BLIS micro-kernel's shape, Van
// Zee & van de Geijn, ACM TOMS 2015):
// - AVX2: a 6 x 16 block of y in 12 registers, one broadcast of x and two loads of the panel
//   per 12 FMAs;
// - AVX-512: a 12 x 32 block (two panels side by side) in 24 of the 32 registers, one
//   broadcast of x per two FMAs and two loads of the panels per 24 (on an Intel Xeon with
//   AVX-512 the AVX2 kernel ran 0.73-0.77x MKL at the char size: half the vector width).
// A library sgemm copies its operands into panels of its own at every call: in the char-size
// training loop (one thread's 64 x 512 . 512 x 1024) MKL's copy routines took about 12 % of the
// cycles (perf, AMD EPYC Zen 3; 14 % on the Intel Xeon; benchmarks/README.md). Whether it runs
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
constexpr int64_t kPanel = 16;   // output columns a panel (two 256-bit registers, one 512-bit)
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

#ifdef __AVX512F__
#define NQ_STEP_GEMM_512 1
constexpr int64_t kRows512 = 12;  // a block's rows: 24 sums, two panel loads, one broadcast

// c (MR x 32, row stride ldc) = (first ? 0 : c) + a (MR x kc, row stride lda) . [b0 | b1]
// (two panels' chunks, each kc x 16)
template <int MR>
inline void block512(const float* __restrict a, int64_t lda, const float* __restrict b0,
                     const float* __restrict b1, int64_t kc, float* c, int64_t ldc, bool first) {
  static_assert(MR >= 1 && MR <= kRows512, "a block is 1 to 12 rows");
  __m512 s0_0 = _mm512_setzero_ps(), s0_1 = s0_0, s1_0 = s0_0, s1_1 = s0_0, s2_0 = s0_0;
  __m512 s2_1 = s0_0, s3_0 = s0_0, s3_1 = s0_0, s4_0 = s0_0, s4_1 = s0_0, s5_0 = s0_0;
  __m512 s5_1 = s0_0, s6_0 = s0_0, s6_1 = s0_0, s7_0 = s0_0, s7_1 = s0_0, s8_0 = s0_0;
  __m512 s8_1 = s0_0, s9_0 = s0_0, s9_1 = s0_0, s10_0 = s0_0, s10_1 = s0_0, s11_0 = s0_0;
  __m512 s11_1 = s0_0;
  // named registers, as in the AVX2 block
#define NQ_STEP_GEMM_ROW512(i)                           \
  if (MR > i) {                                          \
    const __m512 x = _mm512_set1_ps(a[i * lda + k]);     \
    s##i##_0 = _mm512_fmadd_ps(x, p0, s##i##_0);         \
    s##i##_1 = _mm512_fmadd_ps(x, p1, s##i##_1);         \
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 p0 = _mm512_loadu_ps(b0 + k * kPanel), p1 = _mm512_loadu_ps(b1 + k * kPanel);
    NQ_STEP_GEMM_ROW512(0)
    NQ_STEP_GEMM_ROW512(1)
    NQ_STEP_GEMM_ROW512(2)
    NQ_STEP_GEMM_ROW512(3)
    NQ_STEP_GEMM_ROW512(4)
    NQ_STEP_GEMM_ROW512(5)
    NQ_STEP_GEMM_ROW512(6)
    NQ_STEP_GEMM_ROW512(7)
    NQ_STEP_GEMM_ROW512(8)
    NQ_STEP_GEMM_ROW512(9)
    NQ_STEP_GEMM_ROW512(10)
    NQ_STEP_GEMM_ROW512(11)
  }
#undef NQ_STEP_GEMM_ROW512
  const __m512 sums[kRows512][2] = {{s0_0, s0_1}, {s1_0, s1_1}, {s2_0, s2_1}, {s3_0, s3_1},
                                    {s4_0, s4_1}, {s5_0, s5_1}, {s6_0, s6_1}, {s7_0, s7_1},
                                    {s8_0, s8_1}, {s9_0, s9_1}, {s10_0, s10_1}, {s11_0, s11_1}};
  for (int i = 0; i < MR; ++i) {
    float* ci = c + i * ldc;
    if (first) {
      _mm512_storeu_ps(ci, sums[i][0]);
      _mm512_storeu_ps(ci + kPanel, sums[i][1]);
    } else {
      _mm512_storeu_ps(ci, _mm512_add_ps(sums[i][0], _mm512_loadu_ps(ci)));
      _mm512_storeu_ps(ci + kPanel, _mm512_add_ps(sums[i][1], _mm512_loadu_ps(ci + kPanel)));
    }
  }
}

inline void rows_block512(int64_t rows, const float* a, int64_t lda, const float* b0,
                          const float* b1, int64_t kc, float* c, int64_t ldc, bool first) {
  switch (rows) {
    case 12: block512<12>(a, lda, b0, b1, kc, c, ldc, first); break;
    case 11: block512<11>(a, lda, b0, b1, kc, c, ldc, first); break;
    case 10: block512<10>(a, lda, b0, b1, kc, c, ldc, first); break;
    case 9: block512<9>(a, lda, b0, b1, kc, c, ldc, first); break;
    case 8: block512<8>(a, lda, b0, b1, kc, c, ldc, first); break;
    case 7: block512<7>(a, lda, b0, b1, kc, c, ldc, first); break;
    case 6: block512<6>(a, lda, b0, b1, kc, c, ldc, first); break;
    case 5: block512<5>(a, lda, b0, b1, kc, c, ldc, first); break;
    case 4: block512<4>(a, lda, b0, b1, kc, c, ldc, first); break;
    case 3: block512<3>(a, lda, b0, b1, kc, c, ldc, first); break;
    case 2: block512<2>(a, lda, b0, b1, kc, c, ldc, first); break;
    default: block512<1>(a, lda, b0, b1, kc, c, ldc, first);
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
  // (panels, K, 16): panel p's row k holds W[16p .. 16p + 15, k], zeros past N. W is read
  // through its strides, as it lies: the backward's W_h^T parts are views of W_h, whose rows
  // are a panel's rows (a contiguous copy of such a part first cost more than the packing)
  at::Tensor packed = at::empty({panels, k, kPanel}, weight.options());
  const float* src = weight.data_ptr<float>();
  const int64_t s0 = weight.stride(0), s1 = weight.stride(1);
  float* dst = packed.data_ptr<float>();
  at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      float* out = dst + p * k * kPanel;
      for (int64_t i = 0; i < k; ++i)
        for (int64_t j = 0; j < kPanel; ++j) {
          const int64_t row = p * kPanel + j;
          out[i * kPanel + j] = row < n ? src[row * s0 + i * s1] : 0.f;
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
#ifdef NQ_STEP_GEMM_512
  const int64_t pairs = (n / kPanel) / 2;  // two full panels side by side: the 12 x 32 blocks
  // the rows in blocks of at most 12, as even as they go (64 rows: 11, 11, 11, 11, 10, 10, not
  // five of 12 and one of 4, whose 8 sums cannot hide the FMAs' latency)
  const int64_t row_blocks = (m + kRows512 - 1) / kRows512;
#else
  const int64_t pairs = 0;
#endif
  for (int64_t k0 = 0; k0 < k; k0 += kBlockK) {
    const int64_t kc = std::min(kBlockK, k - k0);
    const bool first = k0 == 0;
#ifdef NQ_STEP_GEMM_512
    for (int64_t q = 0; q < pairs; ++q) {
      const float* b0 = bp + (2 * q * k + k0) * kPanel;
      const float* b1 = b0 + k * kPanel;
      for (int64_t block = 0, i = 0; block < row_blocks; ++block) {
        const int64_t rows = m / row_blocks + (block < m % row_blocks ? 1 : 0);
        rows_block512(rows, a + i * lda + k0, lda, b0, b1, kc, c + i * ldc + 2 * q * kPanel,
                      ldc, first);
        i += rows;
      }
    }
#endif
    for (int64_t p = 2 * pairs; p < panels; ++p) {  // the AVX2 blocks: every panel, or those left
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
