"""The sequence_classification criterion: summed cross-entropy, accuracy, base-2 loss."""
import pytest
import torch


def test_criterion_accuracy_and_base2_loss():
    import math
    from fairseq import metrics
    from nq_plugin.criterions.sequence_classification import SequenceClassificationCriterion

    class Fixed(torch.nn.Module):
        def forward(self, pixels):
            return torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])

    crit = SequenceClassificationCriterion(task=None)
    sample = {"net_input": {"pixels": None}, "target": torch.tensor([0, 1, 1]), "ntokens": 3}
    loss, size, log = crit(Fixed(), sample)
    expected = torch.nn.functional.cross_entropy(
        torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]]), torch.tensor([0, 1, 1]),
        reduction="sum")
    torch.testing.assert_close(loss, expected)
    assert size == 3 and int(log["ncorrect"]) == 2
    with metrics.aggregate() as agg:
        SequenceClassificationCriterion.reduce_metrics([log])
    values = agg.get_smoothed_values()
    assert values["accuracy"] == pytest.approx(66.67, abs=0.01)
    assert values["loss"] == pytest.approx(expected.item() / 3 / math.log(2), abs=1e-4)
