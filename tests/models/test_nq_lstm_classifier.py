"""nq_lstm_classifier: reference initialisation, 784-step per-pixel passes, size."""
import json

import pytest
import torch
from omegaconf import OmegaConf

from nq_plugin.models.nq_lstm_classifier import NQLSTMClassifier, NQLSTMClassifierConfig
from tests.fairseq_utils import console


def build(**overrides):
    options = {"hidden_size": 100, "bn_max_steps": 784, "layer_norm_gain": 0.1, **overrides}
    torch.manual_seed(0)
    return NQLSTMClassifier(OmegaConf.structured(NQLSTMClassifierConfig(**options)), 1)


def test_reference_initialisation():
    layer = build().lstm.layers[0]
    w_ih, w_hh, b = layer.weight_ih.detach(), layer.weight_hh.detach(), layer.bias.detach()
    torch.testing.assert_close(w_ih.t() @ w_ih, torch.eye(1))  # orthogonal (unit) column
    for k in range(4):
        block = w_hh[k * 100:(k + 1) * 100]
        torch.testing.assert_close(block.diagonal(), torch.ones(100))
        assert (block - torch.eye(100)).abs().max() <= 1e-3
    assert torch.all(b[100:200] == 1) and torch.all(b[:100] == 0) and torch.all(b[200:] == 0)


def test_chrono_initialisation():
    """Tallec & Ollivier's gate biases over the reference weights: b_f = log U(1, T - 1),
    b_i = -b_f; the other gates as the reference's."""
    reference = build().lstm.layers[0]
    layer = build(init="chrono", chrono_steps=784).lstm.layers[0]
    b = layer.bias.detach()
    forget = b[100:200]
    assert forget.min() >= 0 and forget.max() <= torch.log(torch.tensor(783.0)) + 1e-6
    assert forget.std() > 0.5 and 5.0 < forget.mean() < 6.3  # E log U(1, 783) = 5.67
    torch.testing.assert_close(b[:100], -forget)
    assert torch.all(b[200:] == 0)
    torch.testing.assert_close(layer.weight_hh.detach(), reference.weight_hh.detach())
    with pytest.raises(ValueError, match="chrono-steps"):
        build(init="chrono", chrono_steps=2)


@pytest.mark.slow
@pytest.mark.parametrize("norm,stats", [("none", "shared"), ("weight", "shared"),
                                        ("layer", "shared"), ("batch", "shared"),
                                        ("batch", "separate"), ("power", "shared")])
def test_784_step_forward_backward_every_norm(norm, stats):
    model = build(quantizer="bc", norm=norm, bn_stats=stats, init_state_noise=0.1,
                  hidden_size=16)
    pixels = torch.rand(4, 784, 1) * (torch.rand(4, 784, 1) > 0.8)
    target = torch.tensor([0, 3, 7, 9])
    loss = torch.nn.functional.cross_entropy(model(pixels), target)
    loss.backward()
    assert torch.isfinite(loss)
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["lstm.layers.0.weight_hh"].abs().sum() > 0  # (h0's may vanish over 784 steps)
    model.eval()
    assert model(pixels).shape == (4, 10)


def test_initial_state_noise_only_in_training():
    model = build(init_state_noise=0.1, hidden_size=8)
    x = torch.rand(2, 20, 1)
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    assert not torch.allclose(model(x), model(x))


def test_nq_summary_of_a_trained_classifier(tmp_path):
    """bc + weight norm: the paper's 8 KB of the unnormalized binary model (W_h binary, W_x
    and the 4H bias fp32; tests/test_sizes.py) plus 8H weight-norm gains."""
    from tests.data.test_mnist import synthetic
    data = tmp_path / "mnist"
    data.mkdir()
    synthetic(data, n_train=40, n_test=16)
    console("fairseq-train", data, "--user-dir", "nq_plugin", "--task", "sequential_mnist",
            "--valid-size", "16", "--arch", "nq_lstm_classifier_smnist", "--criterion",
            "sequence_classification", "--quantizer", "bc", "--norm", "weight", "--optimizer",
            "nq_adam", "--lr", "0.002", "--batch-size", "8", "--max-update", "1", "--cpu",
            "--save-dir", tmp_path / "ck", "--no-epoch-checkpoints")
    out = console("nq-summary", tmp_path / "ck" / "checkpoint_last.pt", "--json").stdout
    summary = json.loads(out.strip().splitlines()[-1])
    unnormalized = (40000 + 32 * (400 + 400)) / 8 / 1024  # = 8.0 KB, the paper's number
    assert summary["lstm_kb"] == pytest.approx(unnormalized + 800 * 4 / 1024)
    assert summary["layers"][0]["bits_ih"] == 32 and summary["layers"][0]["bits_hh"] == 1
