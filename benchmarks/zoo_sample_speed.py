"""Generation speed of the bundled zoo language models: one symbol at a time (batch 1, state
carried -- what ``nq-zoo sample`` and streaming scoring do), unpacked (model.pt) and bit-packed
(packed/checkpoint.pt), side by side in one run, on the CPU and, where there is one, the GPU.

    python benchmarks/zoo_sample_speed.py [--length 300] [--rounds 3] [--device cpu cuda]

Prints symbols/s (median of the rounds, after a warm-up) and whether the packed model sampled
the same text as the unpacked one under the same seed. Run on an idle machine.
"""
import argparse
import os
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def timed_sample(lm, length, rounds):
    lm.sample("the ", length=20, seed=1)  # warm-up: kernels compiled, graphs recorded
    times, text = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        text = lm.sample("the ", length=length, seed=0)
        if lm.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return length / statistics.median(times), text


def main():
    from nq_plugin.zoo import load
    from nq_plugin.zoo.manifest import Manifest
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--length", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available()
                                                             else []))
    p.add_argument("--models", nargs="*", help="zoo names (default: every bundled language model)")
    a = p.parse_args()
    entries = [e for e in Manifest.load().models.values() if e.task == "bptt_lm" and e.bundled]
    if a.models:
        entries = [e for e in entries if e.name in a.models]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads"
          + (f", {torch.cuda.get_device_name()}" if "cuda" in a.device else ""))
    print("| model | device | unpacked symbols/s | packed symbols/s | packed / unpacked | same text |")
    print("|---|---|---|---|---|---|")
    for entry in entries:
        has_packed = any(f.path.startswith("packed/") for f in entry.files)
        for device in a.device:
            lm = load(entry.name).to(device)
            speed, text = timed_sample(lm, a.length, a.rounds)
            if not has_packed:
                print(f"| {entry.name} | {device} | {speed:.0f} | — | — | — |", flush=True)
                continue
            packed = load(entry.name, packed=True).to(device)
            p_speed, p_text = timed_sample(packed, a.length, a.rounds)
            print(f"| {entry.name} | {device} | {speed:.0f} | {p_speed:.0f} | "
                  f"{p_speed / speed:.2f}x | {'yes' if p_text == text else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
