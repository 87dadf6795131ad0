"""The pieces under the token-by-token step, timed side by side in one run (eval mode, no grad):

1. One matrix-vector product of the recurrent shape (4H x H, one activation row): the packed
   kernel from the 1-bit and the 2-bit words (``packed_gemv``, fp32 lookup tables over pairs of
   inputs; ``packed_gemv_q8``, the optional int8-activation mode's vpshufb tables over groups of
   4), against torch's int8 dynamic linear and fp32 ``F.linear`` on the same matrix.
2. The unpacked layer's two eval executors on its cached weights: the native loop with W_h kept
   in oneDNN's layout (``NQLSTMLayer._loop`` + ``_recurrent_layout``) and torch's fused LSTM
   (``_fused``), for single steps (T=1, B=1) and eval-lm's sequences (T=100, B=8) -- the
   numbers behind the layer's choice (``NQLSTMLayer.forward``: single steps take the loop).

    python benchmarks/eval_paths.py [--hidden 512 2000] [--rounds 7]

Medians over interleaved rounds. Benchmark on an idle machine.
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from nq_plugin import native
from nq_plugin.nn.lstm import NQLSTMLayer
from nq_plugin.packed.format import pack_matrix, word_planes
from nq_plugin.packed.kernels import native as native_kernel


def timed(fn, repeat):
    fn()
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat


def interleaved(cases, rounds, repeat):
    """{name: median seconds per call}, the cases taking turns each round."""
    times = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            times[name].append(timed(fn, repeat))
    return {name: statistics.median(v) for name, v in times.items()}


def product_cases(hidden):
    rows, cols = 4 * hidden, hidden
    x = torch.randn(1, cols)
    codes_b = torch.randint(0, 2, (rows, cols)).float() * 2 - 1
    codes_t = torch.randint(-1, 2, (rows, cols)).float()
    scale = torch.rand(rows) + 0.5
    ext = native.extension()
    planes_b = word_planes(pack_matrix(codes_b, 1), 1)
    planes_t = word_planes(pack_matrix(codes_t, 2), 2)
    q8_b = native_kernel.q8_layout(pack_matrix(codes_b, 1), 1)
    q8_t = native_kernel.q8_layout(pack_matrix(codes_t, 2), 2)
    dense = codes_t * scale[:, None]
    int8 = torch.ao.nn.quantized.dynamic.Linear(cols, rows, bias_=False)
    int8.set_weight_bias(torch.quantize_per_channel(
        dense, scale / 127, torch.zeros(rows, dtype=torch.long), 0, torch.qint8), None)
    with torch.no_grad():  # correctness of what is timed, on this matrix
        exact = x @ dense.t()
        got = ext.packed_gemv(x, planes_t[0], planes_t[1], scale, cols)
        assert torch.allclose(got, exact, rtol=1e-4, atol=1e-3), "ternary product differs"
    return {
        "packed 1-bit": lambda: ext.packed_gemv(x, planes_b[0], None, scale, cols),
        "packed 2-bit": lambda: ext.packed_gemv(x, planes_t[0], planes_t[1], scale, cols),
        "packed 1-bit q8": lambda: ext.packed_gemv_q8(x, q8_b[0], None, scale, rows, cols),
        "packed 2-bit q8": lambda: ext.packed_gemv_q8(x, q8_t[0], q8_t[1], scale, rows, cols),
        "int8 dynamic": lambda: int8(x),
        "fp32 linear": lambda: F.linear(x, dense),
    }, {"packed 1-bit": rows * cols / 8, "packed 2-bit": rows * cols / 4,
        "packed 1-bit q8": rows * cols / 8, "packed 2-bit q8": rows * cols / 4,
        "int8 dynamic": rows * cols, "fp32 linear": 4 * rows * cols}


def layer_cases(hidden, steps, batch):
    layer = NQLSTMLayer(hidden // 4, hidden, quantizer="bc", norm="weight").eval()
    x = torch.randn(steps, batch, hidden // 4)
    zeros = torch.zeros(batch, hidden)
    w_ih, w_hh = layer.effective_weights()
    layout = layer._recurrent_layout(w_hh, batch)
    with torch.no_grad():
        loop = layer._loop(x, (zeros, zeros), w_ih, w_hh, 0, layout)[0]
        fused = layer._fused(x, (zeros, zeros), w_ih, w_hh)[0]
        assert torch.allclose(loop, fused, atol=1e-4), "the two executors differ"
    return {
        "native loop (kept layout)": lambda: layer._loop(x, (zeros, zeros), w_ih, w_hh, 0, layout),
        "torch fused LSTM": lambda: layer._fused(x, (zeros, zeros), w_ih, w_hh),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, nargs="+", default=[512, 2000])
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with torch.no_grad():
        print("\n1. one product, 4H x H matrix, one activation row (ms; bytes of the matrix)")
        for h in args.hidden:
            cases, nbytes = product_cases(h)
            med = interleaved(cases, args.rounds, 200 if h <= 512 else 50)
            base = med["int8 dynamic"]
            for name, s in med.items():
                print(f"H={h:5d}  {name:16s} {1e3 * s:8.3f} ms  {nbytes[name] / 2**20:7.2f} MiB  "
                      f"int8 / this {base / s:5.2f}x")
        print("\n2. unpacked layer (bc + weight), eval executors on the cached weights (ms a call)")
        for h in args.hidden:
            for steps, batch in ((1, 1), (100, 8)):
                if steps > 1 and h > 512:
                    continue  # eval-lm shapes: the char models' H
                med = interleaved(layer_cases(h, steps, batch), args.rounds,
                                  100 if steps == 1 else 3)
                fused = med["torch fused LSTM"]
                for name, s in med.items():
                    print(f"H={h:5d} T={steps:3d} B={batch}  {name:26s} {1e3 * s:8.3f} ms  "
                          f"fused / this {fused / s:5.2f}x")


if __name__ == "__main__":
    main()
