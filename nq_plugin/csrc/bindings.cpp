// The plugin's one native extension (nq_plugin/native.py builds it on first use): the packed
// inference kernel and the normalized LSTM recurrence.
#include <torch/python.h>  // pybind11 and its Tensor casters; not torch/all.h (build time)

#include <map>
#include <string>

#include "native.h"
#include "native_ops.h"

namespace {
std::map<std::string, int64_t> native_ops() {
  std::map<std::string, int64_t> ops;
#define NQ_OP(name, value) ops[#name] = value;
  NQ_NATIVE_OPS(NQ_OP)
#undef NQ_OP
  return ops;
}
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("packed_gemv", &packed_gemv, "x W^T from packed 1/2-bit words (fp32 activations)");
  py::class_<PackedStepOperands>(m, "PackedStepOperands",
                                 "packed_lstm_step's fixed operands for one packed layer")
      .def(py::init<>())
      .def_readwrite("ih_plus", &PackedStepOperands::ih_plus)
      .def_readwrite("ih_neg", &PackedStepOperands::ih_neg)
      .def_readwrite("hh_plus", &PackedStepOperands::hh_plus)
      .def_readwrite("hh_neg", &PackedStepOperands::hh_neg)
      .def_readwrite("pre_x", &PackedStepOperands::pre_x)
      .def_readwrite("pre_h", &PackedStepOperands::pre_h)
      .def_readwrite("eps_x", &PackedStepOperands::eps_x)
      .def_readwrite("eps_h", &PackedStepOperands::eps_h)
      .def_readwrite("hh_q8_add", &PackedStepOperands::hh_q8_add)
      .def_readwrite("hh_q8_sub", &PackedStepOperands::hh_q8_sub)
      .def_readwrite("lookup", &PackedStepOperands::lookup)
      .def_readwrite("ih_lane_add", &PackedStepOperands::ih_lane_add)
      .def_readwrite("ih_lane_sub", &PackedStepOperands::ih_lane_sub)
      .def_readwrite("hh_lane_add", &PackedStepOperands::hh_lane_add)
      .def_readwrite("hh_lane_sub", &PackedStepOperands::hh_lane_sub)
      .def_readwrite("ih_wide", &PackedStepOperands::ih_wide)
      .def_readwrite("hh_wide", &PackedStepOperands::hh_wide);
  m.def("packed_nibbles_supported", &packed_nibbles_supported,
        "whether the nibble lookup of packed products (AVX-512 F and VL) runs here");
  m.def("packed_triples_supported", &packed_triples_supported,
        "whether the triples lookup of a packed step's products (AVX2) runs here");
  m.def("packed_triples_speedup", &packed_triples_speedup,
        "a ternary product's time by the pair lookup over its time by the triples, measured "
        "here (0 where the triples do not run)");
  m.def("packed_wide_supported", &packed_wide_supported,
        "whether the wide lookup of a packed step's W_h (AVX-512 F) runs here");
  m.def("packed_lstm_step", &packed_lstm_step,
        "one LSTM step from packed 1/2-bit words (gates, cell), fp32");
  m.def("packed_lstm_token_step", &packed_lstm_token_step,
        "packed_lstm_step in a one-layer model's shapes: x (1, B, K), h, c (1, B, H) -> "
        "(output, h, c), each (1, B, H)");
  m.def("huge_page_copy", &huge_page_copy,
        "a copy of a CPU tensor on transparent huge pages where it spans one (Linux)");
  m.def("packed_gemv_q8", &packed_gemv_q8,
        "x W^T from the nibble layout of packed 1/2-bit words, int8 activations (inexact mode)");
  m.def("packed_unpack", &packed_unpack, "diag(scale) B from packed 1/2-bit words, dense fp32");
  m.def("recurrence_forward", &recurrence_forward,
        "normalized LSTM time loop, forward (nq_plugin/nn/recurrence.py)");
  py::class_<NormTerm>(m, "NormTerm",
                       "one normalization's native form for the recurrence (NativeForm)")
      .def(py::init<>())
      .def_readwrite("op", &NormTerm::op)
      .def_readwrite("eps", &NormTerm::eps)
      .def_readwrite("first", &NormTerm::first)
      .def_readwrite("second", &NormTerm::second)
      .def_readwrite("momentum", &NormTerm::momentum)
      .def_readwrite("accum_forward", &NormTerm::accum_forward)
      .def_readwrite("accum_backward", &NormTerm::accum_backward)
      .def_readwrite("nu", &NormTerm::nu);
  py::enum_<StepLayout>(m, "StepLayout", "the layout of a step product's weight parts")
      .value("PLAIN", StepLayout::kPlain)
      .value("ONEDNN", StepLayout::kOneDnn)
      .value("PANELS", StepLayout::kPanels);
  py::class_<StepWeights>(m, "StepWeights",
                          "a step product's weights as planned (nn/step_products.py): the whole "
                          "W, or one part per thread; plain (K, N_part), oneDNN's layout or the "
                          "step GEMM's panels")
      .def(py::init<>())
      .def_readwrite("layout", &StepWeights::layout)
      .def_readwrite("parts", &StepWeights::parts);
  m.def("step_gemm_supported", &step_gemm_supported,
        "whether this build has the loop's own step GEMM (AVX2 and FMA)");
  m.def("step_product_seconds", &step_product_seconds,
        "the team's time a step product x weight^T as planned (best of rounds x calls)");
  m.def("one_hot_columns", [](const at::Tensor& x) -> c10::optional<at::Tensor> {
    at::Tensor index = one_hot_columns(x);
    return index.defined() ? c10::optional<at::Tensor>(index) : c10::nullopt;
  }, "each row's column where every row of x (rows, K) is one-hot, else None");
  m.def("step_gemm_pack", &step_gemm_pack,
        "weight (N, K) float32 in the step GEMM's panels: (ceil(N / 16), K, 16)");
  m.def("step_gemm", [](at::Tensor out, const at::Tensor& x, const at::Tensor& packed) {
    step_gemm_out(out, x, packed);
    return out;
  }, "out (M, N) = x (M, K) weight^T from step_gemm_pack's panels; returns out");
  m.def("native_ops", &native_ops,
        "the recurrence's operations by name (native_ops.h): what NativeForm.op names");
  m.def("recurrence_backward", &recurrence_backward,
        "normalized LSTM time loop, backward (nq_plugin/nn/recurrence.py)");
}
