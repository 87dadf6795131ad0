"""One token at a time (batch 1, T=1, state carried, eval mode, no grad) -- what generation and
streaming scoring do -- for NQLSTM (BinaryConnect + weight norm, cached eval weights), the packed
models (binary and ternary; exact, and with the optional int8 activations of the recurrent
product, ``set_activations("int8")``), torch.nn.LSTM fp32 and torch's int8 dynamic LSTM, side by
side in one run, with each one's weight memory (the matrices' bytes; biases and scales aside).
The exact packed steps run with each table lookup this CPU has (``NQ_PLUGIN_LOOKUP``: wide
and nibbles with AVX-512, triples in an AVX2 build, pairs everywhere), each in its row.

    python benchmarks/inference_step.py [--hidden 512 2000] [--steps 200] [--rounds 5]

Prints the median time per step of each, the ratio to nn.LSTM fp32 and to int8. Benchmark on an idle
machine: other jobs on the cores make the numbers meaningless.
"""
import argparse
import copy
import statistics
import time

import torch

from nq_plugin import backend
from nq_plugin.nn import NQLSTM
from nq_plugin.packed.kernels import native
from nq_plugin.packed.lstm import PackedNQLSTM

INPUTS = {512: 53, 2000: 27}  # one-hot input widths of the PTB char and text8 models


def per_step(step, steps):
    h = None
    t = time.perf_counter()
    for _ in range(steps):
        h = step(h)
    return (time.perf_counter() - t) / steps


def cpu_flags() -> str:
    try:
        flags = next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(f for f in ("avx2", "avx512f", "avx512vl", "avx512_vnni") if f in flags) \
        or "none"


def cpu_name() -> str:
    try:
        return next(l for l in open("/proc/cpuinfo")
                    if l.startswith("model name")).split(":", 1)[1].strip()
    except (OSError, StopIteration):
        return "unknown"


