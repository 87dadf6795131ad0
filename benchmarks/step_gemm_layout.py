"""The native training loop's step GEMMs through oneDNN's reordered layout or plain mm, A/B in
one run: for each setting, torch.nn.LSTM and NQLSTM (BinaryConnect) with the given
normalizations, each NQLSTM timed with ``nn.step_products.training_layout`` forced to oneDNN's
layout ("onednn") and to none ("mm"), interleaved in rounds; prints ms per training step
(forward + backward) and the ratio to nn.LSTM. What set TRAINING_LAYOUT_MIN_HIDDEN. The layout
of the whole W_h is what a team that splits the batch rows uses, so the loop runs with
NQ_PLUGIN_STEP_SPLIT=rows here (a column split's parts are timed by
benchmarks/step_gemm_kernel.py).

    python benchmarks/step_gemm_layout.py word layer,batch,weight --steps 10
"""
import argparse
import statistics

import torch

import nq_plugin.nn.step_products as step_products
from nq_plugin import backend
from lstm_training_speed import SETTINGS, time_steps  # this folder's script
from nq_plugin.nn import NQLSTM

LAYOUTS = {"onednn": step_products.prepacked, "mm": lambda weight, batch: None}


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

    chosen = step_products.training_layout
    times = {}
    with backend.use(step_split="rows"):  # the whole W_h for each thread's rows
        try:
            for model in models.values():
                time_steps(model, x, 1)
            for _ in range(a.rounds):
                for name, model in models.items():
                    for layout, fn in LAYOUTS.items():
                        if name == "nn.LSTM" and layout == "mm":
                            continue
                        step_products.training_layout = fn
                        per_step = time_steps(model, x, a.steps) / a.steps
                        times.setdefault((name, layout), []).append(per_step)
        finally:
            step_products.training_layout = chosen
    base = statistics.median(times[("nn.LSTM", "onednn")])
    print(f"{a.setting}: torch {torch.__version__}, {a.threads} threads, {a.rounds} rounds x "
          f"{a.steps} steps, median")
    for (name, layout), v in times.items():
        m = statistics.median(v)
        label = name if name == "nn.LSTM" else f"bc {name}, {layout}"
        print(f"| {label:<20} | {m * 1e3:8.2f} ms | {base / m:5.3f}x |")


if __name__ == "__main__":
    main()
