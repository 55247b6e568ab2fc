"""The Flower app end to end on Flower's simulation engine (real managed SuperLink, Ray).

Three synthetic sites of different vendors and labelled sets: A (CAMUS-like, {LV, MYO, LA}),
B (EchoNet-like, {LV}), D (handheld, folder format, {LV, LA}); 2 rounds with label dropout.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from common.config import SiteSpec
from common.data.cache import load_site_cached
from common.data.preprocess import PreprocessConfig
from common.data.synthetic.federation import FederationConfig, generate_federation
from common.federation.site_round import evaluate_site
from common.labels import Structure, partially_labelled
from common.recipe import Recipe
from common.security.checkpoint import load_checkpoint
from common.training.model import ModelConfig, build_unet
from fl_server.metrics_log import read_metrics_log
from simulations.engine import SimulationEngine
from tests.helpers import ProcessWatch

APP_DIR = Path(__file__).resolve().parents[2]
SITES = {"A": "camus-nifti", "B": "echonet-dynamic", "D": "folder"}
ROUNDS = 2
SIZE = 64


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("federation")
    fed = FederationConfig.model_validate(
        {
            "seed": 3,
            "output_dir": str(base / "data"),
            "workers": 2,
            "sites": [
                {"name": "A", "vendor": "A", "format": "camus-nifti", "cases": 14},
                {"name": "B", "vendor": "B", "format": "echonet-dynamic", "cases": 14},
                {
                    "name": "D",
                    "vendor": "D",
                    "format": "folder",
                    "cases": 14,
                    "labelled": ["LV", "LA"],
                },
            ],
        }
    )
    generate_federation(fed, progress=lambda _: None)
    specs = [SiteSpec(name=n, format=f, root=base / "data" / n) for n, f in SITES.items()]
    (base / "sites.json").write_text(json.dumps([s.model_dump(mode="json") for s in specs]))
    run_config = {
        "num-server-rounds": ROUNDS,
        "local-epochs": 3,
        "lr": 0.003,
        # the sites follow the coordinator's round (its train instruction names the run's
        # rounds; a site refuses a schedule without them)
        "lr-schedule": "cosine",
        "batch-size": 8,
        "image-size": SIZE,
        "label-dropout-p": 0.5,
        "min-sites": 3,
        "client-threads": 1,
        "output-dir": str(base / "out"),
        "cache-dir": str(base / "cache"),
        "sim-sites": str(base / "sites.json"),
        "save-updates": True,
        "seed": 1,
        # plain FedAvg, so that the global model can be checked against the saved updates
        "strategy": "fedavg",
        "step-normalised": False,
        "server-momentum": 0.0,
        # a relative SQLite store is made absolute by fl-server run / the harness; here it is
        "mlflow-tracking-uri": f"sqlite:///{base / 'mlflow.db'}",
    }
    with ProcessWatch(str(base)) as watch, SimulationEngine(base / "flwr") as engine:
        outcome = engine.run(APP_DIR, run_config, num_sites=3, timeout=600)
    leftovers = watch.leftovers()
    return {
        "base": base,
        "outcome": outcome,
        "out": base / "out",
        "specs": specs,
        "rows": read_metrics_log(base / "out" / "metrics.jsonl"),
        "leftovers": leftovers,
        "watched": dict(watch.seen),
    }


def events(run: dict, name: str) -> list[dict]:
    return [r for r in run["rows"] if r.get("event") == name]


def test_run_succeeds_and_leaves_no_process(run: dict) -> None:
    assert run["outcome"].returncode == 0, "\n".join(run["outcome"].output[-40:])
    # SuperLink, ServerApp, simulation and Ray: everything the run started is gone
    commands = " ".join(run["watched"].values())
    assert "superlink" in commands and "raylet" in commands  # the watch saw the run's processes
    assert run["leftovers"] == {}


def test_every_site_trains_every_round(run: dict) -> None:
    done = events(run, "round-done")
    assert [e["round"] for e in done] == list(range(1, ROUNDS + 1))
    assert all(e["sites"] == ["A", "B", "D"] for e in done)
    for r in range(1, ROUNDS + 1):
        trained = {
            row["site"]
            for row in run["rows"]
            if row.get("phase") == "train" and row.get("round") == r
        }
        assert trained == {"A", "B", "D", "*"}
    assert not events(run, "site-error")


def test_negotiated_partial_structures(run: dict) -> None:
    negotiated = events(run, "negotiated")[0]
    labelled = {"A": {"LV", "MYO", "LA"}, "B": {"LV"}, "D": {"LV", "LA"}}
    assert {k: set(v) for k, v in negotiated["sites"].items()} == labelled
    expected = partially_labelled([{Structure[n] for n in v} for v in labelled.values()])
    assert set(negotiated["partial"]) == {s.name for s in expected} == {"MYO", "LA"}
    assert negotiated["server_rounds"] == ROUNDS  # what a resume compares its rounds with
    config = events(run, "train-config")[0]
    assert set(config["partial-structures"].split(",")) == {"MYO", "LA"}
    assert config["label-dropout-p"] == 0.5


def test_sites_send_only_weights_and_scalar_metrics(run: dict) -> None:
    audits = events(run, "reply-audit")
    train = [a for a in audits if a["phase"] == "train"]
    val = [a for a in audits if a["phase"] == "val"]
    assert len(train) == 3 * ROUNDS and len(val) == 3 * ROUNDS
    for audit in train:
        assert audit["records"] == {"arrays": "ArrayRecord", "metrics": "MetricRecord"}
        assert audit["arrays"] == {"arrays": ["packed-float", "packed-int"]}  # the weights only
        assert set(audit["metrics"]["metrics"].values()) == {"float"}
    for audit in val:
        assert audit["records"] == {"metrics": "MetricRecord"}
        assert set(audit["metrics"]["metrics"].values()) == {"float"}


def test_fedavg_is_the_sample_weighted_mean(run: dict) -> None:
    updates = [np.load(p) for p in sorted((run["out"] / "updates").glob("round-0001-*.npz"))]
    assert len(updates) == 3
    weights = np.array([float(u["__weight__"]) for u in updates])
    assert sorted(weights) == sorted(
        float(
            len(
                load_site_cached(
                    s, PreprocessConfig(size=(SIZE, SIZE)), run["base"] / "cache"
                ).split("train")
            )
        )
        for s in run["specs"]
    )
    global_state, _ = load_checkpoint(run["out"] / "checkpoints" / "round-0001.pt")
    for key, tensor in global_state.items():
        stacked = np.stack([u[key].astype(np.float64) for u in updates])
        expected = np.tensordot(weights / weights.sum(), stacked, axes=1)
        if tensor.dtype.is_floating_point:
            np.testing.assert_allclose(tensor.numpy(), expected, rtol=1e-5, atol=1e-6)
        else:  # integer buffers (BatchNorm batch counters) keep their dtype
            assert tensor.dtype == torch.int64
            assert abs(int(tensor) - expected) < 1.0


def test_metrics_log_is_complete_and_lv_dice_rises(run: dict) -> None:
    rows = [r for r in run["rows"] if "phase" in r and r["site"] != "*"]
    for phase, rounds in (
        ("val", range(0, ROUNDS + 1)),
        ("train", range(1, ROUNDS + 1)),
        ("test", [ROUNDS]),
    ):
        for r in rounds:
            for site in SITES:
                row = next(
                    x for x in rows if (x["phase"], x["round"], x["site"]) == (phase, r, site)
                )
                for s in ("LV", "MYO", "LA"):
                    assert f"dice-{s}" in row and f"n-{s}" in row
                    if phase != "train":
                        assert row[f"full-n-{s}"] > 0  # synthetic: every structure scored
    aggregate = {
        r["round"]: r for r in run["rows"] if r.get("phase") == "val" and r.get("site") == "*"
    }
    assert aggregate[ROUNDS]["full-dice-LV"] > aggregate[0]["full-dice-LV"] + 0.1
    checkpoints = run["out"] / "checkpoints"
    for name in ["round-0000.pt", "round-0001.pt", "round-0002.pt", "best.pt", "final.pt"]:
        assert (checkpoints / name).is_file() and (checkpoints / f"{name}.json").is_file()


def test_server_side_test_scores_match_a_local_rescoring(run: dict) -> None:
    summary = json.loads((run["out"] / "summary.json").read_text())
    state, _ = load_checkpoint(run["out"] / "checkpoints" / "final.pt")
    model = build_unet(ModelConfig())
    model.load_state_dict(state)
    for spec in run["specs"]:
        data = load_site_cached(spec, PreprocessConfig(size=(SIZE, SIZE)), run["base"] / "cache")
        local = evaluate_site(model, data.split("test"), Recipe(), device=torch.device("cpu"))
        remote = summary["test"][spec.name]
        for s in ("LV", "MYO", "LA"):
            assert remote[f"full-dice-{s}"] == pytest.approx(local[f"full-dice-{s}"], abs=1e-6)


def test_the_coordinators_run_report(run: dict) -> None:
    """fl-server report's tables, from the run folder the ServerApp wrote: every site, every
    round, the final test Dice as summary.json has it."""
    from fl_server.run_report import write_run_report

    path = write_run_report(run["out"])
    text = path.read_text()
    summary = json.loads((run["out"] / "summary.json").read_text())
    for site, labelled in (("A", "LA, LV, MYO"), ("B", "LV"), ("D", "LA, LV")):
        assert f"| {site} | {labelled} |" in text
    rounds = [
        x for x in text.splitlines() if x.startswith("| ") and x.split("|")[1].strip().isdigit()
    ]
    assert [int(x.split("|")[1]) for x in rounds] == list(range(ROUNDS + 1))
    a = summary["test"]["A"]
    assert (
        f"| A | {a['full-dice-LV']:.3f} | {a['full-dice-MYO']:.3f} | {a['full-dice-LA']:.3f} |"
        in text
    )
    assert (path.parent / "curves.png").stat().st_size < 300_000


def test_tensorboard_has_the_per_round_dice_of_the_metrics_log(run: dict) -> None:
    """The run's TensorBoard file (run setting tensorboard, on by default) holds every round's
    aggregate validation Dice and each site's, equal to the metrics log's, and the round times."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events_dir = run["out"] / "tensorboard"
    assert list(events_dir.glob("events.out.tfevents.*"))
    board = EventAccumulator(str(events_dir))
    board.Reload()
    tags = set(board.Tags()["scalars"])
    logged = {
        (r["site"], r["round"]): r
        for r in run["rows"]
        if r.get("phase") == "val" and "event" not in r
    }
    for site, tag_site in (("*", "all"), ("A", "A"), ("B", "B"), ("D", "D")):
        for s in ("LV", "MYO", "LA"):
            tag = f"val/{tag_site}/full-dice-{s}"
            assert tag in tags
            scalars = {e.step: e.value for e in board.Scalars(tag)}
            assert sorted(scalars) == list(range(ROUNDS + 1))
            for r, value in scalars.items():
                assert value == pytest.approx(logged[(site, r)][f"full-dice-{s}"], abs=1e-6)
    assert [e.step for e in board.Scalars("round/seconds")] == list(range(1, ROUNDS + 1))
    assert all(e.value > 0 for e in board.Scalars("round/seconds"))


def test_mlflow_run_has_the_per_round_dice_and_the_recipe(run: dict) -> None:
    """With mlflow-tracking-uri set, the ServerApp (in Flower's simulation) logged one MLflow run
    named after the output folder, FINISHED, with the metrics log's per-round validation Dice
    and the recipe as parameters."""
    mlflow = pytest.importorskip("mlflow")
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{run['base'] / 'mlflow.db'}")
    run_id = (run["out"] / "mlflow-run-id").read_text().strip()
    tracked = client.get_run(run_id)
    assert tracked.info.status == "FINISHED" and tracked.info.run_name == "out"
    assert tracked.data.params["strategy"] == "fedavg"
    assert tracked.data.params["label-dropout-p"] == "0.5"
    history = {m.step: m.value for m in client.get_metric_history(run_id, "val/all/full-dice-LV")}
    logged = {
        r["round"]: r["full-dice-LV"]
        for r in run["rows"]
        if r.get("phase") == "val" and r.get("site") == "*" and "event" not in r
    }
    assert sorted(history) == list(range(ROUNDS + 1))
    assert history == pytest.approx(logged, abs=1e-9)
