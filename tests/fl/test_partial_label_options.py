"""Every federated partial-label option end to end on Flower's simulation engine: conditional
distillation, label-aware and step-normalised means, the server optimisers, local SGD and
InstanceNorm, the partner frame as a second input channel, with packed, per-tensor and float16
weights, update validation and resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.model_card import card_from_sidecar
from common.recipe import RECIPE_KEYS
from common.security.checkpoint import load_checkpoint
from common.training.model import build_unet
from fl_server.metrics_log import read_metrics_log
from simulations.engine import SimulationEngine
from tests.helpers import three_site_federation

APP_DIR = Path(__file__).resolve().parents[2]

COMBINATIONS = {
    "distil-labelaware-fedadam-sgd-partner": {
        "model-context": "partner",  # two input channels: the server's class slices see them
        "distillation-weight": 1.0,
        "distillation-ramp-rounds": 2,
        "label-aware": True,
        "strategy": "fedadam",
        "server-lr": 0.01,
        "optimiser": "sgd",
        "lr": 0.05,
    },
    "stepnorm-fedavgm-instance-fp16": {
        "step-normalised": True,
        "strategy": "fedavgm",
        "server-momentum": 0.6,
        "model-norm": "instance",
        "transfer-dtype": "float16",
        "pack-weights": False,
        "distillation-weight": 0.5,
    },
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    base = tmp_path_factory.mktemp("options")
    three_site_federation(base, seed=5)
    out: dict[str, dict] = {}
    with SimulationEngine(base / "flwr") as engine:
        for name, options in COMBINATIONS.items():
            config = {
                "num-server-rounds": 2,
                "batch-size": 8,
                "image-size": 32,
                "model-channels": "4,8,16",
                "min-sites": 3,
                "client-threads": 1,
                "output-dir": str(base / name),
                "cache-dir": str(base / "cache"),
                "sim-sites": str(base / "sites.json"),
                **options,
            }
            first = engine.run(APP_DIR, config, 3, timeout=600)
            resumed = engine.run(
                APP_DIR, {**config, "num-server-rounds": 3, "resume": True}, 3, timeout=600
            )
            out[name] = {
                "outcomes": (first, resumed),
                "out": base / name,
                "rows": read_metrics_log(base / name / "metrics.jsonl"),
                "options": options,
            }
    return out


@pytest.mark.parametrize("name", list(COMBINATIONS))
def test_each_option_runs_and_resumes(runs: dict[str, dict], name: str) -> None:
    run = runs[name]
    for outcome in run["outcomes"]:
        assert outcome.returncode == 0, "\n".join(outcome.output[-30:])
    rows = run["rows"]
    events = lambda kind: [r for r in rows if r.get("event") == kind]  # noqa: E731
    assert [r["round"] for r in events("round-done")] == [1, 2, 3]
    assert len(events("resumed")) == 1
    assert not events("update-rejected") and not events("site-error")
    assert all(r["sites"] == ["A", "B", "C"] for r in events("round-done"))
    config = events("train-config")[0]
    recipe = {k: v for k, v in run["options"].items() if k in RECIPE_KEYS}
    assert recipe and all(config[k] == v for k, v in recipe.items())  # what every site used
    drift = events("class-drift")
    assert [r["round"] for r in drift] == [1, 2, 3]
    for r in drift:
        assert set(r) >= {"LV", "MYO", "LA"} and all(0 <= r[s] <= 1 for s in ("LV", "MYO", "LA"))
    train = [r for r in rows if r.get("phase") == "train" and r.get("site") in ("B", "C")]
    assert train and all(r["train-distillation-loss"] > 0 for r in train)  # MYO/LA unannotated
    state, meta = load_checkpoint(run["out"] / "checkpoints" / "final.pt")
    card = card_from_sidecar(run["out"] / "checkpoints" / "final.pt", meta)
    model = build_unet(card.model)
    model.load_state_dict(state)  # the final model is a whole, loadable network of its recipe
    assert card.model.context == run["options"].get("model-context", "none")
    assert card.preprocess.size == tuple(meta["preprocess"]["size"]) and card.labels["3"] == "LA"
