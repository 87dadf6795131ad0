import pytest


@pytest.fixture(scope="session")
def demo_char_data(tmp_path_factory):
    """The shipped demo text (character level), binarized by fairseq-preprocess."""
    from tests.fairseq_utils import DEMO_TEXT, preprocess
    dest = tmp_path_factory.mktemp("demo-char-bin")
    return preprocess(DEMO_TEXT / "train.txt", DEMO_TEXT / "valid.txt", dest,
                      testpref=DEMO_TEXT / "valid.txt")
