"""``nq-analyze RUN... --out DIR``: plots of the gradient diagnostics of one or more runs.

Each RUN is a save directory (its ``grad_norms.jsonl`` from ``--log-grad-norms`` and, if present,
its fairseq log ``train.log``) or one of those files. Writes PNG files into DIR:

* ``grad_h_vs_step.png``: ||d xi / d h_t|| against the time step t, one panel per run, one line
  per recorded update (paper Fig. 1 / appendix Figs. 6-11);
* ``grad_h_over_training.png``: ||d xi / d h_0|| (the gradient that travelled through the whole
  segment; where it overflowed, the earliest finite one, marked x) against training progress;
* ``lambda.png``: lambda_1 (solid) and lambda_2 (dashed) of the bound, all runs;
* ``g_values.png``: weight-norm gains per gate over training (runs with weight norm; Fig. 5);
* ``alpha.png``: BWN/TWN/LAB/LAT scales per gate over training (Fig. 4);
* ``curves.png``: training and validation loss of the runs with a fairseq log.
"""
import argparse
import json
import math
import os
import re
import sys
from typing import Dict, List, Optional

from . import add_verbosity, configure_logging
from ..diagnostics.record import GATES, GradNormRecord
from ..errors import UserError


class LogError(ValueError, UserError):
    """A log that cannot be read; the message names the file and line."""


def read_records(path: str) -> List[GradNormRecord]:
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:  # a damaged byte: a JSON error
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise LogError(f"{path}, line {number}: not JSON ({err.msg}); is this a "
                               "grad_norms.jsonl written by --log-grad-norms?") from None
            required = GradNormRecord.required()
            missing = ([k for k in required if k not in record] if isinstance(record, dict)
                       else required)
            if missing:
                raise LogError(f"{path}, line {number}: not a grad-norm record (missing "
                               f"{', '.join(missing)})")
            records.append(GradNormRecord.from_dict(record))
    if not records:
        raise LogError(f"{path} holds no records")
    return records


TRAIN = re.compile(r"\| train_inner \|.*?loss=([0-9.]+).*?num_updates=(\d+)")
VALID = re.compile(r"\| valid \|.*?\| loss ([0-9.]+) \|.*?num_updates (\d+)")


def read_curves(path: str) -> Dict[str, List]:
    train, valid = [], []
    with open(path, errors="replace") as f:
        for line in f:
            m = TRAIN.search(line)
            if m:
                train.append((int(m.group(2)), float(m.group(1))))
            m = VALID.search(line)
            if m:
                valid.append((int(m.group(2)), float(m.group(1))))
    return {"train": train, "valid": valid}


def load_run(path: str) -> Dict[str, object]:
    run: Dict[str, object] = {"name": os.path.basename(os.path.normpath(path)), "records": [],
                              "curves": None}
    if os.path.isdir(path):
        jsonl = os.path.join(path, "grad_norms.jsonl")
        log = os.path.join(path, "train.log")
        if os.path.isfile(jsonl):
            run["records"] = read_records(jsonl)
        if os.path.isfile(log):
            run["curves"] = read_curves(log)
        if not run["records"] and run["curves"] is None:
            raise LogError(f"{path} has neither grad_norms.jsonl nor train.log")
    elif path.endswith(".jsonl"):
        run["name"] = os.path.splitext(os.path.basename(path))[0]
        run["records"] = read_records(path)
    elif os.path.isfile(path):
        run["name"] = os.path.splitext(os.path.basename(path))[0]
        run["curves"] = read_curves(path)
    else:
        raise FileNotFoundError(f"{path} not found")
    return run


def farthest_finite(values):
    """The gradient norm at the earliest step where it is still finite (it overflows to inf
    going back in time when the gradient explodes)."""
    finite = [v for v in values if math.isfinite(v)]
    return finite[0] if finite else float("nan")


def first_layer(records):
    return [r for r in records if r.layer == 0]


PLOT_NAMES = ("grad_h_vs_step.png", "grad_h_over_training.png", "lambda.png", "g_values.png",
              "alpha.png", "curves.png")


