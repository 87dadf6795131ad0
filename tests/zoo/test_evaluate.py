"""Reading the fairseq tools' output (nq_plugin/zoo/evaluate.py)."""
import pytest

from nq_plugin.zoo.evaluate import parse_validate
from nq_plugin.zoo.manifest import ZooError


def test_fairseq_validate_is_read_for_the_subset_asked():
    out = ("2026-12-06 | INFO | valid | valid on 'valid' subset | loss 0.1 | accuracy 97.62 |\n"
           "2026-12-06 | INFO | valid | valid on 'test' subset | loss 0.1 | accuracy 97.42 |\n")
    assert parse_validate(out) == 97.42
    assert parse_validate(out, "valid") == 97.62
    with pytest.raises(ZooError, match="no train accuracy"):
        parse_validate(out, "train")
