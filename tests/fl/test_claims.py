"""The coordinator trusts nothing a site declares beyond its query-round answer: the FedAvg
weight is the query's count, and replies with impossible counts or metrics are left out (through
the real strategy's Flower hooks, on hand-made messages)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from common.federation.run_settings import parse_run_settings
from common.labels import Structure
from fl_server.admission import SiteAdmission
from fl_server.claims import metric_problem
from fl_server.metrics_log import MetricsLog, read_metrics_log
from fl_server.negotiation import SiteInfo
from fl_server.strategy import make_strategy
from fl_server.update_gate import UpdateGate

HONEST = {"num-examples": 20.0, "train-loss": 0.4, "dice-LV": 0.8, "n-LV": 20.0, "area-LV": 1.1}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"num-examples": 1e9}, "num-examples = 1e+09 exceeds the 20 image(s) the site declared"),
        ({"num-examples": 0.0}, "num-examples = 0: a training reply must have trained on images"),
        ({"num-examples": -5.0}, "num-examples = -5 is not a count"),
        ({"num-examples": 2.5}, "num-examples = 2.5 is not a count"),
        ({"dice-LV": 50.0}, "dice-LV = 50 is outside [0, 1]"),
        ({"n-LV": 1e9}, "n-LV = 1e+09 is not a count in [0, num-examples = 20]"),
        ({"area-LV": -1.0}, "area-LV = -1 is negative"),
        ({"train-loss": float("nan")}, "metric train-loss = nan is not a finite number"),
        ({"train-loss": -0.1}, "train-loss = -0.1 is negative"),
    ],
)
def test_each_impossible_claim_is_named(change: dict, problem: str) -> None:
    assert metric_problem(HONEST, 20, training=True) is None
    found = metric_problem({**HONEST, **change}, 20, training=True)
    assert found is not None and found.startswith(problem), found


def test_an_evaluation_reply_may_score_nothing() -> None:
    assert metric_problem({"num-examples": 0.0, "loss": 0.0}, 0, training=False) is None


class Grid:
    def __init__(self, nodes: list[int]) -> None:
        self.nodes = nodes

    def get_node_ids(self) -> list[int]:
        return self.nodes


def test_weights_come_from_the_query_and_impossible_replies_are_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for field in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, field, 1)
    settings = parse_run_settings({"min-sites": 2, "update-norm-factor": 0})
    log = MetricsLog(tmp_path / "m.jsonl")
    infos = {  # what each site declared in the query round
        1: SiteInfo(1, "A", frozenset(Structure), {"train": 10, "val": 4}),
        2: SiteInfo(2, "B", frozenset({Structure.LV}), {"train": 30, "val": 4}),
        3: SiteInfo(3, "C", frozenset({Structure.LV}), {"train": 5, "val": 4}),
    }
    admission = SiteAdmission(lambda g, n: [infos[i] for i in n], registry="", log=log)
    current = {"w": np.zeros(3, np.float32)}
    gate = UpdateGate(current, transfer_dtype="float32", norm_factor=0.0, log=log)
    strategy = make_strategy(settings, admission=admission, gate=gate, log=log)
    arrays = ArrayRecord({k: Array(v) for k, v in current.items()})
    messages = list(strategy.configure_train(1, arrays, ConfigRecord({}), Grid([1, 2, 3])))
    # A honest (claims fewer images than it declared: weighted by the query's 10 anyway),
    # B honest, C claims 1e9 images to become the global model
    sent = {"A": (1.0, 4.0), "B": (3.0, 30.0), "C": (1000.0, 1e9)}
    replies = []
    for message in messages:
        w, n = sent[admission.name_of(message.metadata.dst_node_id)]
        content = RecordDict(
            {
                "arrays": ArrayRecord({"w": Array(np.full(3, w, np.float32))}),
                "metrics": MetricRecord({"num-examples": n}),
            }
        )
        replies.append(Message(content, reply_to=message))
    new, _ = strategy.aggregate_train(1, replies)
    assert new is not None
    np.testing.assert_allclose(new["w"].numpy(), (1.0 * 10 + 3.0 * 30) / 40)  # 2.5, C left out
    events = [r for r in read_metrics_log(log.path) if r.get("event") == "update-rejected"]
    assert [(e["site"], e["reason"]) for e in events] == [
        ("C", "num-examples = 1e+09 exceeds the 5 image(s) the site declared in the query round")
    ]

    # evaluation: a site reporting Dice 50 with n-LV = 1e9 does not enter the aggregate
    eval_messages = list(strategy.configure_evaluate(1, arrays, ConfigRecord({}), Grid([1, 2, 3])))
    scores = {"A": (0.5, 4.0), "B": (0.7, 4.0), "C": (50.0, 1e9)}
    eval_replies = []
    for message in eval_messages:
        dice, n = scores[admission.name_of(message.metadata.dst_node_id)]
        metrics = {"num-examples": 4.0, "loss": 0.3, "dice-LV": dice, "n-LV": n, "area-LV": 1.0}
        content = RecordDict({"metrics": MetricRecord(metrics)})
        eval_replies.append(Message(content, reply_to=message))
    aggregate = strategy.aggregate_evaluate(1, eval_replies)
    assert aggregate is not None
    assert aggregate["dice-LV"] == pytest.approx(0.6) and aggregate["n-LV"] == 8
    refused = [r for r in read_metrics_log(log.path) if r.get("event") == "metrics-rejected"]
    assert [(e["site"], e["split"]) for e in refused] == [("C", "val")]
    assert refused[0]["reason"] == "n-LV = 1e+09 is not a count in [0, num-examples = 4]"
