"""Every bundled sequential-MNIST zoo model reproduces its card on the real test split (tests/zoo/cards_real.py)."""
from tests.zoo.cards_real import card_tests

data, test_bundled_model_reproduces_its_card, pytestmark = card_tests("mnist")
