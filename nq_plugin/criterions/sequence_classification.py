"""fairseq criterion ``sequence_classification``: cross entropy of one label per sequence;
logs the loss in base 2 (as fairseq's other criterions) and the accuracy in percent, per update
and on validation (``fairseq-validate --valid-subset test`` reports test accuracy)."""
import math
from dataclasses import dataclass

import torch.nn.functional as F
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass


@dataclass
class SequenceClassificationConfig(FairseqDataclass):
    pass


@register_criterion("sequence_classification", dataclass=SequenceClassificationConfig)
class SequenceClassificationCriterion(FairseqCriterion):
    """loss = sum_i -log p(y_i | x_i); accuracy = mean_i 1[argmax p(. | x_i) = y_i]."""

    def forward(self, model, sample, reduce=True):
        logits = model(**sample["net_input"])
        target = sample["target"]
        loss = F.cross_entropy(logits.float(), target, reduction="sum" if reduce else "none")
        size = target.numel()
        logging_output = {
            "loss": loss.data, "ncorrect": (logits.argmax(-1) == target).sum().data,
            "ntokens": sample["ntokens"], "nsentences": size, "sample_size": size,
        }
        return loss, size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        loss = sum(log.get("loss", 0) for log in logging_outputs)
        size = sum(log.get("sample_size", 0) for log in logging_outputs)
        correct = sum(log.get("ncorrect", 0) for log in logging_outputs)
        if size:
            metrics.log_scalar("loss", loss / size / math.log(2), size, round=4)
            metrics.log_scalar("accuracy", 100.0 * correct / size, size, round=2)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
