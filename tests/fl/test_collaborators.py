"""The strategy's collaborators, without Flower: site admission and the update gate."""

import json
from pathlib import Path

import numpy as np
import pytest

from common.federation.protocol import encode_weights
from common.labels import Structure
from fl_server.admission import SiteAdmission
from fl_server.metrics_log import MetricsLog, read_metrics_log
from fl_server.negotiation import FederationError, QueryFailure, SiteInfo
from fl_server.update_gate import Reply, UpdateGate


class Grid:
    def __init__(self, nodes: list[int]) -> None:
        self.nodes = nodes

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)


def make_query(names: dict[int, str], asked: list[list[int]]):
    def query(_grid: object, nodes: list[int]) -> list[SiteInfo]:
        asked.append(list(nodes))
        return [SiteInfo(n, names[n], frozenset({Structure.LV}), {}) for n in nodes if n in names]

    return query


def test_admission_queries_each_new_node_once_and_checks_the_registry(tmp_path: Path) -> None:
    registry = tmp_path / "sites.json"
    registry.write_text(json.dumps({"A": 1, "B": 2}))
    log = MetricsLog(tmp_path / "m.jsonl")
    asked: list[list[int]] = []
    names = {1: "A", 2: "B", 3: "B", 4: "Z"}  # 3 claims B's name, 4 is not registered; 5 is mute
    admission = SiteAdmission(make_query(names, asked), registry=str(registry), log=log)
    grid = Grid([1, 2, 3, 4, 5])
    assert admission.wait_for(grid, 2, timeout=5) == [1, 2]
    assert admission.refused == {3, 4}
    assert admission.online(grid) == [1, 2]
    assert asked == [[1, 2, 3, 4, 5], [5]]  # refused nodes are never asked again; 5 is
    assert admission.name_of(2) == "B" and admission.name_of(5) == "node-5"
    refused = [r for r in read_metrics_log(log.path) if r.get("event") == "site-refused"]
    assert {r["node"]: r["reason"] for r in refused} == {
        3: "node 3 claims site 'B', which is registered to node 2",
        4: "no site named 'Z' is registered",
    }


def test_a_second_node_with_a_taken_name_is_refused(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "m.jsonl")
    admission = SiteAdmission(make_query({1: "A", 2: "A"}, []), registry="", log=log)
    assert admission.online(Grid([1, 2])) == [1]
    assert admission.refused == {2}


def test_a_node_that_answers_with_an_error_is_reported_and_asked_again_later(
    tmp_path: Path,
) -> None:
    log = MetricsLog(tmp_path / "m.jsonl")
    asked: list[list[int]] = []
    reason = "site C refused to execute app echofl (bundle sha256 ab12): it is not in trusted_apps"

    def query(_grid: object, nodes: list[int]) -> list:
        asked.append(list(nodes))
        return [SiteInfo(1, "A", frozenset({Structure.LV}), {})] * (1 in nodes) + [
            QueryFailure(3, reason)
        ] * (3 in nodes)

    said: list[str] = []
    admission = SiteAdmission(query, registry="", log=log, say=said.append, retry_seconds=0.2)
    grid = Grid([1, 3])
    assert admission.online(grid) == [1]
    assert admission.online(grid) == [1]  # within the back-off: node 3 is not asked again
    import time

    time.sleep(0.25)
    assert admission.online(grid) == [1]
    assert asked == [[1, 3], [3]]
    errors = [r for r in read_metrics_log(log.path) if r.get("event") == "site-error"]
    assert [(r["phase"], r["node"], r["reason"]) for r in errors] == [("query", 3, reason)] * 2
    assert said[0] == f"node 3 could not join: {reason} (asked again in 0.2 s)"


def test_waiting_ends_with_a_clear_error(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "m.jsonl")
    admission = SiteAdmission(make_query({1: "A"}, []), registry="", log=log, poll_seconds=0.01)
    with pytest.raises(FederationError, match=r"only 1 site\(s\) connected after 0s; at least 2"):
        admission.wait_for(Grid([1]), 2, timeout=0.05)


