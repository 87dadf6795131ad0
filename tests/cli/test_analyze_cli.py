"""nq-analyze: errors on malformed logs, no overwriting without --force, old logs still read."""
import pytest

from tests.fairseq_utils import ROOT, console


def test_nq_analyze_fails_clearly_on_malformed_log(tmp_path):
    bad = tmp_path / "grad_norms.jsonl"
    bad.write_text('{"grad_h": [1.0], "lambda1": 2}\nnot json\n')
    res = console("nq-analyze", bad, "--out", tmp_path / "out", check=False)
    assert res.returncode == 2 and "line 1: not a grad-norm record (missing" in res.stderr
    bad.write_text("not json\n")
    res = console("nq-analyze", bad, "--out", tmp_path / "out", check=False)
    assert res.returncode == 2 and "line 1: not JSON" in res.stderr


@pytest.mark.slow
def test_nq_analyze_does_not_overwrite_plots_without_force(tmp_path):
    """Regression: nq-analyze replaced existing PNGs in --out without asking."""
    run = ROOT / "zoo" / "failures" / "ptb-char-bc-none" / "grad_norms.jsonl"
    out = tmp_path / "plots"
    console("nq-analyze", run, "--out", out)
    first = (out / "grad_h_vs_step.png").read_bytes()
    (out / "lambda.png").write_bytes(b"mine")
    res = console("nq-analyze", run, "--out", out, check=False)
    assert res.returncode == 2 and "--force" in res.stderr and "Traceback" not in res.stderr
    assert (out / "lambda.png").read_bytes() == b"mine"
    console("nq-analyze", run, "--out", out, "--force")
    assert (out / "lambda.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "grad_h_vs_step.png").read_bytes()[:8] == first[:8]
