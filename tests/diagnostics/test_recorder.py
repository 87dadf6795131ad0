"""--log-grad-norms: recorded ||d loss / d h_t|| against an independent autograd computation,
no hooks when off, records written through fairseq (and plotted by nq-analyze)."""
import json

import pytest
import torch

from nq_plugin.diagnostics.recorder import recorded_forward
from nq_plugin.nn import NQLSTM
from tests.fairseq_utils import TINY, console, train


@pytest.mark.parametrize("quantizer,norm", [("fp", "none"), ("bc", "weight"), ("tc", "layer"),
                                            ("bwn", "batch")])
def test_recorded_gradient_norms_equal_autograd(quantizer, norm):
    torch.manual_seed(0)
    lstm = NQLSTM(3, 5, 1, quantizer=quantizer, norm=norm)
    layer = lstm.layers[0]
    x = torch.randn(6, 4, 3)
    target = torch.randn(6, 4, 5)
    records = []
    out, _ = recorded_forward(layer, x, None, 0, records.append)
    ((out - target) ** 2).sum().backward()
    assert len(records) == 1
    recorded = records[0]["grad_h"]

    # independently: the same cell written out here, h_t kept with retain_grad
    layer.zero_grad()
    w_ih, w_hh = layer.effective_weights()
    px = layer.ih_norm.sequence(x @ w_ih.t(), 0) + layer.bias
    h = c = torch.zeros(4, 5)
    hs = []
    for t in range(6):
        g = px[t] + layer.hh_norm.step(h @ w_hh.t(), t)
        i, f, a, o = g.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(a)
        h = torch.sigmoid(o) * torch.tanh(c)
        h.retain_grad()
        hs.append(h)
    ((torch.stack(hs) - target) ** 2).sum().backward()
    expected = [float(h.grad.norm()) for h in hs]
    assert recorded == pytest.approx(expected, rel=1e-4)
    assert records[0]["lambda1"] >= records[0]["lambda2"] > 0


def test_logging_off_adds_no_hooks(monkeypatch):
    from omegaconf import OmegaConf
    from fairseq.data import Dictionary
    from nq_plugin.models.nq_lstm_lm import NQLSTMDecoder, NQLSTMLMConfig
    d = Dictionary()
    for s in "abcd":
        d.add_symbol(s)
    dec = NQLSTMDecoder(OmegaConf.structured(NQLSTMLMConfig(hidden_size=6, embed_dim=6)), d)
    calls = []
    original = torch.Tensor.register_hook
    monkeypatch.setattr(torch.Tensor, "register_hook",
                        lambda self, hook: calls.append(1) or original(self, hook))
    out, _ = dec(torch.randint(4, 8, (2, 5)))
    out.sum().backward()
    assert calls == []


def test_fairseq_train_writes_records_and_nq_analyze_plots(demo_char_data, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install -e '.[test]')")
    train(demo_char_data, tmp_path / "run", *TINY, "--quantizer", "twn", "--norm", "weight",
          "--log-grad-norms", "2", updates=6)
    lines = (tmp_path / "run" / "grad_norms.jsonl").read_text().splitlines()
    assert len(lines) == 3  # forwards 0, 2, 4
    record = json.loads(lines[0])
    assert len(record["grad_h"]) == 16 and "g" in record and "alpha" in record
    res = console("nq-analyze", tmp_path / "run", "--out", tmp_path / "plots")
    written = res.stdout.split()
    assert {p.rsplit("/", 1)[-1] for p in written} >= {
        "grad_h_vs_step.png", "grad_h_over_training.png", "lambda.png", "g_values.png",
        "alpha.png"}
    for path in written:
        data = open(path, "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
