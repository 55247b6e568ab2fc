"""echofl's means (plain, label-aware, step-normalised), the class slices they act on, the
drift measurement, and Flower's server optimisers with normalisation buffers averaged plainly."""

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from torch import nn

from common.federation.protocol import encode_weights
from common.federation.run_settings import parse_run_settings
from common.labels import Structure
from common.training.class_slices import SHARED, class_owners
from common.training.model import ModelConfig, build_unet
from fl_server.admission import SiteAdmission
from fl_server.aggregation import SiteUpdate, aggregate, drift_shares
from fl_server.metrics_log import MetricsLog
from fl_server.negotiation import SiteInfo
from fl_server.resume import read_optimiser_state, write_optimiser_state
from fl_server.strategy import MeanRule, make_strategy
from fl_server.update_gate import UpdateGate

# a "model" of three tensors: a shared weight, a per-class head (rows 0..3), a buffer
OWNERS = {
    "shared": np.full((2,), SHARED),
    "head": np.array([0, 1, 2, 3]),
    "bn.running_mean": np.array([0, 1, 2, 3]),
}
CURRENT = {k: np.zeros(v.shape, np.float32) for k, v in OWNERS.items()}


def site(name: str, value: float, n: float, classes: set[int], steps: float = 1.0) -> SiteUpdate:
    weights = {k: np.full(v.shape, value, np.float32) for k, v in OWNERS.items()}
    return SiteUpdate(name, weights, n, frozenset(classes), steps)


A = site("A", 1.0, 10, {0, 1, 2, 3}, steps=2)  # annotates everything
B = site("B", 2.0, 30, {0, 1}, steps=6)  # LV only
C = site("C", 4.0, 10, {0, 2}, steps=1)  # MYO only


def test_plain_mean_is_fedavg() -> None:
    out = aggregate([A, B, C], CURRENT)
    expected = (10 * 1 + 30 * 2 + 10 * 4) / 50  # 2.2
    for value in out.values():
        np.testing.assert_allclose(value, expected, rtol=1e-6)


def test_label_aware_mean_uses_only_the_annotating_sites_for_a_class_slice() -> None:
    out = aggregate([A, B, C], CURRENT, owners=OWNERS)
    fedavg = (10 * 1 + 30 * 2 + 10 * 4) / 50
    np.testing.assert_allclose(out["shared"], [fedavg, fedavg], rtol=1e-6)
    head = [fedavg, (10 * 1 + 30 * 2) / 40, (10 * 1 + 10 * 4) / 20, 1.0]  # bg, LV, MYO, LA
    np.testing.assert_allclose(out["head"], head, rtol=1e-6)
    np.testing.assert_allclose(out["bn.running_mean"], head, rtol=1e-6)  # buffers follow
    # nobody annotates LA among B and C: the LA slice keeps the global value
    out = aggregate([B, C], CURRENT, owners=OWNERS)
    assert out["head"][3] == 0.0


def test_step_normalised_mean() -> None:
    out = aggregate([A, B, C], CURRENT, buffers={"bn.running_mean"}, step_normalised=True)
    p = np.array([10, 30, 10]) / 50
    tau = np.array([2, 6, 1])
    delta = np.array([1.0, 2.0, 4.0])
    expected = (p * tau).sum() * (p * delta / tau).sum()  # 4.0 * 0.38 = 1.52
    np.testing.assert_allclose(out["shared"], expected, rtol=1e-6)
    np.testing.assert_allclose(out["bn.running_mean"], 2.2, rtol=1e-6)  # buffers: plain
    both = aggregate([A, B, C], CURRENT, owners=OWNERS, step_normalised=True)
    la = (1.0 / 2) * 2  # LA: only A, p = 1, tau_eff = 2
    assert both["head"][3] == pytest.approx(la)


def test_drift_share_of_each_class_head() -> None:
    shares = drift_shares([A, B, C], CURRENT, OWNERS, [1, 2, 3])
    # class head c: two elements (head[c], running_mean[c]); site change = value
    lv = 10 * 4 / 50 / (10 * 1 / 50 + 30 * 2 / 50 + 10 * 4 / 50)  # C does not annotate LV
    myo = 30 * 2 / 50 / (10 * 1 / 50 + 30 * 2 / 50 + 10 * 4 / 50)  # B does not annotate MYO
    la = (30 * 2 + 10 * 4) / 50 / (10 * 1 / 50 + 30 * 2 / 50 + 10 * 4 / 50)
    assert shares == pytest.approx({1: lv, 2: myo, 3: la})


