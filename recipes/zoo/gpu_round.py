#!/usr/bin/env python3
"""One round of the campaign's runs on a lent GPU machine: several runs of the plan in parallel
on the one GPU for a fixed time, their run folders made ready to carry back.

    python recipes/zoo/gpu_round.py --data-root data-bin --runs-dir runs --minutes 7 \\
        --out "$OUT" warpeace-tc-layer warpeace-fp ...

Each run is started exactly as ``campaign.py`` starts it from scratch (the same recipe,
options and ``--stop-time-hours``), on the GPU (the recipes' ``DEVICE=""``), with the run
folder's ``state.json`` saying it was trained on that GPU. When every run has stopped, each
folder's checkpoints lose the optimizer's per-parameter state (Adam's moments are twice a 1x512
char model's weights; a lent machine returns at most 64 MiB), keeping its parameter groups, the
schedule's state and the update count -- ``checkpoint_best.pt`` is kept only where it differs
from ``checkpoint_last.pt`` -- and the folders are written as one tar split into parts of at
most 15 MiB under ``--out``. Back on the campaign's machine::

    python recipes/zoo/gpu_round.py --unpack OUT/runs.tar.part-* --runs-dir RUNS_DIR
    python recipes/zoo/campaign.py --runs-dir RUNS_DIR --publish-only --only RUN...

puts each run's best checkpoint into the zoo if it earns it, and a later campaign resumes each
folder from its ``checkpoint_last.pt`` as fairseq resumes any run (data position, learning-rate
schedule, update count and best validation loss), the optimizer starting its moments afresh as
at the first update.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import campaign  # noqa: E402  (recipes/zoo/campaign.py)
from nq_plugin.files import sha256_file  # noqa: E402

PART_BYTES = 15 * 2 ** 20
CARRY_BYTES = 56 * 2 ** 20  # what a lent machine returns is at most 64 MiB, logs included


def device_name(cpu: bool) -> str:
    if cpu:
        return f"{campaign._cpu_name()} ({os.cpu_count()} cores)"
    import torch
    if not torch.cuda.is_available():
        raise SystemExit("gpu_round: no CUDA device is visible (use --cpu to try it on the CPU)")
    return f"one {torch.cuda.get_device_name(0)} (a lent machine)"


def fresh_optimizer_state(state: dict) -> dict:
    """The optimizer state of a checkpoint with its per-parameter entries dropped (Adam's
    moments and step): torch optimizers create them as at a first update, while the parameter
    groups (their learning rates and scales) stay what fairseq checks and loads."""
    optimizer = state.get("last_optimizer_state")
    if isinstance(optimizer, dict) and "param_groups" in optimizer:
        return {"state": {}, "param_groups": optimizer["param_groups"]}
    return optimizer


def strip_optimizer(folder: str) -> None:
    """Drop the optimizer's per-parameter state from the folder's checkpoints
    (:func:`fresh_optimizer_state`; written to a temporary name and renamed); a
    checkpoint_best.pt equal to checkpoint_last.pt is dropped (the campaign's publish reads
    checkpoint_best.pt: :func:`restore_best` puts it back)."""
    import torch
    last = os.path.join(folder, "checkpoint_last.pt")
    best = os.path.join(folder, "checkpoint_best.pt")
    if os.path.isfile(best) and os.path.isfile(last) and sha256_file(best) == sha256_file(last):
        os.remove(best)
        open(os.path.join(folder, "best_is_last"), "w").close()
    for path in [last, best, *sorted(p for p in os.listdir(folder) if p.startswith("checkpoint_")
                                     and p.endswith(".pt"))]:
        path = os.path.join(folder, os.path.basename(path))
        if not os.path.isfile(path):
            continue
        if os.path.basename(path) not in ("checkpoint_last.pt", "checkpoint_best.pt"):
            os.remove(path)  # the interval checkpoints: checkpoint_last.pt is the newest
            continue
        state = torch.load(path, map_location="cpu", weights_only=True)
        state["last_optimizer_state"] = fresh_optimizer_state(state)
        torch.save(state, path + ".tmp")
        os.replace(path + ".tmp", path)


def restore_best(folder: str) -> None:
    """Undo :func:`strip_optimizer`'s dropping of a checkpoint_best.pt equal to the last."""
    marker = os.path.join(folder, "best_is_last")
    if os.path.isfile(marker):
        shutil.copyfile(os.path.join(folder, "checkpoint_last.pt"),
                        os.path.join(folder, "checkpoint_best.pt"))
        os.remove(marker)


def fit(runs_dir: str, ids, limit: int = CARRY_BYTES) -> None:
    """Keep the folders under ``limit`` bytes: where they are over it, a checkpoint_best.pt
    that differs from the last goes (largest first): the newest weights are what a resume
    needs, and :func:`restore_best` makes the last one the best."""
    def size():
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in
                   (next(os.walk(os.path.join(runs_dir, i))) for i in ids) for f in fs)
    bests = sorted((os.path.join(runs_dir, i, "checkpoint_best.pt") for i in ids),
                   key=lambda p: -os.path.getsize(p) if os.path.isfile(p) else 0)
    for best in bests:
        if size() <= limit:
            break
        if os.path.isfile(best):
            os.remove(best)
            open(os.path.join(os.path.dirname(best), "best_is_last"), "w").close()
            print(f"{best} left behind (the round's parts would pass {limit >> 20} MiB)")


