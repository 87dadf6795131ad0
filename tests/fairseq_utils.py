"""Run fairseq's own entry points in-process (cheap) or as console commands (subprocesses)."""
import json
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
    """Run a console command of the venv this Python belongs to (``input``: its stdin): forked
    from the worker's console server (tests/console_server.py: torch and fairseq imported once)
    for the installed entry points, a fresh process when NQ_TEST_SPAWN_CONSOLES=1 or the
    command is not one of them (tests/test_consoles.py runs each for real)."""
    exe = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    if exe is None:
        pytest.fail(f"console command {name} not found: install the project (pip install -e .)")
    argv = [exe, *map(str, args)]
    res = _SERVER.run(name, argv, env, timeout, input)
    if res is None:
        res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout,
                             input=input)
    if check and res.returncode != 0:
        raise AssertionError(f"{name} failed ({res.returncode}):\n{res.stdout[-3000:]}\n"
                             f"{res.stderr[-3000:]}")
    return res


class _ConsoleServer:
    """The worker's tests/console_server.py, started on first use; ``run`` returns None where
    the command is to run as a fresh process instead."""

    def __init__(self):
        self.proc = None
        self.broken = os.environ.get("NQ_TEST_SPAWN_CONSOLES") == "1"

    def _start(self):
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "console_server.py")], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        if self.proc.stdout.readline().strip() != "ready":
            self.broken = True

    def _reply(self, deadline):
        import select
        import time
        left = deadline - time.monotonic()
        ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, left))
        if not ready:
            return None
        line = self.proc.stdout.readline()
        if not line:
            self.broken = True
            raise RuntimeError("the console server ended (tests/console_server.py)")
        return line.split()

    def run(self, name, argv, env, timeout, input):
        import locale
        import signal
        import tempfile
        import time
        if self.broken or os.path.dirname(argv[0]) != os.path.dirname(sys.executable):
            return None
        if self.proc is None or self.proc.poll() is not None:
            self._start()
            if self.broken:
                return None
        with tempfile.TemporaryDirectory(prefix="console-") as folder:
            paths = {k: os.path.join(folder, k) for k in ("stdin", "stdout", "stderr")}
            if input is not None:
                with open(paths["stdin"], "w", encoding="utf-8") as f:
                    f.write(input)
            request = {"name": name, "argv": argv, "env": dict(os.environ if env is None
                                                                else env),
                       "cwd": os.getcwd(), "stdin": paths["stdin"] if input is not None
                       else None, "stdout": paths["stdout"], "stderr": paths["stderr"]}
            deadline = time.monotonic() + timeout
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            kind, value = self._reply(deadline + 60)
            if kind == "rc":  # not an installed entry point
                return None
            pid = int(value)
            reply = self._reply(deadline)
            if reply is None:
                os.kill(pid, signal.SIGKILL)
                self._reply(deadline + 60)
                raise subprocess.TimeoutExpired(argv, timeout)
            encoding = locale.getpreferredencoding(False)
            out, err = (open(paths[k], encoding=encoding, errors="strict").read()
                        for k in ("stdout", "stderr"))
            return subprocess.CompletedProcess(argv, int(reply[1]), out, err)


_SERVER = _ConsoleServer()
