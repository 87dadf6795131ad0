"""Safe loading: our checkpoints load with torch's weights-only loader, code-executing pickles are
refused (by fairseq-eval-lm and by the plugin's own commands), corrupt files get clear errors."""
import os

import pytest
import torch

from nq_plugin.checkpoint import CheckpointError, load_checkpoint
from tests.fairseq_utils import TINY, console, train


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def trained(demo_char_data, tmp_path_factory):
    return train(demo_char_data, tmp_path_factory.mktemp("ck"), *TINY, "--quantizer", "tc",
                 "--norm", "batch", "--bn-stats", "separate")


def test_our_checkpoint_needs_no_unsafe_globals(trained):
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(trained)) == []
    state = load_checkpoint(str(trained))
    assert "decoder.lstm.layers.0.weight_hh" in state["model"]


def _malicious(tmp_path, trained):
    marker = tmp_path / "pwned"
    state = torch.load(trained, weights_only=True)
    state["extra_state"]["payload"] = Exploit(marker)
    path = tmp_path / "checkpoint_evil.pt"
    torch.save(state, path)
    return path, marker


def test_code_executing_checkpoint_refused_by_our_loader(tmp_path, trained):
    path, marker = _malicious(tmp_path, trained)
    with pytest.raises(CheckpointError, match="refusing to load.*tampered"):
        load_checkpoint(str(path))
    assert not marker.exists()


def test_code_executing_checkpoint_refused_by_fairseq_eval_lm(tmp_path, trained, demo_char_data):
    path, marker = _malicious(tmp_path, trained)
    env = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"}
    res = console("fairseq-eval-lm", demo_char_data, "--user-dir", "nq_plugin", "--task",
                  "bptt_lm", "--path", path, "--cpu", "--gen-subset", "valid", check=False,
                  env=env)
    assert res.returncode != 0
    assert "Weights only load failed" in res.stderr and "GLOBAL posix.system" in res.stderr
    assert not marker.exists()
    # and the genuine checkpoint evaluates with the same command and environment
    ok = console("fairseq-eval-lm", demo_char_data, "--user-dir", "nq_plugin", "--task",
                 "bptt_lm", "--path", trained, "--cpu", "--gen-subset", "valid", env=env)
    assert "Perplexity" in ok.stderr + ok.stdout


def test_nq_summary_on_bad_checkpoints(tmp_path, trained):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(trained.read_bytes()[:1000])
    res = console("nq-summary", truncated, check=False)
    assert res.returncode == 2 and "truncated or corrupt" in res.stderr
    res = console("nq-summary", tmp_path / "missing.pt", check=False)
    assert res.returncode == 2 and "not found" in res.stderr
    path, marker = _malicious(tmp_path, trained)
    res = console("nq-summary", path, check=False)
    assert res.returncode == 2 and "refusing to load" in res.stderr and not marker.exists()


def _state(tmp_path, **model):
    import torch
    weights = {"decoder.lstm.layers.0.weight_hh": torch.randn(400, 250)}
    weights.update(model)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": weights, "cfg": {"model": {"_name": "nq_lstm_lm"}}}, path)
    return path


def test_zeroed_bytes_inside_a_checkpoint_are_detected(tmp_path):
    """Regression: 64 zeroed bytes in the middle loaded silently (only is_zipfile was checked)."""
    from nq_plugin.checkpoint import CheckpointError, load_checkpoint
    path = _state(tmp_path)
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(64)
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(str(path))


def test_non_finite_latent_weights_are_refused_naming_the_tensor(tmp_path):
    """Regression: a NaN in weight_hh loaded (sign(NaN) = -1 for BC) and trained on."""
    import torch
    from nq_plugin.checkpoint import CheckpointError, load_checkpoint
    w = torch.randn(400, 250)
    w[3, 4] = float("nan")
    path = _state(tmp_path, **{"decoder.lstm.layers.0.weight_hh": w})
    with pytest.raises(CheckpointError, match=r"weight_hh holds 1 NaN"):
        load_checkpoint(str(path))


def test_fairseq_loading_refuses_non_finite_parameters():
    """fairseq's own path (resume, eval-lm): the model's load_state_dict refuses NaN too."""
    import torch
    from tests.models.test_nq_lstm_lm import _decoder
    from nq_plugin.checkpoint import CheckpointError
    from nq_plugin.models.nq_lstm_lm import NQLSTMLanguageModel
    model = NQLSTMLanguageModel(_decoder())
    state = model.state_dict()
    key = next(k for k in state if k.endswith("weight_hh"))
    state[key] = torch.full_like(state[key], float("inf"))
    with pytest.raises(CheckpointError, match=key):
        model.load_state_dict(state)
