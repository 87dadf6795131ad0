"""Checkpoints written by an earlier main (tests/fixtures/main_88ed40d, before the structure
change: one cell, options declared once, folding owned by the normalizations) still load and
evaluate to the same loss -- unpacked, and packed by today's nq-pack."""
import json

import pytest

from tests.fairseq_utils import ROOT, eval_lm

FIXTURES = ROOT / "tests" / "fixtures" / "main_88ed40d"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())["results"]
EVAL = ["--batch-size", "4", "--tokens-per-sample", "16"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_old_checkpoint_evaluates_to_the_same_loss_unpacked_and_packed(demo_char_data, tmp_path,
                                                                        name):
    from nq_plugin.cli.pack import pack_checkpoint
    checkpoint = FIXTURES / f"{name}.pt"
    results = eval_lm(demo_char_data, checkpoint, *EVAL)
    assert results["loss"] == pytest.approx(EXPECTED[name]["loss"], abs=1e-5)
    pack_checkpoint(str(checkpoint), str(tmp_path / "packed"),
                    dictionary=str(demo_char_data / "dict.txt"))
    packed = eval_lm(demo_char_data, tmp_path / "packed" / "checkpoint.pt", *EVAL)
    assert packed["loss"] == pytest.approx(EXPECTED[name]["loss"], abs=1e-4)
