"""Learning curves of the zoo's language models: validation loss (base 2) against the epoch,
read from each model's logs/train.log, with the paper's test number as a dashed line.

    python zoo/plot_curves.py        # writes zoo/curves/ptb_char.png and zoo/curves/ptb_word.png
"""
import json
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
VALID = re.compile(r"\| valid \| epoch (\d+) \| valid on 'valid' subset \| loss ([0-9.]+)")


def curve(log):
    points = {}
    for line in open(log, encoding="utf-8", errors="replace"):
        m = VALID.search(line)
        if m:
            points[int(m.group(1))] = float(m.group(2))  # a resumed round re-logs an epoch
    return sorted(points.items())


def main():
    manifest = json.load(open(os.path.join(os.path.dirname(HERE), "nq_plugin", "zoo", "manifest.json")))
    for dataset, ylabel in (("ptb_char", "validation BPC"),
                            ("ptb_word", "validation loss (bits per word)")):
        entries = [m for m in manifest["models"] if m["dataset"] == dataset]
        if not entries:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4))
        for i, m in enumerate(entries):
            pts = curve(os.path.join(HERE, m["bundled"], "logs", "train.log"))
            color = f"C{i}"
            ax.plot([e for e, _ in pts], [v for _, v in pts], "o-", ms=3, color=color,
                    label=f"{m['name']} (test {m['metric']['value']:.3f})")
            paper = m["metric"]["paper"]
            if paper is not None and m["metric"]["name"] == "bpc":
                ax.axhline(paper, ls="--", lw=0.8, color=color)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{dataset}: dashed = the paper's test number")
        ax.legend(fontsize=7)
        fig.tight_layout()
        out = os.path.join(HERE, "curves", f"{dataset}.png")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        fig.savefig(out + ".tmp.png", dpi=110)
        os.replace(out + ".tmp.png", out)
        print(out)


if __name__ == "__main__":
    main()
