"""Run fairseq's own entry points in-process (cheap) or as console commands (subprocesses)."""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

fairseq = pytest.importorskip("fairseq", reason="fairseq is not installed")
from fairseq import options  # noqa: E402
from fairseq.dataclass.utils import convert_namespace_to_omegaconf  # noqa: E402
from fairseq_cli import eval_lm as fairseq_eval_lm  # noqa: E402
from fairseq_cli import preprocess as fairseq_preprocess  # noqa: E402
from fairseq_cli import train as fairseq_train  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
USER_DIR = str(ROOT / "nq_plugin")
DEMO_TEXT = ROOT / "recipes" / "demo" / "text"
SHARED_DATA = ROOT.parent / "shared" / "data"

TINY = ["--hidden-size", "24", "--embed-dim", "24", "--batch-size", "4",
        "--tokens-per-sample", "16", "--bn-max-steps", "16"]


def preprocess(trainpref, validpref, destdir, testpref=None):
    argv = ["--only-source", "--trainpref", str(trainpref), "--validpref", str(validpref),
            "--destdir", str(destdir), "--workers", "1"]
    if testpref:
        argv += ["--testpref", str(testpref)]
    fairseq_preprocess.main(options.get_preprocessing_parser().parse_args(argv))
    return destdir


def train(data, save_dir, *extra, task="bptt_lm", arch="nq_lstm_lm_ptb_char", updates=3):
    argv = [str(data), "--user-dir", USER_DIR, "--task", task, "--arch", arch, "--cpu",
            "--optimizer", "nq_adam", "--lr", "0.01", "--max-update", str(updates),
            "--save-dir", str(save_dir), "--no-epoch-checkpoints", "--seed", "1",
            "--log-format", "none", "--num-workers", "0", *map(str, extra)]
    args = options.parse_args_and_arch(options.get_training_parser(), input_args=argv)
    fairseq_train.main(convert_namespace_to_omegaconf(args))
    return pathlib.Path(save_dir) / "checkpoint_last.pt"


def eval_lm(data, checkpoint, *extra, task="bptt_lm"):
    argv = [str(data), "--user-dir", USER_DIR, "--task", task, "--path", str(checkpoint),
            "--cpu", "--gen-subset", "valid", "--num-workers", "0", *map(str, extra)]
    args = options.parse_args_and_arch(options.get_eval_lm_parser(), input_args=argv)
    results = fairseq_eval_lm.main(convert_namespace_to_omegaconf(args))
    return {k: float(v) for k, v in results.items()}


def console(name, *args, check=True, env=None, timeout=600, input=None):
    """Run a console command of the venv this Python belongs to (``input``: its stdin)."""
    exe = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    if exe is None:
        pytest.fail(f"console command {name} not found: install the project (pip install -e .)")
    res = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, env=env,
                         timeout=timeout, input=input)
    if check and res.returncode != 0:
        raise AssertionError(f"{name} failed ({res.returncode}):\n{res.stdout[-3000:]}\n"
                             f"{res.stderr[-3000:]}")
    return res
