"""What the campaign (recipes/zoo/campaign.py) writes on the cards of the models it trains: the
sentence on a one-hot char model's size states the size accounting's own difference from the
paper's count (fast: no training)."""
import importlib.util
import re
import sys

import pytest

from nq_plugin.nn import NQLSTM
from nq_plugin.sizes import summary
from tests.fairseq_utils import ROOT

# the paper's fp32 LSTM of each one-hot dataset (KB), from which its input width follows
PAPER_FP_KB = {"ptb_char": 4504, "warpeace": 4800}
BUNDLED_DICT = {"ptb_char": "ptb-char-fp", "warpeace": "warpeace-fp"}


def campaign_module():
    """recipes/zoo/campaign.py as a module (it is a script, not part of the package)."""
    name = "nq_zoo_campaign"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, ROOT / "recipes" / "zoo" / "campaign.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # registered first: its dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


def lstm_kb(columns: int, quantizer: str, norm: str) -> float:
    return summary(NQLSTM(columns, 512, quantizer=quantizer, norm=norm), print_fn=None)["lstm_kb"]


@pytest.mark.parametrize("dataset", sorted(PAPER_FP_KB))
def test_the_one_hot_size_note_states_the_accountings_difference(dataset):
    campaign = campaign_module()
    symbols, paper_columns = campaign.DATASETS[dataset].one_hot
    # the data's symbols are the bundled dictionary's; the paper's width gives its fp32 size
    dictionary = ROOT / "zoo" / "models" / BUNDLED_DICT[dataset] / "dict.txt"
    assert len(dictionary.read_text().splitlines()) == symbols
    assert round(lstm_kb(paper_columns, "fp", "none")) == PAPER_FP_KB[dataset]
    for quantizer in ("fp", "bc", "tc"):
        sentence = campaign.one_hot_size_note(symbols, paper_columns, quantizer)
        kb = float(re.search(r"([\d.]+) KB more", sentence).group(1))
        ours = lstm_kb(symbols + campaign.SPECIAL_SYMBOLS, quantizer, "weight")
        assert kb == pytest.approx(ours - lstm_kb(paper_columns, quantizer, "weight"))
        assert f"has {symbols + campaign.SPECIAL_SYMBOLS} columns" in sentence
    # and the cards of the dataset's bundled models carry it
    card = (ROOT / "zoo" / "models" / BUNDLED_DICT[dataset] / "README.md").read_text()
    assert campaign.one_hot_size_note(symbols, paper_columns, "fp") in card
