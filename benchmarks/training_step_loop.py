"""Training steps of one model of lstm_training_speed.py's settings and nothing else, for a
profiler to sample (``perf record``): the model built as that script builds it, two warm-up
steps, then ``--steps`` steps (forward, backward, gradients cleared), the time per step printed.

    perf record python benchmarks/training_step_loop.py --setting char --norm power --steps 30
"""
import argparse
import time

import torch

from lstm_training_speed import SETTINGS, build, setting_input  # this folder's script


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--setting", default="char", choices=sorted(SETTINGS))
    ap.add_argument("--norm", default="layer",
                    help="none | weight | layer | batch | power, or lstm for torch.nn.LSTM")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    x = setting_input(args.setting, args.threads)
    model = build(args.setting, None if args.norm == "lstm" else args.norm, {})
    for _ in range(2):
        out, _ = model(x)
        out.sum().backward()
    start = time.perf_counter()
    for _ in range(args.steps):
        out, _ = model(x)
        out.sum().backward()
        for p in model.parameters():
            p.grad = None
    print(f"{args.setting} {args.norm}: {1e3 * (time.perf_counter() - start) / args.steps:.1f} ms "
          "a training step")


if __name__ == "__main__":
    main()
