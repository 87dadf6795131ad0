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
    from nq_plugin.packed.export import pack_checkpoint
    checkpoint = FIXTURES / f"{name}.pt"
    results = eval_lm(demo_char_data, checkpoint, *EVAL)
    assert results["loss"] == pytest.approx(EXPECTED[name]["loss"], abs=1e-5)
    pack_checkpoint(str(checkpoint), str(tmp_path / "packed"),
                    dictionary=str(demo_char_data / "dict.txt"))
    packed = eval_lm(demo_char_data, tmp_path / "packed" / "checkpoint.pt", *EVAL)
    assert packed["loss"] == pytest.approx(EXPECTED[name]["loss"], abs=1e-4)


CAMPAIGN = ROOT / "tests" / "fixtures" / "campaign_34d3679"
CAMPAIGN_EXPECTED = json.loads((CAMPAIGN / "expected.json").read_text())["results"]


@pytest.mark.parametrize("name", sorted(CAMPAIGN_EXPECTED))
def test_a_run_folder_of_the_earlier_main_resumes_as_it_did(demo_char_data, tmp_path, name):
    """A training run's checkpoint_last.pt written by the main at 34d3679 (mid-epoch, with
    Adam's state: what the campaign's run folders hold) resumes with today's code from update 4
    to 8 and ends at the validation loss the earlier main's own resume reached."""
    import shutil

    from tests.fairseq_utils import train
    spec = json.loads((CAMPAIGN / "expected.json").read_text())
    options = spec["train"].split(" with ")[1].split()
    extra = {"bc_layer": ["--quantizer", "bc", "--norm", "layer"],
             "tc_batch_separate": ["--quantizer", "tc", "--norm", "batch", "--bn-stats",
                                   "separate"],
             "lab_power": ["--quantizer", "lab", "--norm", "power"]}[name]
    run = tmp_path / name
    run.mkdir()
    shutil.copy(CAMPAIGN / f"{name}.pt", run / "checkpoint_last.pt")
    checkpoint = train(demo_char_data, run, *options, *extra, updates=8)
    results = eval_lm(demo_char_data, checkpoint, *EVAL)
    assert results["loss"] == pytest.approx(CAMPAIGN_EXPECTED[name]["loss"], abs=1e-5)
