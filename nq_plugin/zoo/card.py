"""Model cards for zoo models, written with ``huggingface_hub``'s ``ModelCard`` /
``ModelCardData`` + ``EvalResult`` (the ``model-index`` block the Hub shows: task, dataset,
split, metric, value; never marked verified)."""
from __future__ import annotations

from .manifest import ZooEntry

PAPER = ("Lu Hou, Jinhua Zhu, James T. Kwok, Fei Gao, Tao Qin, Tie-Yan Liu. *Normalization "
         "Helps Training of Quantized LSTM*. NeurIPS 2019")
CITATION = """@inproceedings{hou2019normalization,
  title     = {Normalization Helps Training of Quantized {LSTM}},
  author    = {Hou, Lu and Zhu, Jinhua and Kwok, James T. and Gao, Fei and Qin, Tao and Liu, Tie-Yan},
  booktitle = {Advances in Neural Information Processing Systems},
  year      = {2019}
}"""
QUANTIZER_NAMES = {"fp": "full precision", "bc": "BinaryConnect (1 bit)",
                   "tc": "TerConnect (2 bits)", "bwn": "BWN (1 bit + scale)",
                   "twn": "TWN (2 bits + scale)", "lab": "LAB (1 bit, loss-aware)",
                   "lat": "LAT (2 bits, loss-aware)"}
METRIC_TYPES = {"bpc": ("bpc", "bits per character"), "perplexity": ("perplexity", "perplexity"),
                "accuracy": ("accuracy", "test accuracy (%)")}
TASK_TYPES = {"bptt_lm": ("text-generation", "Language modeling"),
              "sequential_mnist": ("image-classification", "Sequential MNIST classification")}


def _fmt(value) -> str:
    return "—" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))


def _packed_sentence(entry: ZooEntry) -> str:
    if not any(f.path.startswith("packed/") for f in entry.files):
        return ("No bit-packed copy is bundled (for a language model `nq-pack` makes one from "
                "model.pt).")
    sentence = ("The bit-packed copy in `packed/` stores the LSTM weights at 1 (binary) or 2 "
                "(ternary) bits each.")
    if entry.unbundled():
        sentence += (" The nq_plugin repository's bundled copy leaves `packed/` out (its size); "
                     "`--packed` rebuilds it from model.pt with nq-pack on first use and uses "
                     "it only if every file matches the sha256 below.")
    return sentence


def _schedule_lines(entry: ZooEntry):
    """The last training phase's schedule and where it left off (recipes/zoo/campaign.py)."""
    t = entry.training
    if not t:
        return []
    lines = [f"Last phase ({t.get('run', 'campaign run')}): {t.get('schedule', '')}".rstrip()]
    reached = [f"{k} {t[k]:g}" if isinstance(t[k], float) else f"{k} {t[k]}"
               for k in ("epochs", "lr", "best_valid") if t.get(k) is not None]
    if reached:
        lines[0] += f" Where it left off: {', '.join(reached)}."
    return lines + [""]


def card_body(entry: ZooEntry) -> str:
    m, s = entry.metric, entry.sizes
    q = QUANTIZER_NAMES.get(entry.quantizer, entry.quantizer)
    norm = entry.norm + "".join(f", {k}={v}" for k, v in sorted(entry.norm_options.items()))
    gap = "" if m.paper is None else f"{m.value - m.paper:+.3f}"
    hub = (f"`{entry.repo_id}` (nq_plugin's zoo manifest pins the commit and every "
           f"file's sha256; the files are also bundled in the nq_plugin repository under "
           f"`zoo/{entry.bundled}`)")
    files = "\n".join(f"| `{f.path}` | {f.size:,} | `{f.sha256}` |" for f in entry.files)
    lines = [
        f"# {entry.name}",
        "",
        f"A {q} LSTM with **{norm}** normalization, trained on **{entry.dataset}** with "
        f"nq_plugin for fairseq, reproducing a row of {PAPER}.",
        "",
        f"Hub repository: {hub}.",
        "",
        "## Results (measured)",
        "",
        f"| metric | split | this model | paper | difference |",
        "|---|---|---|---|---|",
        f"| {METRIC_TYPES[m.name][1]} | {m.split} | **{m.value:.3f}** | {_fmt(m.paper)} | {gap} |",
        "",
        f"Measured with `{m.command}` (log: [`{m.log}`]({m.log})).",
        "",
        "## Size (as the paper counts it)",
        "",
        "| part | KB | fp32 KB | ratio |",
        "|---|---|---|---|",
        f"| LSTM layers | {s['lstm_kb']:.1f} | {s['lstm_fp32_kb']:.1f} | "
        f"{s['lstm_fp32_kb'] / s['lstm_kb']:.1f}x |",
        f"| whole model (other weights in fp32) | {s['total_kb']:.1f} | "
        f"{s['total_fp32_kb']:.1f} | |",
        "",
        f"Paper: {'—' if s.get('paper_kb') is None else format(s['paper_kb'], 'g')} KB for the "
        "LSTM. " + _packed_sentence(entry),
        "",
        "## Files",
        "",
        "| file | bytes | sha256 |",
        "|---|---|---|",
        files,
        "",
        "## How to use",
        "",
        "```bash",
        f"nq-zoo download {entry.name}          # verified against the sha256 above",
        f"nq-zoo eval {entry.name} [--data DATA_BIN]",
        f"nq-zoo sample {entry.name} --prompt \"the market\"" if entry.task == "bptt_lm" else "",
        "```",
        "",
    ]
    if entry.task == "bptt_lm":
        lines += [
            "With fairseq directly (the command that measured the number above; `--user-dir` is "
            "the installed `nq_plugin` folder, DATA_BIN the recipe's binarized data):",
            "",
            "```bash",
            entry.metric.command,
            "```",
            "",
            "```python",
            "import nq_plugin.zoo",
            f"lm = nq_plugin.zoo.load(\"{entry.name}\")            # or a local folder",
            "print(lm.score(\"the market\"), lm.sample(\"the market\", length=100))",
            "```",
            "",
        ]
    lines += [
        "## Training",
        "",
        f"Trained for {entry.epochs:g} epochs on {entry.trained_on}:",
        "",
        "```bash",
        entry.train_command,
        "```",
        "",
        *_schedule_lines(entry),
        "Logs: `logs/`.",
        "",
        "## Limitations",
        "",
        entry.notes or "Fewer epochs than the paper's 200; see the gap above.",
        "",
        "## Citation",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    return "\n".join(lines)


def model_card(entry: ZooEntry):
    from huggingface_hub import EvalResult, ModelCard, ModelCardData
    task_type, task_name = TASK_TYPES[entry.task]
    metric_type, metric_name = METRIC_TYPES[entry.metric.name]
    data = ModelCardData(
        library_name="fairseq", license=entry.license.lower(), model_name=entry.name,
        tags=["nq_plugin", "quantized", "lstm", entry.quantizer, f"{entry.norm}-norm"],
        datasets=[entry.dataset], metrics=[metric_type],
        eval_results=[EvalResult(task_type=task_type, task_name=task_name,
                                 dataset_type=entry.dataset, dataset_name=entry.dataset,
                                 dataset_split=entry.metric.split, metric_type=metric_type,
                                 metric_name=metric_name,
                                 metric_value=round(float(entry.metric.value), 4))])
    return ModelCard("---\n" + data.to_yaml() + "\n---\n\n" + card_body(entry))
