"""Size accounting reproduces every size of Hou et al. (NeurIPS 2019) listed in docs/design.md section 3."""
import pytest
import torch

from nq_plugin.nn import NQLSTM
from nq_plugin.sizes import summary

# (input, hidden, layers, quantizer, norm, bn_stats, T_max, quantize_input, paper KB)
CHAR = [("fp", 4504, 4520, 4536, 4568, 7736), ("bc", 149, 165, 181, 213, 3381),
        ("tc", 289, 305, 321, 353, 3521)]
WORD = [("fp", 2817, None, None, None, None), ("bc", 93, 102, 111, 130, 767),
        ("tc", 180, 190, 199, 218, 855)]
NORMS = [("none", "shared"), ("weight", "shared"), ("layer", "shared"), ("batch", "shared"),
         ("batch", "separate")]


def paper_rows():
    rows = []
    for vocab_or_embed, hidden, table, tmax in ((50, 512, CHAR, 100), (300, 300, WORD, 35)):
        for quantizer, *sizes in table:
            for (norm, stats), kb in zip(NORMS, sizes):
                if kb is not None:
                    rows.append((vocab_or_embed, hidden, 1, quantizer, norm, stats, tmax, True, kb))
    rows += [
        (87, 512, 1, "fp", "none", "shared", 100, True, 4800),
        (87, 512, 1, "bc", "none", "shared", 100, True, 158),
        (87, 512, 1, "bc", "weight", "shared", 100, True, 174),
        (87, 512, 1, "bc", "layer", "shared", 100, True, 190),
        (87, 512, 1, "bc", "batch", "shared", 100, True, 222),
        (87, 512, 1, "bc", "batch", "separate", 100, True, 3390),
        (27, 2000, 1, "fp", "none", "shared", 180, True, 63375),
        (27, 2000, 1, "bc", "none", "shared", 180, True, 2011),
        (650, 650, 1, "fp", "none", "shared", 35, True, 13213),
        (650, 650, 1, "bc", "none", "shared", 35, True, 423),
        (650, 650, 1, "tc", "none", "shared", 35, True, 835),
        (650, 650, 2, "fp", "none", "shared", 35, True, 26427),
        (650, 650, 2, "bc", "none", "shared", 35, True, 846),
        (650, 650, 2, "tc", "none", "shared", 35, True, 1671),
        (1, 100, 1, "bc", "none", "shared", 784, False, 8),
    ]
    return rows


def build(inp, hidden, layers, quantizer, norm, stats, tmax, qin):
    with torch.device("meta"):
        return NQLSTM(inp, hidden, layers, quantizer=quantizer, norm=norm, bn_stats=stats,
                      bn_max_steps=tmax, quantize_input=qin)


@pytest.mark.parametrize("row", paper_rows(), ids=lambda r: "-".join(map(str, r)))
def test_summary_matches_paper_to_1kb(row):
    *spec, kb = row
    result = summary(build(*spec), print_fn=None)
    assert abs(result["lstm_kb"] - kb) <= 1.0, (result["lstm_kb"], kb)


def test_declared_counts_match_real_tensors():
    """The counts the norms declare equal the tensors they really hold."""
    for norm, stats in NORMS + [("power", "shared")]:
        m = NQLSTM(6, 4, 1, quantizer="bc", norm=norm, bn_stats=stats, bn_max_steps=5)
        layer = m.layers[0]
        for n in (layer.ih_norm, layer.hh_norm):
            assert n.counted_parameters() == sum(p.numel() for p in n.parameters())
            stats_held = sum(b.numel() for name, b in n.named_buffers()
                             if name in ("running_mean", "running_var", "running_phi"))
            assert n.counted_statistics() == stats_held


def test_summary_whole_model_and_table():
    class LM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(100, 16)
            self.lstm = NQLSTM(16, 32, 1, quantizer="bc", norm="weight")
            self.out = torch.nn.Linear(32, 100)

    lines = []
    result = summary(LM(), print_fn=lines.append)
    lstm = (4 * 32 * (16 + 32) * 1 + 32 * (4 * 32 + 8 * 32)) / 8 / 1024
    assert result["lstm_kb"] == pytest.approx(lstm)
    other = (100 * 16 + 32 * 100 + 100) * 4 / 1024
    assert result["other_kb"] == pytest.approx(other)
    assert result["total_kb"] == pytest.approx(lstm + other)
    assert result["compression"] > 10
    table = lines[0]
    assert "lstm.layers.0" in table and "embed.weight" in table and "KB" in table
