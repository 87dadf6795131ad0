"""Training-step speed (forward + backward) of NQLSTM against torch.nn.LSTM, side by side.

For each setting of the paper -- char (d=512, T=100, B=64, one-hot input of 50) and word (d=300,
T=35, B=20, 300-dim input) -- times torch.nn.LSTM (fp) and NQLSTM with BinaryConnect and every
normalization, interleaved in rounds so that machine noise hits all alike (each round starting
one variant further on), and prints tokens/s, the ratio to nn.LSTM (median over rounds), and
each round's ratio to that round's nn.LSTM as median [min-max] over the rounds (the run's own
spread: what one ratio can be trusted to). The layer/batch/power variants run five times:
on the native loop (nq_plugin/csrc/recurrence.cpp; NQ_PLUGIN_RECURRENCE=auto), on it with its
threads' parts of the step products as plain BLAS GEMMs ("(plain)": NQ_PLUGIN_STEP_GEMM=plain,
what auto chose before the loop's own step GEMM), with its threads splitting each step's
products by output columns ("(columns)": NQ_PLUGIN_STEP_SPLIT=columns, auto's rule from H=192
on before auto timed the two splits) or by batch rows ("(rows)": NQ_PLUGIN_STEP_SPLIT=rows, the
same as auto below H=192) and on the Python loop (NQ_PLUGIN_RECURRENCE=python), side by side in
the same rounds. Sequential MNIST (T=784, B=100, H=100, scalar input) with --settings smnist.
The layouts auto takes for the step products' parts, and the split it keeps after timing the
two on its first calls, are logged; those calls are part of the warm-up.

Two rows time the training step's matrix products alone, in the same rounds (:class:`GemmFloor`):
what any LSTM's step costs at least on this machine, so that a ratio reads against its ceiling
(nn.LSTM's time above the floor is its cell, its copies and its fork/joins).

    python benchmarks/lstm_training_speed.py [--rounds 5] [--steps 5] [--threads 2] [--auto-only]
"""
import argparse
import logging
import statistics
import time

import torch

from nq_plugin.nn import NQLSTM
from nq_plugin.nn.step_products import SPLIT_TRIALS

SETTINGS = {"char": dict(inp=50, hidden=512, steps=100, batch=64),
            "word": dict(inp=300, hidden=300, steps=35, batch=20),
            "smnist": dict(inp=1, hidden=100, steps=784, batch=100)}
VARIANTS = [("nn.LSTM fp", None, None), ("bc none", "none", {}), ("bc weight", "weight", {}),
            ("bc layer", "layer", {}), ("bc batch shared", "batch", {"bn_stats": "shared"}),
            ("bc batch separate", "batch", {"bn_stats": "separate"}), ("bc power", "power", {})]


def setting_input(setting: str, threads: int, dense_char: bool = False) -> torch.Tensor:
    """A setting's input (T, B, I), random from seed 0, with torch's threads set to
    ``threads``: what the scripts of this folder time one setting on. The char setting's
    rows are one-hot symbols, as the char models' (recipes/ptb_char: --one-hot-input; before
    2026-12-08 they were N(0, 1) here too: ``dense_char``); the others' N(0, 1)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    s = SETTINGS[setting]
    if setting == "char" and not dense_char:
        symbols = torch.randint(s["inp"], (s["steps"], s["batch"]))
        return torch.nn.functional.one_hot(symbols, s["inp"]).float()
    return torch.randn(s["steps"], s["batch"], s["inp"])


def build(setting, norm, opts):
    s = SETTINGS[setting]
    if norm is None:
        return torch.nn.LSTM(s["inp"], s["hidden"])
    return NQLSTM(s["inp"], s["hidden"], quantizer="bc", norm=norm,
                  bn_max_steps=s["steps"], **opts)


class GemmFloor:
    """The six products of one LSTM training step, and nothing else: px = x W_x^T (all steps),
    z_t = h W_h^T and dh = dz_t W_h (each step, the whole batch), dL/dW_h = dZ^T H_prev,
    dL/dW_x = dPX^T X and dL/dx = dPX W_x -- 3 x 2 T B (I + H) 4H flops. ``layout``: the step
    products through oneDNN's reordered W_h and W_h^T (reordered once here, outside the timing:
    the loop pays that every training step) instead of plain mm."""

    def __init__(self, setting: str, layout: bool):
        from nq_plugin.nn.step_products import StepMatmul
        s = SETTINGS[setting]
        steps, batch, inp, hidden = s["steps"], s["batch"], s["inp"], s["hidden"]
        self.steps = steps
        self.x = torch.randn(steps * batch, inp)
        self.w_x = torch.randn(4 * hidden, inp)
        self.w_h = torch.randn(4 * hidden, hidden)
        self.h = torch.randn(batch, hidden)
        self.dz = torch.randn(batch, 4 * hidden)
        self.dpx = torch.randn(steps * batch, 4 * hidden)
        self.h_prev = torch.randn(steps * batch, hidden)
        if layout:  # the loop's step products (nn/step_products.py; plain mm without oneDNN)
            forward, backward = StepMatmul(self.w_h, batch), StepMatmul(self.w_h.t(), batch)
            self.forward_step = lambda: forward(self.h)
            self.backward_step = lambda: backward(self.dz)
        else:
            w_t = self.w_h.t().contiguous()
            self.forward_step = lambda: torch.mm(self.h, w_t)
            self.backward_step = lambda: torch.mm(self.dz, self.w_h)

    def __call__(self, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            torch.mm(self.x, self.w_x.t())
            for _ in range(self.steps):
                self.forward_step()
            for _ in range(self.steps):
                self.backward_step()
            torch.mm(self.dpx.t(), self.h_prev)
            torch.mm(self.dpx.t(), self.x)
            torch.mm(self.dpx, self.w_x)
        return time.perf_counter() - start


FLOORS = [("GEMMs only, mm", False), ("GEMMs only, oneDNN", True)]


# training steps before the timing: the first calls of a shape time the loop's two splits
# of the step products (the first of each, then SPLIT_TRIALS each)
WARMUP_STEPS = 2 * (1 + SPLIT_TRIALS) + 1


SUFFIXES = {" (py)": dict(recurrence="python"), " (rows)": dict(step_split="rows"),
            " (columns)": dict(step_split="columns"), " (plain)": dict(step_gemm="plain")}


def choices_of(label):
    """The execution choices of a variant's label (nq_plugin.backend.use)."""
    for suffix, choices in SUFFIXES.items():
        if label.endswith(suffix):
            return choices
    return {}


