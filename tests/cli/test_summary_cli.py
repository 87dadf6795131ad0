"""nq-summary on a spec: every size row of docs/design.md section 3 through the command line."""
import json

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
    from tests.fairseq_utils import console
    res = console("nq-summary", "--input-size", "50", "--hidden-size", "512", "--quantizer",
                  "bc", "--norm", "layer", "--json")
    assert abs(json.loads(res.stdout)["lstm_kb"] - 181) <= 1
    table = console("nq-summary", "--input-size", "50", "--hidden-size", "512").stdout
    assert "4504.0" in table and "Layer" in table


def test_bad_spec_errors(capsys):
    with pytest.raises(SystemExit):
        main(["--input-size", "5", "--hidden-size", "4", "--quantizer", "binary"])
    assert "invalid choice: 'binary'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--hidden-size"):
        main(["--input-size", "5"])
    assert main(["--input-size", "5", "--hidden-size", "0"]) == 2
    assert "hidden_size must be positive" in capsys.readouterr().err


def test_table_matches_the_golden_file(capsys):
    """The printed table, byte for byte, against the one nq-summary printed before the LSTM
    options were generated from one declaration (tests/fixtures)."""
    from tests.fairseq_utils import ROOT
    golden = (ROOT / "tests" / "fixtures" / "summary_tc_batch_separate_2x512.txt").read_text()
    assert main(["--input-size", "50", "--hidden-size", "512", "--layers", "2", "--quantizer",
                 "tc", "--norm", "batch", "--bn-stats", "separate", "--bn-max-steps", "100"]) == 0
    assert capsys.readouterr().out == golden


def test_spec_options_come_from_the_one_declaration():
    from nq_plugin.cli.summary import build_parser
    from nq_plugin.nn.options import LSTMOptions
    parser = build_parser()
    dests = {a.dest for a in parser._actions}
    assert {f.name for f in LSTMOptions.field_list()} <= dests
    args = parser.parse_args(["--input-size", "3", "--hidden-size", "4", "--pn-warmup", "2"])
    assert args.pn_warmup == 2 and args.latent_clip is None
