"""What the real-data card tests share (tests/zoo/test_cards_real_*.py, one file per dataset so
that the suite's workers take them in parallel): each bundled zoo model evaluates, from its
bundled files, to its card's number on the real test split (fairseq-eval-lm, or fairseq-validate
for sequential MNIST, with the card's options, through `nq-zoo eval --data`): within 0.002 BPC /
0.3 % PPL / 0.01 points of accuracy (its evaluation is deterministic)."""
import re
import subprocess

import pytest

from tests.fairseq_utils import ROOT, SHARED_DATA, console

from nq_plugin.zoo.manifest import Manifest

PTB = SHARED_DATA / "ptb"
WARPEACE = SHARED_DATA / "warpeace" / "warpeace_input.txt"
# dataset -> the real file its test split comes from
SOURCES = {"ptb_char": PTB / "ptb.char.test.txt", "ptb_word": PTB / "ptb.test.txt",
           "warpeace": WARPEACE, "mnist": SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz"}


def needs(dataset):
    """The marks of a dataset's card tests: slow, and skipped without its real data."""
    src = SOURCES[dataset]
    return [pytest.mark.slow, pytest.mark.skipif(
        not src.exists(), reason=f"real {dataset} data not found at {src.parent}")]


def bundled_models(dataset):
    return sorted(e.name for e in Manifest.load().models.values()
                  if e.bundled and e.dataset == dataset)


def binarized_test_split(dataset, dest):
    """The dataset's real test split binarized with its models' dictionary (all models of a
    dataset share it: the recipe's prepare.sh)."""
    from nq_plugin.zoo.fetch import bundled_folder
    if dataset == "mnist":  # the idx files themselves (the task verifies their checksums)
        return SOURCES["mnist"].parent
    if dataset == "warpeace":  # byte level: the recipe's own split, checksum-verified
        subprocess.run(["bash", str(ROOT / "recipes" / "warpeace" / "prepare.sh"), str(dest),
                        str(WARPEACE)], check=True, capture_output=True)
        return dest / "warpeace"
    entry = next(e for e in Manifest.load().models.values() if e.dataset == dataset)
    from fairseq import options
    from fairseq_cli import preprocess as fairseq_preprocess
    argv = ["--only-source", "--srcdict", f"{bundled_folder(entry)}/dict.txt",
            "--testpref", str(SOURCES[dataset]), "--destdir", str(dest), "--workers", "1"]
    fairseq_preprocess.main(options.get_preprocessing_parser().parse_args(argv))
    return dest


def measured(out):
    m = re.search(r"^(bits per character|perplexity|test accuracy \(%\)): ([0-9.]+)", out,
                  re.M)
    assert m, out[-2000:]
    return float(m.group(2))


def close(entry, value, card):
    tolerance = {"bpc": 0.002, "accuracy": 0.01}.get(entry.metric.name, 0.003 * card)
    return abs(value - card) <= tolerance


def check_card(name, data, *extra):
    """``nq-zoo eval NAME --data DATA`` equals the card's number (``extra``: e.g. --packed,
    compared with the number the card gives for the packed copy)."""
    entry = Manifest.load().get(name)
    card = entry.metric.value
    if "--packed" in extra:
        card = float(re.search(r"packed/`\) measures ([0-9.]+)", entry.notes).group(1))
    res = console("nq-zoo", "eval", name, "--data", data, "--no-sample", *extra)
    assert close(entry, measured(res.stdout), card), (res.stdout, card)


def card_tests(dataset):
    """A dataset's test module's contents -- ``data, test_bundled_model_reproduces_its_card,
    pytestmark = card_tests(DATASET)``: the binarized test split (a module fixture) and one test
    per bundled model."""
    @pytest.fixture(scope="module")
    def data(tmp_path_factory):
        return binarized_test_split(dataset, tmp_path_factory.mktemp(dataset))

    @pytest.mark.parametrize("name", bundled_models(dataset))
    def test_bundled_model_reproduces_its_card(name, data):
        check_card(name, data)

    return data, test_bundled_model_reproduces_its_card, needs(dataset)
