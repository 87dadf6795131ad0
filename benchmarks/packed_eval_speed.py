"""fairseq-eval-lm on CPU, packed vs unpacked, side by side in one run: tokens/s, peak resident
memory of the process, and the bytes the LSTM weights occupy.

    python benchmarks/packed_eval_speed.py DATA_BIN_ROOT [--rounds 2] [--batch-size 8]

DATA_BIN_ROOT: the OUT_DIR of recipes/ptb/prepare.sh (ptb_char/, ptb_word/). For each setting
-- PTB char d=512 BinaryConnect + weight norm, PTB word d=650 TerConnect + weight norm -- it
trains a checkpoint for 20 updates (speed does not depend on how well it is trained), packs it
with nq-pack, and times fairseq-eval-lm on the valid split for both, interleaved.
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER_DIR = os.path.join(ROOT, "nq_plugin")
SETTINGS = {
    "PTB char d=512 bc+weight": ("ptb_char", ["--arch", "nq_lstm_lm_ptb_char", "--quantizer", "bc",
                                              "--norm", "weight"], 100),
    "PTB word d=650 tc+weight": ("ptb_word", ["--arch", "nq_lstm_lm_ptb_word_650", "--quantizer",
                                              "tc", "--norm", "weight"], 35),
}
EVAL = ("import resource, sys; from fairseq_cli.eval_lm import cli_main; "
        "sys.argv = ['fairseq-eval-lm'] + sys.argv[1:]\ntry:\n    cli_main()\nfinally:\n"
        "    print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)")


def exe(name):
    return shutil.which(name, path=os.path.dirname(sys.executable)) or name


def run(cmd):
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(" ".join(map(str, cmd)) + "\n" + res.stderr[-3000:])
    return res.stdout + res.stderr


def lstm_bytes(path, packed):
    import torch
    state = torch.load(path, weights_only=True, map_location="cpu")["model"]
    keys = [k for k in state if ".lstm." in k and (k.endswith(("_plus", "_nonzero", "_negative"))
                                                   if packed else k.endswith(("weight_ih", "weight_hh")))]
    return sum(state[k].numel() * state[k].element_size() for k in keys)


def evaluate(data, path, steps, batch):
    out = run([sys.executable, "-c", EVAL, data, "--user-dir", USER_DIR, "--task", "bptt_lm",
               "--path", path, "--gen-subset", "valid", "--cpu", "--tokens-per-sample",
               str(steps), "--batch-size", str(batch)])
    rate = float(re.search(r"\(([0-9.]+) tokens/s\)", out).group(1))
    loss = float(re.search(r"Loss \(base 2\): ([0-9.]+)", out).group(1))
    rss = int(re.search(r"PEAK_RSS_KB (\d+)", out).group(1)) / 1024
    return rate, rss, loss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data_root")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, (sub, model, steps) in SETTINGS.items():
            data = os.path.join(args.data_root, sub)
            save = os.path.join(tmp, sub)
            run([exe("fairseq-train"), data, "--user-dir", USER_DIR, "--task", "bptt_lm", *model,
                 "--optimizer", "nq_adam", "--lr", "0.002", "--batch-size", "20",
                 "--tokens-per-sample", str(steps), "--max-update", "20", "--cpu",
                 "--save-dir", save, "--no-epoch-checkpoints", "--disable-validation"])
            unpacked = os.path.join(save, "checkpoint_last.pt")
            run([exe("nq-pack"), unpacked, os.path.join(save, "packed")])
            packed = os.path.join(save, "packed", "checkpoint.pt")
            results = {"unpacked": [], "packed": []}
            for _ in range(args.rounds):
                for kind, path in (("unpacked", unpacked), ("packed", packed)):
                    results[kind].append(evaluate(data, path, steps, args.batch_size))
            summary = {k: (statistics.median(r[0] for r in v), max(r[1] for r in v), v[0][2])
                       for k, v in results.items()}
            rows.append((label, summary, lstm_bytes(unpacked, False), lstm_bytes(packed, True)))
    print(f"fairseq-eval-lm on CPU, valid split, batch {args.batch_size}, median of "
          f"{args.rounds} rounds")
    print("| setting | unpacked tok/s | packed tok/s | speed | peak RSS unpacked / packed (MB) "
          "| LSTM weight bytes unpacked / packed | ratio | loss (base 2) unpacked / packed |")
    print("|---|---|---|---|---|---|---|---|")
    for label, s, ub, pb in rows:
        (ur, um, ul), (pr, pm, pl) = s["unpacked"], s["packed"]
        print(f"| {label} | {ur:.0f} | {pr:.0f} | {pr / ur:.2f}x | {um:.0f} / {pm:.0f} | "
              f"{ub:,} / {pb:,} | {ub / pb:.1f}x | {ul:.4f} / {pl:.4f} |")


if __name__ == "__main__":
    main()
