"""fairseq-train tokens/s: nq_lstm_lm against fairseq's own lstm_lm, PTB char setting, side by
side in one run (d=512, T=100, B=64; fairseq's lstm_lm steps an nn.LSTMCell in Python).

    python benchmarks/fairseq_train_speed.py DATA_BIN [--updates 40] [--rounds 2]

DATA_BIN: PTB char binarized by recipes/ptb/prepare.sh (OUT_DIR/ptb_char). Each variant runs
``fairseq-train`` for --updates updates (no validation, no checkpoints) --rounds times,
interleaved; the rate is the median of fairseq's own train_inner ``wps`` after the first
logging interval (start-up excluded). Prints a table with ratios to lstm_lm. Variants marked
"(py loop)" run with NQ_PLUGIN_RECURRENCE=python (the Python loop, as before the native
recurrence); the others with the default (native where it builds).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = ["--cpu", "--batch-size", "64", "--tokens-per-sample", "100", "--optimizer", "adam",
          "--lr", "0.002", "--clip-norm", "5", "--disable-validation", "--no-save",
          "--log-format", "json", "--log-interval", "10", "--num-workers", "0", "--seed", "1"]
NQ = ["--user-dir", os.path.join(ROOT, "nq_plugin"), "--task", "bptt_lm",
      "--arch", "nq_lstm_lm_ptb_char"]
VARIANTS = [
    ("fairseq lstm_lm (fp)", ["--task", "language_modeling", "--arch", "lstm_lm",
                              "--sample-break-mode", "none", "--decoder-embed-dim", "512",
                              "--decoder-hidden-size", "512", "--decoder-layers", "1",
                              "--decoder-out-embed-dim", "512", "--decoder-dropout-in", "0",
                              "--decoder-dropout-out", "0"]),
    ("nq fp none", NQ + ["--quantizer", "fp", "--norm", "none"]),
    ("nq bc weight", NQ + ["--quantizer", "bc", "--norm", "weight"]),
    ("nq bc layer", NQ + ["--quantizer", "bc", "--norm", "layer"]),
    ("nq bc batch shared", NQ + ["--quantizer", "bc", "--norm", "batch"]),
    ("nq bc batch separate", NQ + ["--quantizer", "bc", "--norm", "batch", "--bn-stats",
                                   "separate"]),
    # the same two on the Python loop (before the native recurrence)
    ("nq bc layer (py loop)", NQ + ["--quantizer", "bc", "--norm", "layer"]),
    ("nq bc batch sep. (py loop)", NQ + ["--quantizer", "bc", "--norm", "batch", "--bn-stats",
                                         "separate"]),
]


def run(data, label, args, updates):
    exe = shutil.which("fairseq-train", path=os.path.dirname(sys.executable)) or "fairseq-train"
    env = dict(os.environ, NQ_PLUGIN_RECURRENCE="python" if "(py loop)" in label else "auto")
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run([exe, data, *COMMON, *args, "--max-update", str(updates),
                              "--save-dir", tmp], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-3000:])
    rates = []
    for line in (res.stdout + res.stderr).splitlines():
        if "train_inner" in line and "{" in line:
            rates.append(float(json.loads(line[line.index("{"):])["wps"]))
    return rates[1:] or rates


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--updates", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", nargs="+", help="labels to run (the first variant always runs)")
    args = ap.parse_args()
    variants = [v for i, v in enumerate(VARIANTS) if i == 0 or not args.only
                or v[0] in args.only]
    rates = {label: [] for label, _ in variants}
    for _ in range(args.rounds):
        for label, variant in variants:
            rates[label] += run(args.data, label, variant, args.updates)
    ref = statistics.median(rates[variants[0][0]])
    print(f"fairseq-train on {args.data}: d=512, T=100, B=64, {args.updates} updates x "
          f"{args.rounds} rounds, median train_inner wps")
    print(f"| {'variant':<27} | {'tokens/s':>9} | {'vs lstm_lm':>10} |")
    print(f"|{'-' * 29}|{'-' * 11}|{'-' * 12}|")
    for label, _ in variants:
        r = statistics.median(rates[label])
        print(f"| {label:<27} | {r:>9.0f} | {r / ref:>9.2f}x |")


if __name__ == "__main__":
    main()