def int8_lstm(lstm):
    """torch's int8 dynamic LSTM of ``lstm`` (what a user picks today for a 4x smaller LSTM):
    ``quantize_dynamic``, or -- where this torch's ``quantize_dynamic`` returns the LSTM
    unquantized (2.13) -- the dynamic-quantized module built from it directly; None if neither
    exists."""
    int8 = torch.ao.quantization.quantize_dynamic(lstm, {torch.nn.LSTM}, dtype=torch.qint8)
    if type(int8) is not torch.nn.LSTM:
        return int8
    try:
        from torch.ao.nn.quantized.dynamic import LSTM as DynamicLSTM
        lstm.qconfig = torch.ao.quantization.default_dynamic_qconfig
        return DynamicLSTM.from_float(lstm)
    except Exception as err:  # noqa: BLE001  removed in a later torch
        print(f"(no int8 dynamic LSTM: {err})")
        return None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, nargs="+", default=[512, 2000])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, CPU: {cpu_name()}, vector flags: {cpu_flags()}")
    ext = native.load()
    lookups = (["wide", "nibbles"]
               if ext.packed_nibbles_supported() and ext.packed_wide_supported() else [])
    lookups += ["triples", "pairs"] if ext.packed_triples_supported() else ["pairs"]
    print(f"table lookups of the exact packed steps measured: {', '.join(lookups)}")
    if ext.packed_triples_supported():
        print(f"auto's choice here: {native.lookup_choice()} (the triples measured "
              f"{native.triples_speedup():.2f}x the pairs, native.triples_speedup)")
    torch.manual_seed(0)
    for hidden in a.hidden:
        inp = INPUTS.get(hidden, 64)
        x = torch.zeros(1, 1, inp)
        x[0, 0, 3] = 1.0
        nq = NQLSTM(inp, hidden, quantizer="bc", norm="weight").eval()
        packed = PackedNQLSTM.from_lstm(nq).eval()
        ternary = PackedNQLSTM.from_lstm(NQLSTM(inp, hidden, quantizer="tc", norm="weight").eval())
        ref = torch.nn.LSTM(inp, hidden).eval()
        int8 = int8_lstm(torch.nn.LSTM(inp, hidden).eval())

        def step_of(model):
            def step(state):
                return model(x, state)[1]
            return step

        # the optional inexact mode: h quantized to int8 for the recurrent product
        packed_q8 = copy.deepcopy(packed).set_activations("int8")
        ternary_q8 = copy.deepcopy(ternary).set_activations("int8")
        variants = {"NQLSTM bc+weight (cached)": step_of(nq)}
        lookup_of = {}  # the rows measured with a lookup chosen for them
        for lookup in lookups:
            for name, model in (("packed bc+weight", packed), ("packed tc+weight", ternary)):
                row = f"{name} [{lookup}]"
                variants[row] = step_of(copy.deepcopy(model))
                lookup_of[row] = lookup
        variants.update({"packed bc+weight, int8 h": step_of(packed_q8),
                         "packed tc+weight, int8 h": step_of(ternary_q8),
                         "nn.LSTM fp32": step_of(ref)})
        # weight memory: fp32 matrices (NQLSTM: the latent weights, the cached quantized copy
        # and W_h's kept oneDNN layout); the packed words; int8's one byte per weight
        matrices = 4 * hidden * (inp + hidden)
        memory = {"NQLSTM bc+weight (cached)": 4 * (2 * matrices + 4 * hidden * hidden),
                  "nn.LSTM fp32": 4 * matrices,
                  **{row: word_bytes(packed if "bc" in row else ternary) for row in lookup_of},
                  # the wide lookup also keeps W_h's wide layout (a byte per 5 / 3 weights)
                  **{row: word_bytes(packed if "bc" in row else ternary)
                     + 4 * hidden * -(-hidden // (20 if "bc" in row else 12)) * 4
                     for row in lookup_of if lookup_of[row] == "wide"},
                  # the triples lookup also keeps both matrices' triples layouts (3-bit codes,
                  # 30 inputs a word, a plane each for the adds and, ternary, the subtracts)
                  **{row: word_bytes(packed if "bc" in row else ternary)
                     + 4 * hidden * (-(-32 * -(-inp // 32) // 30) + -(-hidden // 30)) * 4
                     * (1 if "bc" in row else 2)
                     for row in lookup_of if lookup_of[row] == "triples"},
                  # the words and W_h's nibble layout (as many bytes as its planes)
                  "packed bc+weight, int8 h": word_bytes(packed) + 4 * hidden * hidden // 8,
                  "packed tc+weight, int8 h": word_bytes(ternary) + 4 * hidden * hidden // 4,
                  "int8 dynamic LSTM": matrices}
        if int8 is None:
            print(f"(torch {torch.__version__} has no int8 dynamic LSTM: no int8 row)")
        else:
            variants["int8 dynamic LSTM"] = step_of(int8)
        times = {k: [] for k in variants}
        def measure(k, steps):  # a row's lookup chosen once around its steps
            with backend.use(**({"lookup": lookup_of[k]} if k in lookup_of else {})):
                return per_step(variants[k], steps)
        with torch.no_grad():
            for k in variants:
                measure(k, 20)  # warm-up (and the cache)
            for _ in range(a.rounds):
                for k in variants:
                    times[k].append(measure(k, a.steps))
        base = statistics.median(times["nn.LSTM fp32"])
        int8_time = statistics.median(times["int8 dynamic LSTM"]) if int8 is not None else None
        print(f"\nH={hidden} (input {inp}), batch 1, one step per call, {a.threads} threads, "
              f"median of {a.rounds} rounds of {a.steps} steps")
        print("| variant                      | ms/step | vs nn.LSTM fp32 | vs int8 | weights  |")
        print("|------------------------------|---------|-----------------|---------|----------|")
        for k in variants:
            m = statistics.median(times[k])
            vs_int8 = f"{int8_time / m:6.2f}x" if int8_time else "      -"
            print(f"| {k:<28} | {m * 1e3:7.3f} | {base / m:14.2f}x | {vs_int8} | "
                  f"{memory[k] / 2 ** 20:5.2f} MB |")


def word_bytes(packed: PackedNQLSTM) -> int:
    """Bytes of the packed model's word planes (what its step reads)."""
    return sum(b.numel() * b.element_size() for n, b in packed.named_buffers()
               if b.dtype == torch.int32)


if __name__ == "__main__":
    main()
