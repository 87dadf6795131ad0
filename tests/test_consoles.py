"""The console commands as installed: each runs as a fresh process, and the suite's forked
runner (tests/console_server.py, behind tests/fairseq_utils.console) gives what a fresh process
gives -- exit status, stdout, stderr (fairseq's log lines on the stream the real command uses)."""
import re
import subprocess

import pytest

from tests.fairseq_utils import _SERVER, console

PROJECT = ("nq-summary", "nq-pack", "nq-analyze", "nq-zoo")
FAIRSEQ = ("fairseq-train", "fairseq-eval-lm")  # fairseq's others run forked in the suite


@pytest.mark.parametrize("name", PROJECT + FAIRSEQ)
def test_console_script_runs_as_a_fresh_process(name, monkeypatch):
    monkeypatch.setattr(_SERVER, "broken", True)  # a real process
    res = console(name, "--help")
    assert "usage: " + name in res.stdout, res.stdout[:300]


def _fresh_and_forked(monkeypatch, name, *args, **kwargs):
    monkeypatch.setattr(_SERVER, "broken", False)  # the forked runner, even where
    forked = console(name, *args, check=False, **kwargs)  # NQ_TEST_SPAWN_CONSOLES=1
    assert _SERVER.proc is not None and not _SERVER.broken, "the forked runner was not used"
    real = subprocess.run([forked.args[0], *map(str, args)], capture_output=True, text=True,
                          env=kwargs.get("env"))
    return real, forked


def _untimed(text):
    """The text without its clock times, and with a warning that points above the script's
    frame named as the fresh process names it ("sys:1"; the forked child has one more frame,
    tests/console_server.py's)."""
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "TIME", text)
    text = re.sub(r"^\S*tests/console_server\.py:\d+: ", "sys:1: ", text, flags=re.M)
    text = re.sub(r'^  File "\S*tests/console_server\.py", line \d+, in <module>\n.*\n', "",
                  text, flags=re.M)
    return re.sub(r"^  exec\(_code\)\n", "", text, flags=re.M)  # the warning's source line


@pytest.mark.parametrize("argv", [
    ("nq-zoo", "list"),
    ("nq-zoo", "eval", "no-such-model"),
    ("nq-pack", "no-such-checkpoint.pt", "--outdir", "never-made"),
    ("nq-summary", "--no-such-option"),
    ("fairseq-train", "--help"),  # its import's log line on stdout, where its logging goes
], ids=lambda a: " ".join(a))
def test_forked_command_equals_a_fresh_process(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    real, forked = _fresh_and_forked(monkeypatch, *argv)
    assert (forked.returncode, _untimed(forked.stdout), _untimed(forked.stderr)) == \
        (real.returncode, _untimed(real.stdout), _untimed(real.stderr))


def test_fairseq_logs_on_the_real_commands_streams(demo_char_data, tmp_path, monkeypatch):
    """fairseq-eval-lm logs to stderr (fairseq's import configures the root logger first),
    fairseq-train to stdout (it configures logging before importing fairseq): the forked runner
    replays the import's configuration and records at the child's first fairseq import."""
    args = (demo_char_data, "--user-dir", "nq_plugin", "--task", "bptt_lm", "--path",
            tmp_path / "missing.pt", "--cpu")
    real, forked = _fresh_and_forked(monkeypatch, "fairseq-eval-lm", *args)
    assert forked.returncode == real.returncode != 0
    assert _untimed(forked.stdout) == _untimed(real.stdout)
    assert "INFO:fairseq" in real.stderr and _untimed(forked.stderr) == _untimed(real.stderr)
