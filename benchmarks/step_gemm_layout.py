"""The native training loop's step products split by the batch rows (NQ_PLUGIN_STEP_SPLIT=rows:
each thread its rows times the whole W_h, what the loop does below H=192) in each layout of the
whole W_h, A/B in one run: for each setting, torch.nn.LSTM and NQLSTM (BinaryConnect) with the
given normalizations, each NQLSTM timed with NQ_PLUGIN_STEP_GEMM forced to every layout this
build runs (plain, onednn, panels), interleaved in rounds; prints ms per training step (forward
+ backward) and the ratio to nn.LSTM. The column split's parts alone:
benchmarks/step_gemm_kernel.py.

    python benchmarks/step_gemm_layout.py smnist layer,batch --steps 2
"""
import argparse
import statistics

import torch

from lstm_training_speed import SETTINGS, time_steps  # this folder's script
from nq_plugin import backend
from nq_plugin.nn import NQLSTM, step_products


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("setting", choices=list(SETTINGS))
    ap.add_argument("norms", help="comma-separated normalizations, e.g. layer,batch")
    ap.add_argument("--steps", type=int, default=3, help="training steps per timing")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    s = SETTINGS[a.setting]
    x = torch.randn(s["steps"], s["batch"], s["inp"])
    models = {"nn.LSTM": torch.nn.LSTM(s["inp"], s["hidden"])}
    for norm in a.norms.split(","):
        models[norm] = NQLSTM(s["inp"], s["hidden"], quantizer="bc", norm=norm,
                              bn_max_steps=s["steps"])
    layouts = step_products.part_candidates(torch.zeros(1))
    times = {}
    for model in models.values():
        time_steps(model, x, 1)
    for _ in range(a.rounds):
        for name, model in models.items():
            for layout in layouts if name != "nn.LSTM" else ["plain"]:
                with backend.use(step_split="rows", step_gemm=layout):
                    per_step = time_steps(model, x, a.steps) / a.steps
                times.setdefault((name, layout), []).append(per_step)
    base = statistics.median(times[("nn.LSTM", "plain")])
    print(f"{a.setting}: torch {torch.__version__}, {a.threads} threads, {a.rounds} rounds x "
          f"{a.steps} steps, median")
    for (name, layout), v in times.items():
        m = statistics.median(v)
        label = name if name == "nn.LSTM" else f"bc {name}, {layout}"
        print(f"| {label:<20} | {m * 1e3:8.2f} ms | {base / m:5.3f}x |")


if __name__ == "__main__":
    main()