def test_class_owners_are_derived_from_the_network() -> None:
    torch.manual_seed(0)
    owners = class_owners(build_unet(ModelConfig(channels=(4, 8, 16))))
    owned = {k: v for k, v in owners.items() if (v != SHARED).any()}
    # the U-Net's last convolution (4 -> 4 classes, 3x3) and its bias, one filter per class
    assert set(owned) == {"model.2.1.conv.unit0.conv.weight", "model.2.1.conv.unit0.conv.bias"}
    weight = owned["model.2.1.conv.unit0.conv.weight"]
    assert all((weight[c] == c).all() for c in range(4))
    toy = nn.Sequential(nn.Conv2d(1, 3, 1), nn.ReLU(), nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    toy_owners = class_owners(toy, size=4)
    np.testing.assert_array_equal(toy_owners["3.running_mean"], [0, 1, 2, 3])
    np.testing.assert_array_equal(toy_owners["2.bias"], [0, 1, 2, 3])
    assert (toy_owners["0.weight"] == SHARED).all()
    assert (toy_owners["3.num_batches_tracked"] == SHARED).all()


SERVER_OPTIMISERS = [
    {"strategy": "fedavgm", "server-lr": 0.5, "server-momentum": 0.6},
    {"strategy": "fedadam", "server-lr": 0.01},
    {"strategy": "fedyogi", "server-lr": 0.01},
]


@pytest.fixture
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower's Message wants a task identity (run, node, task); any will do here."""
    for field in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, field, 1)


def two_site_strategy(  # type: ignore[no-untyped-def]
    flat: dict,
    tmp_path: Path,
    reference: dict[str, np.ndarray] | None = None,
    mean: MeanRule | None = None,
):
    """A strategy of ``flat``'s recipe over sites A (everything, 10 images) and B (LV, 30)."""
    settings = parse_run_settings({**flat, "min-sites": 2, "update-norm-factor": 0})
    log = MetricsLog(tmp_path / "m.jsonl")
    infos = {
        1: SiteInfo(1, "A", frozenset(Structure), {"train": 10}),
        2: SiteInfo(2, "B", frozenset({Structure.LV}), {"train": 30}),
    }
    admission = SiteAdmission(lambda g, n: [infos[i] for i in n], registry="", log=log)
    reference = reference if reference is not None else {"w": np.zeros(3, np.float32)}
    gate = UpdateGate(reference, transfer_dtype="float32", norm_factor=0.0, log=log)
    strategy = make_strategy(
        settings, admission=admission, gate=gate, log=log, mean=mean or MeanRule()
    )
    return strategy, admission


class Grid:
    def __init__(self, nodes: list[int]) -> None:
        self.nodes = nodes

    def get_node_ids(self) -> list[int]:
        return self.nodes


@pytest.mark.parametrize("flat", SERVER_OPTIMISERS)
def test_server_optimisers_step_parameters_and_average_buffers_plainly(
    flat: dict, tmp_path: Path, task_identity: None
) -> None:
    current = {
        "w": np.zeros(3, np.float32),
        "bn.running_var": np.ones(2, np.float32),
        "bn.num_batches_tracked": np.array(4, np.int64),
    }
    rule = MeanRule(buffers=("bn.running_var", "bn.num_batches_tracked"))
    strategy, admission = two_site_strategy(flat, tmp_path, current, rule)
    arrays = ArrayRecord({k: Array(v) for k, v in current.items()})
    messages = list(strategy.configure_train(1, arrays, ConfigRecord({}), Grid([1, 2])))
    sent = {"A": (1.0, 3.0, 10, 10.0), "B": (3.0, 5.0, 30, 30.0)}  # w, var, count, images
    replies = []
    for message in messages:
        w, var, count, n = sent[admission.name_of(message.metadata.dst_node_id)]
        state = {
            "packed-float": np.concatenate([np.full(3, w), np.full(2, var)]).astype(np.float32),
            "packed-int": np.array([count]),
        }
        content = RecordDict(
            {
                "arrays": ArrayRecord({k: Array(v) for k, v in state.items()}),
                "metrics": MetricRecord({"num-examples": n}),
            }
        )
        replies.append(Message(content, reply_to=message))
    new, _ = strategy.aggregate_train(1, replies)
    assert new is not None
    out = {k: v.numpy() for k, v in new.items()}
    np.testing.assert_allclose(out["bn.running_var"], (3 * 10 + 5 * 30) / 40)  # plain
    assert out["bn.num_batches_tracked"] == 25 and out["bn.num_batches_tracked"].dtype == np.int64
    plain = (1 * 10 + 3 * 30) / 40  # 2.5
    assert not np.allclose(out["w"], plain)  # the server optimiser stepped the parameter
    assert np.all(out["w"] > 0)  # in the direction of the sites' change
    if flat["strategy"] == "fedavgm":  # w - lr * (w - mean) = 0.5 * 2.5
        np.testing.assert_allclose(out["w"], 0.5 * plain, rtol=1e-6)


