"""recipes/smnist/probe_init.py on the real MNIST: it fits 100 images and prints the loss every
20 steps (chance level is the labels' entropy, below ln 10)."""
import math
import re
import subprocess
import sys

import pytest

from tests.fairseq_utils import ROOT


@pytest.mark.slow
def test_probe_prints_the_loss_every_20_steps(small_mnist):
    done = subprocess.run([sys.executable, str(ROOT / "recipes" / "smnist" / "probe_init.py"),
                           str(small_mnist), "--norm", "layer", "--init", "chrono",
                           "--steps", "20"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = re.findall(r"^bc layer chrono step (\d+) loss ([0-9.]+)", done.stdout, re.M)
    assert [int(step) for step, _ in lines] == [20]
    assert 0 < float(lines[0][1]) < math.log(10) + 0.1
