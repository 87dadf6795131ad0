// The extension's functions (defined in packed_gemv.cpp, packed_step.cpp and recurrence.cpp,
// bound to Python in bindings.cpp): one declaration each, included by the definitions so that
// they cannot drift.
#pragma once
#include <ATen/ATen.h>
#include <vector>

// lookup: the lookup's number (packed_products.h, Lookup: 0 pairs, 1 nibbles; not 2, the
// triples, which read a fused step's layouts)
at::Tensor packed_gemv(at::Tensor x, at::Tensor plus, c10::optional<at::Tensor> neg,
                       at::Tensor scale, int64_t columns, int64_t lookup);
// whether the nibble lookup (AVX-512 F and VL) runs on this CPU and build
bool packed_nibbles_supported();
// whether the triples lookup of a fused step's products (AVX2) runs on this build
bool packed_triples_supported();
// a ternary product's time by the pair lookup over its time by the triples, measured on this
// CPU (a few milliseconds; 0 where the triples do not run): lookup_choice's evidence
double packed_triples_speedup();
// whether the wide lookup of a fused step's W_h (AVX-512 F) runs on this CPU and build
bool packed_wide_supported();
// The fixed operands of packed_lstm_step for one packed layer, resolved once per stepper
// (nq_plugin/packed/kernels/native.py, lstm_stepper): both matrices' word planes (the minus
// plane only for 2-bit matrices), each term's layer norm (the per-row scale `pre_*` and eps;
// none: the term is not layer-normalized), W_h's int8-activation layout (inexact mode), the
// lookup of the fp32 products (packed_products.h, Lookup: 0 pairs, 1 nibbles, 2 triples) and,
// optional, each matrix's lane layout (packed_products.h, RowBlock: (4 ceil(H / 8), words, 8)
// int32, the blocks of each gate's rows; read instead of the planes, which are then only
// checked) -- under the triples lookup, required: each matrix's triples layout in the same
// fields and shape, words of 30 inputs (packed_triples.cpp).
struct PackedStepOperands {
  at::Tensor ih_plus, hh_plus;
  c10::optional<at::Tensor> ih_neg, hh_neg;
  c10::optional<at::Tensor> pre_x, pre_h;
  double eps_x = 0.0, eps_h = 0.0;
  c10::optional<at::Tensor> hh_q8_add, hh_q8_sub;
  int64_t lookup = 0;
  c10::optional<at::Tensor> ih_lane_add, ih_lane_sub, hh_lane_add, hh_lane_sub;
  // W_x's and W_h's wide layouts (packed_products.h): their products by the wide lookup
  // (AVX-512 F), exact as the others
  c10::optional<at::Tensor> ih_wide, hh_wide;
};

std::vector<at::Tensor> packed_lstm_step(at::Tensor x, at::Tensor h, at::Tensor c,
                                         at::Tensor ax, at::Tensor ah,
                                         at::Tensor shift,
                                         const PackedStepOperands& m);
// packed_lstm_step in a one-layer model's shapes: x (1, B, K), h, c (1, B, H) -> {out, h', c'}
std::vector<at::Tensor> packed_lstm_token_step(at::Tensor x, at::Tensor h, at::Tensor c,
                                               at::Tensor ax, at::Tensor ah, at::Tensor shift,
                                               const PackedStepOperands& m);
// a copy of t on transparent huge pages where it spans at least one (Linux; else a plain copy)
at::Tensor huge_page_copy(const at::Tensor& t);
at::Tensor packed_gemv_q8(at::Tensor x, at::Tensor add, c10::optional<at::Tensor> sub,
                          at::Tensor scale, int64_t rows, int64_t columns);
at::Tensor packed_unpack(at::Tensor plus, c10::optional<at::Tensor> neg,
                         c10::optional<at::Tensor> scale, int64_t columns);

// One normalization's native form (nq_plugin/norm/base.py, NativeForm) as the recurrence takes
// it, for either term: the operation's number (native_ops.h), eps, its two (S, F) tensors, the
// running statistics' momentum, PowerNorm's forward / backward accumulators and its nu.
struct NormTerm {
  int64_t op = 0;
  double eps = 0.0;
  c10::optional<at::Tensor> first, second;
  double momentum = 0.0;
  c10::optional<at::Tensor> accum_forward, accum_backward, nu;
};

// A step product y = x W^T's weights as the caller planned them (nq_plugin/nn/step_products.py,
// step_weights): one part, the whole W, and the team splits the batch rows; or one part per
// thread of the team, its output columns of y for the whole batch. Every part in one layout:
// plain, (K, N_part) contiguous, for at::mm; oneDNN's blocked layout (for
// mkldnn::_linear_pointwise); or the step GEMM's panels (step_gemm_pack, float32).
enum class StepLayout : int64_t { kPlain = 0, kOneDnn = 1, kPanels = 2 };
struct StepWeights {
  StepLayout layout = StepLayout::kPlain;
  std::vector<at::Tensor> parts;
};

// The loop's own GEMM for its step products (step_gemm.cpp; AVX2 and FMA builds): whether this
// build has it; weight (N, K) in panels of 16 of its rows, (ceil(N / 16), K, 16); out (M, N) =
// x (M, K) weight^T from those panels (rows of x and out contiguous, their strides free)
bool step_gemm_supported();
// the team's time a product x (B, K) weight^T as planned in `step` (each thread its columns
// for all of x's rows, meeting after each product as the loop does, or its rows times the
// whole weight): best of `rounds` rounds of `calls` products, seconds a product -- what the
// planner's choice of layout compares (nq_plugin/nn/step_products.py)
double step_product_seconds(const at::Tensor& x, const at::Tensor& weight,
                            const StepWeights& step, int64_t rounds, int64_t calls);
at::Tensor step_gemm_pack(const at::Tensor& weight);
// each row's column where every row of x (rows, K) is one-hot, else an undefined tensor
// (recurrence.cpp: the fused input projection of one-hot inputs is a copy of W_x^T's rows)
at::Tensor one_hot_columns(const at::Tensor& x);
void step_gemm_out(at::Tensor& out, const at::Tensor& x, const at::Tensor& packed);

std::vector<at::Tensor> recurrence_forward(
    at::Tensor px, at::Tensor h0, at::Tensor c0, at::Tensor w_hh, at::Tensor shift,
    c10::optional<at::Tensor> gain_x, c10::optional<at::Tensor> gain_h, const NormTerm& x,
    const NormTerm& h, int64_t t0, bool keep, c10::optional<at::Tensor> w_x,
    const StepWeights& step);

std::vector<at::Tensor> recurrence_backward(
    c10::optional<at::Tensor> grad_out, c10::optional<at::Tensor> grad_h,
    c10::optional<at::Tensor> grad_c, at::Tensor px, at::Tensor h0, at::Tensor c0,
    at::Tensor out, at::Tensor c_all, std::vector<at::Tensor> acts,
    std::vector<at::Tensor> z_hat, at::Tensor stats_x, at::Tensor stats_h, at::Tensor w_hh,
    c10::optional<at::Tensor> gain_x, c10::optional<at::Tensor> gain_h, const NormTerm& x,
    const NormTerm& h, int64_t t0, c10::optional<at::Tensor> w_x, bool grad_input,
    const StepWeights& step);
