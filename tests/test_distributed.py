"""fairseq's own DDP engine on CPU: torchrun, 2 processes, gloo (nq_plugin/distributed.py)."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

from tests.fairseq_utils import DEMO_TEXT, console

MODEL = ["--user-dir", "nq_plugin", "--task", "bptt_lm", "--arch", "nq_lstm_lm_ptb_char",
         "--hidden-size", "24", "--quantizer", "bc", "--norm", "weight",
         "--tokens-per-sample", "20", "--optimizer", "nq_adam", "--lr", "0.01",
         "--max-update", "6", "--cpu", "--no-epoch-checkpoints", "--seed", "3"]


def free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it), for torchrun's rendezvous."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_process_with_both_shards(tmp_path):
    console("fairseq-preprocess", "--only-source", "--trainpref", DEMO_TEXT / "train.txt",
            "--validpref", DEMO_TEXT / "valid.txt", "--testpref", DEMO_TEXT / "valid.txt",
            "--destdir", tmp_path / "bin", "--workers", "1")
    bindir = os.path.dirname(sys.executable)
    torchrun = shutil.which("torchrun", path=bindir) or shutil.which("torchrun")
    train = shutil.which("fairseq-train", path=bindir) or shutil.which("fairseq-train")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_port", str(free_port()), train, tmp_path / "bin",
         *MODEL, "--batch-size", "4", "--distributed-backend", "gloo",
         "--save-dir", tmp_path / "ddp"],
        capture_output=True, text=True, env=env, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "distributed init (rank 1)" in out  # one process group of two workers ...
    assert "bsz 8 " in out  # ... whose updates see both workers' 4 columns
    # worker k takes columns 4k..4k+3 of an 8-column grid: one process with 8 columns sees the
    # same data, and with gradients averaged the same model comes out
    console("fairseq-train", tmp_path / "bin", *MODEL, "--batch-size", "8",
            "--save-dir", tmp_path / "single")
    a = torch.load(tmp_path / "ddp" / "checkpoint_last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "single" / "checkpoint_last.pt", weights_only=True)["model"]
    for key, value in b.items():
        if torch.is_tensor(value) and value.is_floating_point():
            torch.testing.assert_close(a[key], value, atol=1e-5, rtol=1e-4, msg=key)
    ev = console("fairseq-eval-lm", tmp_path / "bin", "--user-dir", "nq_plugin", "--task",
                 "bptt_lm", "--path", tmp_path / "ddp" / "checkpoint_last.pt", "--cpu")
    assert "Perplexity" in ev.stdout + ev.stderr