def plot_all(runs: List[Dict[str, object]], out: str, force: bool = False) -> List[str]:
    import logging
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # before its import-time chatter

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    existing = [n for n in PLOT_NAMES if os.path.exists(os.path.join(out, n))]
    if existing and not force:
        raise FileExistsError(f"{out} already holds {', '.join(existing)}; choose another --out "
                              "or pass --force to replace them")
    os.makedirs(out, exist_ok=True)
    written = []

    def save(fig, name):
        from ..files import atomic_path
        assert name in PLOT_NAMES, name
        path = os.path.join(out, name)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        written.append(path)

    with_records = [r for r in runs if r["records"]]
    if with_records:
        fig, axes = plt.subplots(1, len(with_records), figsize=(4.2 * len(with_records), 3.4),
                                 squeeze=False)
        for ax, run in zip(axes[0], with_records):
            recs = first_layer(run["records"])
            cmap = plt.get_cmap("viridis")
            for k, rec in enumerate(recs):
                ax.plot(range(len(rec.grad_h)), rec.grad_h,
                        color=cmap(k / max(1, len(recs) - 1)), lw=1)
            ax.set_yscale("log")
            ax.set_title(run["name"], fontsize=9)
            ax.set_xlabel("time step t")
            ax.set_ylabel("||d loss / d h_t||")
        save(fig, "grad_h_vs_step.png")

        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for run in with_records:
            recs = first_layer(run["records"])
            xs = [r.x for r in recs]
            line, = ax.plot(xs, [farthest_finite(r.grad_h) for r in recs], marker="o", ms=3,
                            label=run["name"])
            overflow = [x for x, r in zip(xs, recs) if not math.isfinite(r.grad_h[0])]
            if overflow:
                ax.plot(overflow, [max(farthest_finite(r.grad_h) for r in recs)] * len(overflow),
                        ls="", marker="x", ms=9, color=line.get_color(),
                        label=f"{run['name']}: overflow (inf/nan)")
        ax.set_yscale("log")
        ax.set_xlabel("training forward (update)")
        ax.set_ylabel("||d loss / d h_t||, earliest finite t")
        ax.legend(fontsize=8)
        save(fig, "grad_h_over_training.png")

        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for run in with_records:
            recs = [r for r in first_layer(run["records"]) if r.lambda1 is not None]
            xs = [r.x for r in recs]
            line, = ax.plot(xs, [r.lambda1 for r in recs], marker="o", ms=3, label=run["name"])
            ax.plot(xs, [r.lambda2 for r in recs], ls="--", color=line.get_color())
        ax.set_yscale("log")
        ax.set_xlabel("training forward (update)")
        ax.set_ylabel("lambda_1 (solid), lambda_2 (dashed)")
        ax.legend(fontsize=8)
        save(fig, "lambda.png")

        for key, name, label in (("g", "g_values.png", "weight-norm gain g (mean)"),
                                 ("alpha", "alpha.png", "quantizer scale alpha")):
            having = [r for r in with_records
                      if any(getattr(rec, key) is not None for rec in r["records"])]
            if not having:
                continue
            fig, ax = plt.subplots(figsize=(5.5, 3.6))
            for run in having:
                recs = [r for r in first_layer(run["records"]) if getattr(r, key) is not None]
                for gate in GATES:
                    values = [r.g[gate]["mean"] if key == "g" else r.alpha[gate] for r in recs]
                    ax.plot([r.x for r in recs], values, label=f"{run['name']} {gate}")
            ax.set_xlabel("training forward (update)")
            ax.set_ylabel(label)
            ax.legend(fontsize=7, ncol=2)
            save(fig, name)

    with_curves = [r for r in runs if r["curves"] and (r["curves"]["train"] or r["curves"]["valid"])]
    if with_curves:
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for run in with_curves:
            train, valid = run["curves"]["train"], run["curves"]["valid"]
            line = None
            if train:
                line, = ax.plot(*zip(*train), label=f"{run['name']} train")
            if valid:
                ax.plot(*zip(*valid), ls="--", marker="o", ms=3,
                        color=line.get_color() if line else None, label=f"{run['name']} valid")
        ax.set_xlabel("update")
        ax.set_ylabel("loss (base 2)")
        ax.legend(fontsize=7)
        save(fig, "curves.png")
    return written


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="nq-analyze", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="save directories, grad_norms.jsonl or fairseq logs")
    p.add_argument("--out", required=True, help="directory for the PNG files")
    p.add_argument("--force", action="store_true", help="replace existing plots in --out")
    add_verbosity(p)
    args = p.parse_args(argv)
    configure_logging(args.verbose)
    try:
        runs = [load_run(path) for path in args.runs]
        written = plot_all(runs, args.out, force=args.force)
    except (LogError, FileNotFoundError, FileExistsError) as err:
        print(f"nq-analyze: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