def _one_round(strategy, admission, server_round: int, w: np.ndarray, sent: dict) -> np.ndarray:  # type: ignore[no-untyped-def]
    arrays = ArrayRecord({"w": Array(w)})
    messages = list(strategy.configure_train(server_round, arrays, ConfigRecord({}), Grid([1, 2])))
    replies = []
    for message in messages:
        value, n = sent[admission.name_of(message.metadata.dst_node_id)]
        wire = encode_weights({"w": w + np.float32(value)}, packed=True)
        content = RecordDict(
            {
                "arrays": ArrayRecord({k: Array(v) for k, v in wire.items()}),
                "metrics": MetricRecord({"num-examples": n}),
            }
        )
        replies.append(Message(content, reply_to=message))
    new, _ = strategy.aggregate_train(server_round, replies)
    assert new is not None
    return new["w"].numpy()


@pytest.mark.parametrize("flat", SERVER_OPTIMISERS)
def test_a_server_optimiser_continues_after_its_state_is_saved_and_restored(
    flat: dict, tmp_path: Path, task_identity: None
) -> None:
    """What a resumed run does: a new strategy given the state saved after round 1 takes round
    2 exactly as the strategy that never stopped; without it, round 2 differs."""
    rounds = [{"A": (1.0, 10.0), "B": (3.0, 30.0)}, {"A": (-0.5, 10.0), "B": (0.25, 30.0)}]
    start = np.zeros(3, np.float32)
    steady, admission = two_site_strategy(flat, tmp_path)
    assert steady.keeps_state and steady.optimiser_state() == {}  # nothing before a round
    after_1 = _one_round(steady, admission, 1, start, rounds[0])
    state = steady.optimiser_state()
    assert state and all(isinstance(v, np.ndarray) for v in state.values())
    after_2 = _one_round(steady, admission, 2, after_1, rounds[1])

    saved = tmp_path / "server-optimiser-0001.pt"  # through the file a resume reads
    write_optimiser_state(saved, state, {"run": "r", "round": 1}, None)
    loaded, _ = read_optimiser_state(saved, None, "r")
    resumed, admission = two_site_strategy(flat, tmp_path)
    resumed.restore_optimiser_state(loaded)
    np.testing.assert_array_equal(_one_round(resumed, admission, 2, after_1, rounds[1]), after_2)

    forgetful, admission = two_site_strategy(flat, tmp_path)
    assert not np.allclose(_one_round(forgetful, admission, 2, after_1, rounds[1]), after_2)
    with pytest.raises(ValueError, match="needs the same arrays"):
        forgetful.restore_optimiser_state({next(iter(state)): state[next(iter(state))]})


def test_fedavg_keeps_no_optimiser_state(tmp_path: Path, task_identity: None) -> None:
    strategy, admission = two_site_strategy({"strategy": "fedavg"}, tmp_path)
    sent = {"A": (1.0, 10.0), "B": (3.0, 30.0)}
    _one_round(strategy, admission, 1, np.zeros(3, np.float32), sent)
    assert not strategy.keeps_state and strategy.optimiser_state() == {}
    with pytest.raises(ValueError, match="keeps no optimiser state"):
        strategy.restore_optimiser_state({"m/w": np.zeros(3)})


def test_the_optimiser_state_file_keeps_every_shape_and_dtype(tmp_path: Path) -> None:
    state = {
        "current/bn.num_batches_tracked": np.array(7, np.int64),  # 0-d, as BatchNorm's counter
        "momentum/w": np.arange(6, dtype=np.float32).reshape(2, 3),
    }
    write_optimiser_state(tmp_path / "s.pt", state, {"run": "r", "round": 3}, None)
    loaded, sidecar = read_optimiser_state(tmp_path / "s.pt", None, "r")
    assert sidecar["round"] == 3 and list(loaded) == list(state)
    for key, value in state.items():
        assert loaded[key].shape == value.shape and loaded[key].dtype == value.dtype
        np.testing.assert_array_equal(loaded[key], value)