def reference() -> dict[str, np.ndarray]:
    return {"w": np.zeros((2, 3), np.float32), "n": np.zeros((), np.int64)}


def test_gate_decodes_validates_and_logs(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "m.jsonl")
    ref = reference()
    gate = UpdateGate(ref, transfer_dtype="float16", norm_factor=10.0, log=log)
    good = {"w": np.full((2, 3), 0.5, np.float32), "n": np.array(3)}
    far = {"w": np.full((2, 3), 100.0, np.float32), "n": np.array(3)}
    replies = [
        Reply("A", encode_weights(good, packed=True, dtype="float16"), "a"),
        Reply("B", encode_weights(good, packed=True, dtype="float32"), "b"),  # wrong dtype
        Reply("C", encode_weights(good, packed=False, dtype="float16"), "c"),
        Reply("D", encode_weights(far, packed=True, dtype="float16"), "d"),
        Reply("E", {"w": np.full((6,), 0.5, np.float16), "n": np.array(3)}, "e"),  # shape
    ]
    accepted = gate.admit(1, replies, ref)
    assert [(u.site, u.key) for u in accepted] == [("A", "a"), ("C", "c")]
    np.testing.assert_array_equal(accepted[0].weights["w"], good["w"])
    assert accepted[0].weights["w"].dtype == np.float32
    assert accepted[0].weights["n"].dtype == np.int64
    reasons = {
        r["site"]: r["reason"]
        for r in read_metrics_log(log.path)
        if r.get("event") == "update-rejected"
    }
    assert reasons["B"] == "packed weights are float32, the run transfers float16"
    assert reasons["E"] == "tensor w has shape (6,), expected (2, 3)"
    assert "exceeds update-norm-factor 10 x the reference" in reasons["D"]
    assert list(gate.history) == [np.linalg.norm(good["w"])]  # the yardstick of later rounds
    norms = next(r for r in read_metrics_log(log.path) if r.get("event") == "update-norms")
    assert set(norms["norms"]) == {"A", "C", "D"}  # E was malformed: no norm


def test_a_site_on_another_flower_minor_release_is_refused_other_versions_are_reported(
    tmp_path: Path,
) -> None:
    log = MetricsLog(tmp_path / "m.jsonl")
    mine = {"echofl": "0.1.0", "flwr": "1.42.0", "torch": "2.13.0", "monai": "1.5.1"}
    theirs = {
        1: {**mine, "flwr": "1.42.3"},  # a patch release: fine
        2: {**mine, "flwr": "1.41.0"},  # another minor release: refused
        3: {**mine, "torch": "2.12.1+cu121"},  # reported, not refused
    }

    def query(_grid: object, nodes: list[int]) -> list[SiteInfo]:
        return [SiteInfo(n, "ABC"[n - 1], frozenset({Structure.LV}), {}, theirs[n]) for n in nodes]

    said: list[str] = []
    admission = SiteAdmission(query, registry="", log=log, say=said.append, software=mine)
    assert admission.online(Grid([1, 2, 3])) == [1, 3]
    rows = read_metrics_log(log.path)
    refused = [r for r in rows if r.get("event") == "site-refused"]
    assert [(r["site"], r["reason"]) for r in refused] == [
        ("B", "the site runs Flower 1.41.0, the coordinator 1.42.0: install flwr==1.42.0 on the "
         "site (see its echofl release notes)")
    ]  # fmt: skip
    differs = {r["site"]: r["versions"] for r in rows if r.get("event") == "site-software-differs"}
    assert differs == {
        "A": {"flwr": ["1.42.0", "1.42.3"]},
        "C": {"torch": ["2.13.0", "2.12.1+cu121"]},
    }
    assert "site C: other versions (torch 2.13.0 here, 2.12.1+cu121 there)" in said
