"""Training speed of the recipes with glibc's default allocator settings against the settings
the recipes export (``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_``: freed blocks stay
in the process rather than being unmapped and page-faulted back at the next step), alternating
in rounds, one thread each, as the campaign trains.

    python benchmarks/allocator_settings.py --mnist DATA/mnist --ptb-char DATA/ptb_char \\
        --ptb-word DATA/ptb_word [--updates 40] [--rounds 2]

Prints updates/s (fairseq's ``ups`` at the last log interval) of each recipe and setting, and
the ratio of the recipes' settings to glibc's defaults (median over rounds).
"""
import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# glibc's defaults: the recipes' values removed from the environment
DEFAULTS = {"MALLOC_MMAP_THRESHOLD_": None, "MALLOC_TRIM_THRESHOLD_": None}


def cases(args):
    out = []
    if args.mnist:
        smnist = ["bash", "recipes/smnist/train.sh", args.mnist, "{save}", "200"]
        out += [("smnist bc weight", smnist + ["--norm", "weight"]),
                ("smnist bc batch separate", smnist + ["--norm", "batch", "--bn-stats",
                                                       "separate", "--init-state-noise", "0.1"])]
    if args.ptb_char:
        out.append(("ptb char bc layer", ["bash", "recipes/ptb_char/train.sh", args.ptb_char,
                                          "{save}", "bc", "layer"]))
    if args.ptb_word:
        out.append(("ptb word bc weight", ["bash", "recipes/ptb_word/train.sh", args.ptb_word,
                                           "{save}", "bc", "weight"]))
    return out


def updates_per_second(cmd, updates, recipe_settings):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if not recipe_settings:  # what the recipes would export, kept out
        env["NQ_KEEP_GLIBC_MALLOC"] = "1"
        for k in DEFAULTS:
            env.pop(k, None)
    save = tempfile.mkdtemp(prefix="nq-alloc-bench-")
    try:
        argv = [a.replace("{save}", save) for a in cmd] + [
            "--max-update", str(updates), "--log-interval", str(updates // 2), "--no-save"]
        res = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
        rates = re.findall(r"train_inner .*?ups=([0-9.]+)", res.stdout + res.stderr)
        if not rates:
            raise SystemExit(f"{' '.join(argv)} failed:\n{(res.stdout + res.stderr)[-2000:]}")
        return float(rates[-1])
    finally:
        shutil.rmtree(save, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mnist")
    ap.add_argument("--ptb-char")
    ap.add_argument("--ptb-word")
    ap.add_argument("--updates", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"CPU: {cpu} ({os.cpu_count()} cores), one thread per run, {args.updates} updates, "
          f"{args.rounds} rounds; glibc {platform.libc_ver()[1]}")
    print("| recipe | glibc defaults (ups) | recipes' settings (ups) | ratio |")
    print("|---|---|---|---|")
    for name, cmd in cases(args):
        plain, tuned = [], []
        for _ in range(args.rounds):
            plain.append(updates_per_second(cmd, args.updates, False))
            tuned.append(updates_per_second(cmd, args.updates, True))
        a, b = statistics.median(plain), statistics.median(tuned)
        print(f"| {name} | {a:.2f} ({', '.join(map(str, plain))}) | "
              f"{b:.2f} ({', '.join(map(str, tuned))}) | {b / a:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
