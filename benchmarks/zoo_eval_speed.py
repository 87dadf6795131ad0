"""fairseq-eval-lm speed of the zoo's language models, unpacked (model.pt) and bit-packed
(packed/checkpoint.pt), side by side in one run, on a binarized data folder (default: the PTB
char test split, the zoo's own evaluation command).

    python benchmarks/zoo_eval_speed.py --data data-bin/ptb_char [--batch-size 16 1]

Prints tokens/s as fairseq-eval-lm reports them and the loss of each (packed must equal
unpacked). Run on an idle machine.
"""
import argparse
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEED = re.compile(r"Evaluated ([0-9,]+) tokens in ([0-9.]+)s \(([0-9.]+) tokens/s\)")
LOSS = re.compile(r"Loss \(base 2\): ([0-9.]+)")


def run(data, path, batch, tokens):
    exe = os.path.join(os.path.dirname(sys.executable), "fairseq-eval-lm")
    out = subprocess.run([exe, data, "--user-dir", os.path.join(ROOT, "nq_plugin"), "--task",
                          "bptt_lm", "--path", path, "--gen-subset", "test", "--cpu",
                          "--tokens-per-sample", str(tokens), "--batch-size", str(batch)],
                         capture_output=True, text=True)
    text = out.stdout + out.stderr
    speed, loss = SPEED.search(text), LOSS.search(text)
    if out.returncode or not speed or not loss:
        raise SystemExit(f"fairseq-eval-lm failed on {path}:\n{text[-2000:]}")
    return float(speed.group(3)), float(loss.group(1))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.path.join(ROOT, "data-bin", "ptb_char"))
    p.add_argument("--dataset", default="ptb_char")
    p.add_argument("--batch-size", type=int, nargs="+", default=[16])
    a = p.parse_args()
    manifest = json.load(open(os.path.join(ROOT, "zoo", "manifest.json")))
    print("| model | batch | unpacked tokens/s | packed tokens/s | packed / unpacked | BPC (both) |")
    print("|---|---|---|---|---|---|")
    for m in manifest["models"]:
        if m["dataset"] != a.dataset or m["task"] != "bptt_lm":
            continue
        folder = os.path.join(ROOT, "zoo", m["bundled"])
        packed = os.path.join(folder, "packed", "checkpoint.pt")
        for batch in a.batch_size:
            u, lu = run(a.data, os.path.join(folder, m["checkpoint"]), batch, 100)
            if os.path.isfile(packed):
                q, lq = run(a.data, packed, batch, 100)
                assert abs(lq - lu) < 1e-3, (m["name"], lu, lq)
                print(f"| {m['name']} | {batch} | {u:,.0f} | {q:,.0f} | {q / u:.2f}x | {lu:.4f} |")
            else:
                print(f"| {m['name']} | {batch} | {u:,.0f} | — | — | {lu:.4f} |")


if __name__ == "__main__":
    main()