def pack(runs_dir: str, ids, out: str) -> list:
    fit(runs_dir, ids)
    tar_path = os.path.join(out, "runs.tar")
    with tarfile.open(tar_path, "w") as tar:
        for run_id in ids:
            tar.add(os.path.join(runs_dir, run_id), arcname=run_id)
    parts = []
    with open(tar_path, "rb") as f:
        for i, block in enumerate(iter(lambda: f.read(PART_BYTES), b"")):
            part = f"{tar_path}.part-{i:02d}"
            with open(part, "wb") as g:
                g.write(block)
            parts.append(part)
    os.remove(tar_path)
    return parts


def unpack(parts, runs_dir: str) -> list:
    """The run folders of a round's parts into ``runs_dir`` (a folder already there is an
    error: nothing is overwritten), each with its checkpoint_best.pt back."""
    import io
    data = b"".join(open(part, "rb").read() for part in sorted(parts))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = sorted({m.name.split("/")[0] for m in tar.getmembers()})
        there = [n for n in names if os.path.exists(os.path.join(runs_dir, n))]
        if there:
            raise SystemExit(f"gpu_round: {there} already in {runs_dir}; move them away first")
        os.makedirs(runs_dir, exist_ok=True)
        tar.extractall(runs_dir, filter="data")
    for name in names:
        restore_best(os.path.join(runs_dir, name))
    return names


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="*", help="run ids of the campaign's plan")
    p.add_argument("--data-root")
    p.add_argument("--runs-dir", required=True)
    p.add_argument("--minutes", type=float, help="training time of each run")
    p.add_argument("--out", help="where the run folders' parts are written")
    p.add_argument("--cpu", action="store_true", help="train on the CPU (to try the round)")
    p.add_argument("--plan", help="a JSON plan replacing the campaign's (tests)")
    p.add_argument("--unpack", nargs="+", metavar="PART",
                   help="back on the campaign's machine: the parts' run folders into --runs-dir")
    args = p.parse_args(argv)
    if args.unpack:
        for name in unpack(args.unpack, args.runs_dir):
            print(name, campaign.read_state(os.path.join(args.runs_dir, name)).get("epochs_run"))
        return 0
    if not (args.runs and args.data_root and args.minutes and args.out):
        p.error("a round needs run ids, --data-root, --minutes and --out (or --unpack PARTS)")
    by_id = {r.id: r for r in campaign.load_plan(args.plan)}
    unknown = [r for r in args.runs if r not in by_id]
    if unknown:
        p.error(f"unknown run ids {unknown}; the plan has {sorted(by_id)}")
    here = device_name(args.cpu)
    seconds = args.minutes * 60
    procs = {}
    manifest = campaign.Manifest.load()
    env = dict(os.environ, PYTHONUNBUFFERED="1", DEVICE="--cpu" if args.cpu else "")
    for run_id in args.runs:
        run, folder = by_id[run_id], os.path.join(args.runs_dir, run_id)
        if os.path.exists(folder):
            p.error(f"{folder} exists: a round starts runs from scratch; remove it or pick "
                    "another --runs-dir")
        os.makedirs(folder)
        cmd, start, _ = campaign.train_command(run, folder, args.data_root, seconds, None)
        state = campaign.begin(run, folder, manifest, start, None)
        campaign.note_hardware(state, f"{here}: {run.id} of the campaign, {len(args.runs)} runs "
                               "in parallel on it (recipes/zoo/gpu_round.py)")
        campaign.write_state(folder, state)
        print(time.strftime("%H:%M:%S"), f"[{run_id}]", " ".join(cmd), flush=True)
        out = open(os.path.join(folder, "driver.out"), "ab")
        procs[run_id] = (subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env), out)
    # fairseq stops each run at its --stop-time-hours (after validating and saving); a run
    # still going a minute later is stopped (it keeps its last saved checkpoint)
    deadline = time.time() + seconds + 60
    for run_id, (proc, out) in procs.items():
        try:
            proc.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait()
        out.close()
    for run_id in args.runs:
        run, folder = by_id[run_id], os.path.join(args.runs_dir, run_id)
        last = os.path.join(folder, "checkpoint_last.pt")
        state = campaign.read_state(folder)
        line = f"[{run_id}] exit {procs[run_id][0].returncode}"
        if os.path.isfile(last):
            progress = campaign.record_progress(run, folder, state)
            line += f", {state['epochs_run']:.2f} epochs, best valid loss {progress['best']}"
        campaign.write_state(folder, state)
        strip_optimizer(folder)
        print(time.strftime("%H:%M:%S"), line, flush=True)
    os.makedirs(args.out, exist_ok=True)
    for part in pack(args.runs_dir, args.runs, args.out):
        print(part, os.path.getsize(part))
    return 0


if __name__ == "__main__":
    sys.exit(main())
