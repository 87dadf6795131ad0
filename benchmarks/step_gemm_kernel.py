"""The layouts of a split step product's parts, timed as the native loop's team runs them.

For the products of the paper's training sizes -- forward z = h W_h^T and backward dh = dz W_h,
word (B=20, H=300), char (B=64, H=512), word at d=650 (B=20) -- each layout the planner can
take for the threads' parts (nq_plugin/nn/step_products.py, part_candidates: plain BLAS GEMMs on
copies of the parts, oneDNN's blocked layout, the extension's own step GEMM's panels,
csrc/step_gemm.cpp) is timed by the extension's ``step_product_seconds``: every thread of the
team its columns for the whole batch at once, meeting after each product as the loop does; best
of 7 rounds. Rounds of the layouts alternate, so noise hits all alike; the table gives each
layout's median over --repeats such timings and its speed relative to plain.

    python benchmarks/step_gemm_kernel.py [--threads 2] [--repeats 5]
"""
import argparse
import statistics

import torch

from nq_plugin.native import extension
from nq_plugin.nn import step_products

SHAPES = [("word forward", 20, 300, 1200), ("word backward", 20, 1200, 300),
          ("char forward", 64, 512, 2048), ("char backward", 64, 2048, 512),
          ("word-650 forward", 20, 650, 2600), ("word-650 backward", 20, 2600, 650)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ext = extension()
    print(f"torch {torch.__version__}, {args.threads} threads (a team of "
          f"{step_products.team_size(64)}), each thread its columns; median of {args.repeats} "
          "timings, each the best of 7 rounds; microseconds a product")
    print("| product | B x K . K x N | layout | us | vs plain |")
    print("|---|---|---|---|---|")
    for label, batch, inner, cols in SHAPES:
        weight, x = torch.randn(cols, inner), torch.randn(batch, inner)
        names = step_products.part_candidates(weight)
        plans = {name: step_products.column_parts(weight, batch, name) for name in names}
        calls = step_products._timing_calls(batch, inner, cols)
        times = {name: [] for name in names}
        for _ in range(args.repeats):
            for name in names:
                times[name].append(ext.step_product_seconds(x, weight, plans[name], 7, calls))
        plain = statistics.median(times["plain"])
        for name in names:
            t = statistics.median(times[name])
            print(f"| {label} | {batch} x {inner} . {inner} x {cols} | {name} | {t * 1e6:.0f} | "
                  f"{plain / t:.2f}x |")


if __name__ == "__main__":
    main()
