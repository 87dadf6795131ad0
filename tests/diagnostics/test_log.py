"""GradNormLogger: the trainer's update number decides which forwards are recorded; records go
to JSON lines (the one schema, GradNormRecord) and fairseq's metrics; the classifier honours
--log-grad-norms too."""
import json

import pytest
import torch
from omegaconf import OmegaConf

from nq_plugin.diagnostics.log import GradNormLogger
from nq_plugin.diagnostics.record import GradNormRecord
from nq_plugin.nn import NQLSTM


def test_one_record_per_nth_update_counted_by_set_num_updates(tmp_path):
    logger = GradNormLogger(every=2, path=str(tmp_path / "g.jsonl"))
    recorded = []
    for update in range(6):
        logger.set_num_updates(update)
        for _ in range(2):  # --update-freq 2: two forwards per update
            recorded.append(logger.observer(training=True) is not None)
    # the first forward of updates 0, 2 and 4 only
    assert recorded == [True, False, False, False, True, False, False, False, True, False,
                        False, False]
    logger.set_num_updates(8)
    assert logger.observer(training=False) is None  # validation forwards are never recorded
    assert GradNormLogger(0).observer(training=True) is None


def test_records_are_written_in_the_one_schema_and_logged_to_fairseq(tmp_path):
    from fairseq import metrics
    path = tmp_path / "sub" / "g.jsonl"
    logger = GradNormLogger(every=1, path=str(path))
    logger.set_num_updates(7)
    lstm = NQLSTM(3, 4, 2, quantizer="twn", norm="weight")
    with metrics.aggregate() as agg:
        out, _ = lstm(torch.randn(5, 2, 3), observer=logger.observer(training=True))
        out.sum().backward()
    lines = path.read_text().splitlines()
    assert len(lines) == 2  # one per layer
    records = sorted((GradNormRecord.from_dict(json.loads(line)) for line in lines),
                     key=lambda r: r.layer)  # (the backward completes the top layer first)
    assert [r.layer for r in records] == [0, 1]
    assert all(r.update == 7 and r.forward == 0 and r.steps == 5 and len(r.grad_h) == 5
               for r in records)
    assert records[0].g is not None and records[0].alpha is not None  # weight norm; TWN's scale
    assert set(GradNormRecord.required()) <= set(json.loads(lines[0]))
    assert agg.get_smoothed_value("nq_lambda1") == pytest.approx(records[0].lambda1, rel=1e-3)
    assert agg.get_smoothed_value("nq_gradh_first") == pytest.approx(records[0].grad_h[0],
                                                                     rel=1e-3)


def test_classifier_honours_log_grad_norms(tmp_path):
    from nq_plugin.models.nq_lstm_classifier import NQLSTMClassifier, NQLSTMClassifierConfig
    path = tmp_path / "cls.jsonl"
    cfg = NQLSTMClassifierConfig(hidden_size=8, bn_max_steps=12, quantizer="bc", norm="layer",
                                 log_grad_norms=1, grad_norm_log=str(path))
    model = NQLSTMClassifier(OmegaConf.structured(cfg), 1)
    model.train()
    logits = model(torch.rand(3, 12, 1))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    record = json.loads(path.read_text().splitlines()[0])
    assert record["norm"] == "layer" and len(record["grad_h"]) == 12
    assert record["grad_h"][-1] > 0 and record["lambda1"] >= record["lambda2"] > 0
