"""nq_plugin/backend.py: the step split, one of the execution choices."""
import pytest

from nq_plugin.backend import Backend, StepSplit, use


def test_the_step_split_comes_from_the_environment_and_is_checked():
    assert Backend().step_split is StepSplit.AUTO
    assert Backend.from_environ({"NQ_PLUGIN_STEP_SPLIT": "Rows"}).step_split is StepSplit.ROWS
    with pytest.raises(ValueError, match="NQ_PLUGIN_STEP_SPLIT='diagonal': use auto, columns or "
                                         "rows"):
        Backend.from_environ({"NQ_PLUGIN_STEP_SPLIT": "diagonal"})
    with use(step_split="columns") as chosen:
        assert chosen.step_split is StepSplit.COLUMNS
