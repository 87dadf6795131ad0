"""The zoo as a table: the README's markdown table (``nq-zoo list --markdown``; zoo/readme_table.py
writes it into the README, tests/test_readme.py checks they agree) and the rows of ``nq-zoo
list``."""
from __future__ import annotations

from typing import List, Tuple

from .manifest import Manifest

METRIC_LABEL = {"bpc": "BPC", "perplexity": "PPL", "accuracy": "acc %"}
QUANTIZER_SHORT = {"fp": "fp", "bc": "BinaryConnect", "tc": "TerConnect", "bwn": "BWN",
                   "twn": "TWN", "lab": "LAB", "lat": "LAT"}


def markdown_table(manifest: Manifest) -> str:
    """The README's zoo table, from the manifest (tests/test_readme.py checks they agree)."""
    rows = ["| model | quantizer + norm | LSTM KB (paper) | test metric (ours) | paper | "
            "reproduced | epochs |", "|---|---|---|---|---|---|---|"]
    for e in manifest.models.values():
        q = QUANTIZER_SHORT.get(e.quantizer, e.quantizer)
        options = "".join(f", {k}={v}" for k, v in sorted(e.norm_options.items()))
        how = f"{q} + {e.norm}{options}"
        paper_kb = e.sizes.get("paper_kb")
        m = e.metric
        value = {"bpc": f"{m.value:.3f} BPC", "perplexity": f"{m.value:.1f} PPL",
                 "accuracy": f"{m.value:.2f} % test accuracy"}[m.name]
        ok = {True: "yes", False: "not yet", None: "—"}[m.within_paper()]
        rows.append(f"| {e.name} | {how} | {e.sizes['lstm_kb']:.1f} "
                    f"({'—' if paper_kb is None else format(paper_kb, 'g')}) | {value} | "
                    f"{'—' if m.paper is None else format(m.paper, 'g')} | {ok} | "
                    f"{e.epochs:g} |")
    return "\n".join(rows)




def list_rows(manifest: Manifest) -> List[Tuple[str, ...]]:
    """``nq-zoo list``'s rows, a header first."""
    rows = [("name", "task", "quant", "norm", "LSTM KB", "paper KB", "metric", "measured",
             "paper", "epochs", "files")]
    for e in manifest.models.values():
        m = e.metric
        rows.append((e.name, e.dataset, e.quantizer, e.norm, f"{e.sizes['lstm_kb']:.1f}",
                     "-" if e.sizes.get("paper_kb") is None else f"{e.sizes['paper_kb']:g}",
                     f"{METRIC_LABEL[m.name]} ({m.split})", f"{m.value:.3f}",
                     "-" if m.paper is None else f"{m.paper:g}", f"{e.epochs:g}",
                     "bundled" if e.bundled else ("hub" if e.revision else "-")))
    return rows
