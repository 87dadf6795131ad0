"""nq-summary on a spec: every DESIGN.md section 3 row through the command line."""
import json
import shutil
import subprocess
import sys

import pytest

from nq_plugin.cli.summary import main
from tests.test_sizes import paper_rows


def spec_args(inp, hidden, layers, quantizer, norm, stats, tmax, qin):
    args = ["--input-size", str(inp), "--hidden-size", str(hidden), "--layers", str(layers),
            "--quantizer", quantizer, "--norm", norm, "--bn-stats", stats,
            "--bn-max-steps", str(tmax), "--json"]
    return args + ([] if qin else ["--no-quantize-input"])


@pytest.mark.parametrize("row", paper_rows(), ids=lambda r: "-".join(map(str, r)))
def test_json_lstm_kb_matches_paper(row, capsys):
    *spec, kb = row
    assert main(spec_args(*spec)) == 0
    out = json.loads(capsys.readouterr().out)
    assert abs(out["lstm_kb"] - kb) <= 1.0


def test_console_command_runs():
    exe = shutil.which("nq-summary")
    cmd = [exe] if exe else [sys.executable, "-m", "nq_plugin.cli.summary"]
    res = subprocess.run(cmd + ["--input-size", "50", "--hidden-size", "512", "--quantizer",
                                "bc", "--norm", "layer", "--json"],
                         capture_output=True, text=True, check=True)
    assert abs(json.loads(res.stdout)["lstm_kb"] - 181) <= 1
    table = subprocess.run(cmd + ["--input-size", "50", "--hidden-size", "512"],
                           capture_output=True, text=True, check=True).stdout
    assert "4504.0" in table and "Layer" in table


def test_bad_spec_errors(capsys):
    with pytest.raises(SystemExit):
        main(["--input-size", "5", "--hidden-size", "4", "--quantizer", "binary"])
    assert "invalid choice: 'binary'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--hidden-size"):
        main(["--input-size", "5"])
    assert main(["--input-size", "5", "--hidden-size", "0"]) == 2
    assert "hidden_size must be positive" in capsys.readouterr().err
