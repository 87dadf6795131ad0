"""sequential_mnist through the real console commands on a few thousand real MNIST images
(the ``small_mnist`` fixture of tests/conftest.py)."""
import re

import pytest

from tests.fairseq_utils import console


@pytest.mark.slow
def test_train_then_validate_on_test_split(small_mnist, tmp_path):
    common = ["--user-dir", "nq_plugin", "--task", "sequential_mnist", "--pixels-per-step", "28",
              "--valid-size", "500", "--criterion", "sequence_classification", "--cpu"]
    log = console("fairseq-train", small_mnist, *common, "--arch", "nq_lstm_classifier_smnist",
                  "--quantizer", "bc", "--norm", "layer", "--bn-max-steps", "28",
                  "--optimizer", "nq_adam", "--lr", "0.005", "--clip-norm", "1",
                  "--batch-size", "50", "--max-update", "280", "--save-dir", tmp_path,
                  "--no-epoch-checkpoints", "--best-checkpoint-metric", "accuracy",
                  "--maximize-best-checkpoint-metric", "--log-format", "simple")
    valid = [float(a) for a in re.findall(r"valid on 'valid' subset .*?accuracy ([0-9.]+)",
                                          log.stdout + log.stderr)]
    assert valid and max(valid) > 50, valid  # chance is 10%
    res = console("fairseq-validate", small_mnist, *common, "--path",
                  tmp_path / "checkpoint_best.pt", "--valid-subset", "test", "--batch-size", "100")
    test = re.search(r"valid on 'test' subset .*?accuracy ([0-9.]+)", res.stdout + res.stderr)
    assert test and float(test.group(1)) > 50


def test_permuted_variant_trains(small_mnist, tmp_path):
    log = console("fairseq-train", small_mnist, "--user-dir", "nq_plugin", "--task",
                  "sequential_mnist", "--pixels-per-step", "28", "--valid-size", "500",
                  "--permute", "--permute-seed", "3", "--criterion", "sequence_classification",
                  "--arch", "nq_lstm_classifier_smnist", "--quantizer", "tc", "--norm", "batch",
                  "--bn-stats", "separate", "--bn-max-steps", "28", "--init-state-noise", "0.1",
                  "--optimizer", "nq_adam", "--lr", "0.005", "--batch-size", "50",
                  "--max-update", "20", "--save-dir", tmp_path, "--cpu", "--log-format", "simple")
    assert "pMNIST: permutation of seed 3" in log.stdout + log.stderr