def time_steps(model, x, n, choices=None):
    from nq_plugin import backend
    params = list(model.parameters())
    with backend.use(**(choices or {})):
        start = time.perf_counter()
        for _ in range(n):
            out, _ = model(x)
            out.sum().backward()
            for p in params:
                p.grad = None
        return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5, help="training steps per timing")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS))
    ap.add_argument("--auto-only", action="store_true",
                    help="only nn.LSTM and the variants under the backend's automatic choices "
                         "(no (plain), (columns), (rows) or (py) copies): a shorter run, for "
                         "A/B runs of two trees")
    ap.add_argument("--dense-char", action="store_true",
                    help="the char setting's input N(0, 1) rather than one-hot symbols (the "
                         "input of the runs before 2026-12-08)")
    args = ap.parse_args()
    logging.basicConfig(format="%(message)s")
    logging.getLogger("nq_plugin.nn.step_products").setLevel(logging.INFO)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.rounds} rounds x "
          f"{args.steps} steps, median tokens/s; each round's ratios to that round's nn.LSTM")
    for setting in args.settings:
        s = SETTINGS[setting]
        x = setting_input(setting, args.threads, args.dense_char)
        models = [(label, build(setting, norm, opts)) for label, norm, opts in VARIANTS]
        if not args.auto_only:
            models += [(label + suffix, build(setting, norm, opts))
                       for suffix in (" (plain)", " (columns)", " (rows)", " (py)")
                       for label, norm, opts in VARIANTS if norm in ("layer", "batch", "power")]
        floors = [(label, GemmFloor(setting, layout)) for label, layout in FLOORS]
        for label, m in models:
            # warm-up, and the loop's timing of its two splits (step_products.timed_loop)
            time_steps(m, x, WARMUP_STEPS, choices_of(label))
        for _, floor in floors:
            floor(1)
        rates = {label: [] for label, _ in models + floors}
        entries = [(label, m, None) for label, m in models]
        entries += [(label, None, floor) for label, floor in floors]
        for i in range(args.rounds):
            # each round starts one entry further on: no variant always runs right after
            # the same other one (or first)
            for label, m, floor in entries[i % len(entries):] + entries[:i % len(entries)]:
                dt = time_steps(m, x, args.steps, choices_of(label)) if floor is None \
                    else floor(args.steps)
                rates[label].append(args.steps * s["steps"] * s["batch"] / dt)
        ref = statistics.median(rates["nn.LSTM fp"])
        print(f"\n{setting}: d={s['hidden']}, T={s['steps']}, B={s['batch']}")
        print(f"| {'variant':<27} | {'tokens/s':>9} | {'vs nn.LSTM':>10} | "
              f"{'each round: median [min-max]':<28} |")
        print(f"|{'-' * 29}|{'-' * 11}|{'-' * 12}|{'-' * 30}|")
        for label, _ in models + floors:
            r = statistics.median(rates[label])
            # the ratio to nn.LSTM's rate in the same round (what drift between rounds moves
            # least), and its spread over the rounds: the run's own noise
            each = [a / b for a, b in zip(rates[label], rates["nn.LSTM fp"])]
            spread = (f"{statistics.median(each):.2f}x [{min(each):.2f}-{max(each):.2f}]"
                      if label != "nn.LSTM fp" else "")
            print(f"| {label:<27} | {r:>9.0f} | {r / ref:>9.2f}x | {spread:<28} |")

if __name__ == "__main__":
    main()
