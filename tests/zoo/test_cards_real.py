"""Every bundled zoo language model evaluates, from its bundled files, to its card's number on
the real Penn Treebank test split (fairseq-eval-lm with the card's options, through
`nq-zoo eval --data`): within 0.002 BPC / 0.3 % PPL. One packed copy is rebuilt and checked the
same way (its number is in the card's packed sentence). Skipped without ../shared/data/ptb.
(sMNIST's check takes minutes on 2 cores: `nq-zoo eval smnist-bc-batch --data MNIST_DIR`.)"""
import re

import pytest

from tests.fairseq_utils import SHARED_DATA, console

from nq_plugin.zoo.manifest import Manifest

PTB = SHARED_DATA / "ptb"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (PTB / "ptb.char.test.txt").exists(), reason="real PTB data not found at ../shared/data/ptb")]
LMS = sorted(e.name for e in Manifest.load().models.values()
             if e.task == "bptt_lm" and e.bundled and e.dataset in ("ptb_char", "ptb_word"))
SPLIT = {"ptb_char": "ptb.char.test.txt", "ptb_word": "ptb.test.txt"}


@pytest.fixture(scope="module")
def test_splits(tmp_path_factory):
    """The test splits binarized with each dataset's model dictionary (all models of a dataset
    share it: the recipe's prepare.sh)."""
    from nq_plugin.zoo.fetch import bundled_folder
    out = {}
    for dataset, split in SPLIT.items():
        entry = next(e for e in Manifest.load().models.values() if e.dataset == dataset)
        dest = tmp_path_factory.mktemp(dataset)
        from fairseq import options
        from fairseq_cli import preprocess as fairseq_preprocess
        argv = ["--only-source", "--srcdict", f"{bundled_folder(entry)}/dict.txt",
                "--testpref", str(PTB / split), "--destdir", str(dest), "--workers", "1"]
        fairseq_preprocess.main(options.get_preprocessing_parser().parse_args(argv))
        out[dataset] = dest
    return out


def measured(out):
    m = re.search(r"^(bits per character|perplexity): ([0-9.]+)", out, re.M)
    assert m, out[-2000:]
    return float(m.group(2))


def close(entry, value, card):
    return abs(value - card) <= (0.002 if entry.metric.name == "bpc" else 0.003 * card)


@pytest.mark.parametrize("name", LMS)
def test_bundled_model_reproduces_its_card(name, test_splits):
    entry = Manifest.load().get(name)
    res = console("nq-zoo", "eval", name, "--data", test_splits[entry.dataset], "--no-sample")
    assert close(entry, measured(res.stdout), entry.metric.value), (res.stdout, entry.metric)


def test_rebuilt_packed_copy_reproduces_its_card(test_splits, tmp_path):
    name = "ptb-char-tc-weight"
    entry = Manifest.load().get(name)
    card = float(re.search(r"packed/`\) measures ([0-9.]+)", entry.notes).group(1))
    res = console("nq-zoo", "eval", name, "--packed", "--data", test_splits[entry.dataset],
                  "--no-sample", "--cache-dir", tmp_path)
    assert close(entry, measured(res.stdout), card), (res.stdout, card)
