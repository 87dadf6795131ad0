"""The training loop's per-step products on one core, for the two ways two threads can split a
step: by batch rows (what nq_plugin/csrc/recurrence.cpp's team does: B/2 rows x all 4H
columns each) or by hidden units (all B rows x 2H columns each), forward (h W_h^T) and backward
(dz W_h), through oneDNN's reordered layout and plain mm; then what the reorder of W_h (or
W_h^T) into oneDNN's layout costs, which the loop pays twice per training step (W_h changes
with every update), beside a plain transposed copy of the same matrix.

    python benchmarks/step_gemm_split.py [--repeat 2000]

One thread per product (torch.set_num_threads(1)), the other core idle: the per-thread rate
inside the loop's team. Then the word sizes' products with both threads at once, each its
share (two Python threads, one intra-op thread each; torch releases the GIL in mm), as inside
the team: by rows, both read the whole W; by hidden units, each its own half. The reorders at 1
and 2 threads.
"""
import argparse
import threading
import time

import torch

from eval_paths import timed  # this folder's script
from nq_plugin.nn.step_products import StepMatmul, prepacked

# (hidden, batch): PTB word d=300 and d=650 (B=20), sequential MNIST (H=100, B=100)
SIZES = [(300, 20), (650, 20), (100, 100)]


def rate(fn, n):
    for _ in range(50):  # warm-up
        fn()
    return timed(fn, n)


def product(rows, out, inp, n):
    """us and GFLOPS of x (rows, inp) W^T for W (out, inp): oneDNN layout, plain mm."""
    w, x = torch.randn(out, inp), torch.randn(rows, inp)
    onednn = StepMatmul(w, rows)  # the loop's product in oneDNN's layout (nn/recurrence.py)
    w_t = w.t().contiguous()
    flops = 2 * rows * out * inp
    res = []
    for fn in (lambda: onednn(x), lambda: torch.mm(x, w_t)):
        dt = rate(fn, n)
        res.append(f"{dt * 1e6:7.1f} us {flops / dt / 1e9:6.1f} GF")
    return res


def together(fns, n):
    """Seconds per call of each fn, all run at once, one Python thread and one intra-op thread
    each, started together after a warm-up."""
    start = threading.Barrier(len(fns))
    times = [0.0] * len(fns)

    def work(i, fn):
        torch.set_num_threads(1)  # this thread's own OpenMP and BLAS setting
        for _ in range(50):
            fn()
        start.wait()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        times[i] = (time.perf_counter() - t) / n

    threads = [threading.Thread(target=work, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return times


def shares(split, rows_all, out, inp):
    """Each of two threads' product (plain mm) for a split of x (rows_all, inp) W^T, W (out,
    inp): by rows, half the rows each and the one W^T they share; by hidden units, all rows
    each and its own copy of half of W^T's columns."""
    w_t = torch.randn(out, inp).t().contiguous()
    if split == "rows":
        xs = [torch.randn(rows_all // 2, inp) for _ in range(2)]
        return [lambda x=x: torch.mm(x, w_t) for x in xs]
    halves = [w_t[:, :out // 2].contiguous(), w_t[:, out // 2:].contiguous()]
    x = torch.randn(rows_all, inp)
    return [lambda w=w: torch.mm(x, w) for w in halves]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2000)
    args = ap.parse_args()
    print(f"torch {torch.__version__}")
    torch.set_num_threads(1)
    print("\nOne thread's share of a step's product (two threads):")
    print(f"| {'H, B':<8} | {'split':<13} | {'product':<22} | {'oneDNN layout':<20} | "
          f"{'plain mm':<20} |")
    print("|---|---|---|---|---|")
    for hidden, batch in SIZES:
        cases = [("rows", "forward", batch // 2, 4 * hidden, hidden),
                 ("hidden units", "forward", batch, 2 * hidden, hidden),
                 ("rows", "backward", batch // 2, hidden, 4 * hidden),
                 ("hidden units", "backward", batch, hidden // 2, 4 * hidden)]
        for split, way, rows, out, inp in cases:
            onednn, mm = product(rows, out, inp, args.repeat)
            shape = f"{way} {rows}x{inp} . {inp}x{out}"
            print(f"| {hidden}, {batch:<4} | {split:<13} | {shape:<22} | {onednn} | {mm} |")
    print("\nThe word sizes' shares, one thread alone and both at once (plain mm, us a call; "
          "at once: each thread's):")
    print("| H, B | split | product | alone | both at once |")
    print("|---|---|---|---|---|")
    for hidden, batch in SIZES[:2]:
        for way, out, inp in (("forward", 4 * hidden, hidden), ("backward", hidden, 4 * hidden)):
            for split in ("rows", "hidden units"):
                fns = shares(split, batch, out, inp)
                alone = rate(fns[0], args.repeat)
                both = together(fns, args.repeat)
                print(f"| {hidden}, {batch} | {split} | {way} | {alone * 1e6:.1f} | "
                      f"{' / '.join(f'{t * 1e6:.1f}' for t in both)} |")
    print("\nReordering W (once per training step and direction) vs a transposed copy:")
    print("| threads | W | reorder | transposed copy |")
    print("|---|---|---|---|")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for hidden, batch in SIZES:
            for shape in ((4 * hidden, hidden), (hidden, 4 * hidden)):
                w = torch.randn(*shape)
                rows = batch // 2
                reorder = rate(lambda: prepacked(w, rows), 200)
                copy = rate(lambda: w.t().contiguous(), 200)
                print(f"| {threads} | {shape[0]}x{shape[1]} | {reorder * 1e6:.0f} us | "
                      f"{copy * 1e6:.0f} us |")


if __name__ == "__main__":
    main()
