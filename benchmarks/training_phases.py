"""Where a training step's time goes: the forward (keeping what the backward needs) and the
backward of torch.nn.LSTM, of NQLSTM's native loop run with no normalization (``force_loop``:
the loop's products, cell and barriers alone) and of the loop with each normalization asked
for, each timed apart, interleaved in rounds (median). What a normalization adds over the bare
loop is the difference of the last rows from the middle one.

    python benchmarks/training_phases.py [--setting char] [--norms layer batch] [--rounds 7]
"""
import argparse
import statistics
import time

import torch

from lstm_training_speed import SETTINGS, WARMUP_STEPS, build, setting_input  # this folder's


def phases(model, x):
    """Seconds of the forward and of the backward of one training step."""
    start = time.perf_counter()
    out, _ = model(x)
    middle = time.perf_counter()
    out.sum().backward()
    end = time.perf_counter()
    for p in model.parameters():
        p.grad = None
    return middle - start, end - middle


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--setting", default="char", choices=sorted(SETTINGS))
    ap.add_argument("--norms", nargs="+", default=["layer", "batch"])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    x = setting_input(args.setting, args.threads)
    s = SETTINGS[args.setting]
    bare = build(args.setting, "none", {})
    for layer in bare.layers:  # the flag is each layer's (on NQLSTM itself it did nothing)
        layer.force_loop = True
    models = [("nn.LSTM fp", build(args.setting, None, {})), ("bc none, native loop", bare)]
    models += [(f"bc {norm}", build(args.setting, norm, {})) for norm in args.norms]
    for _, model in models:
        for _ in range(WARMUP_STEPS):  # and the loop's timing of its splits
            phases(model, x)
    times = {name: ([], []) for name, _ in models}
    for _ in range(args.rounds):
        for name, model in models:
            forward, backward = phases(model, x)
            times[name][0].append(forward)
            times[name][1].append(backward)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.setting}: d={s['hidden']}, "
          f"T={s['steps']}, B={s['batch']}; median of {args.rounds} rounds, ms")
    print("| model | forward | backward |")
    print("|---|---|---|")
    for name, (forward, backward) in times.items():
        print(f"| {name} | {1e3 * statistics.median(forward):.1f} | "
              f"{1e3 * statistics.median(backward):.1f} |")


if __name__ == "__main__":
    main()
