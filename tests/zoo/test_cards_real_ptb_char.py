"""Every bundled ptb_char zoo model reproduces its card on the real test split, and so does a
packed copy rebuilt from model.pt (tests/zoo/cards_real.py)."""
from tests.zoo.cards_real import card_tests, check_card

data, test_bundled_model_reproduces_its_card, pytestmark = card_tests("ptb_char")


def test_rebuilt_packed_copy_reproduces_its_card(data, tmp_path):
    check_card("ptb-char-tc-weight", data, "--packed", "--cache-dir", str(tmp_path))
