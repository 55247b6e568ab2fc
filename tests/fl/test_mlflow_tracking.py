"""The metrics log's MLflow sink on a real MLflow tracking store (a SQLite file): the same
per-round metrics as TensorBoard, the recipe as parameters, a resumed run continuing its MLflow
run, the end status; and a clear error where MLflow is missing or the store cannot be used."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from common.errors import ConfigError
from fl_server.metrics_log import RUN_ID_FILE, MetricsLog, MlflowTarget, absolute_tracking_uri

pytest.importorskip("mlflow", reason="echofl[mlflow] is part of the dev install")


def _history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow import MlflowClient

    metrics = MlflowClient(tracking_uri=uri).get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in metrics)


def test_rounds_go_to_one_mlflow_run_that_a_resume_continues(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    target = MlflowTarget(uri, "echofl-test", "run-1")
    out = tmp_path / "run-1"
    log = MetricsLog(out / "metrics.jsonl", mlflow=target)
    log.event("train-config", lr=0.002, strategy="fedavgm")
    for r, dice in ((1, 0.5), (2, 0.75)):
        log.site_row(r, "val", "A", 1, {"dice-LV": dice, "num-examples": 10})
        log.site_row(r, "val", "*", 0, {"dice-LV": dice + 0.1})
        log.event("round-done", round=r, seconds=3.5, sites=["A"])
    log.event("update-rejected", round=2, site="B", reason="NaN")  # not a metric
    log.site_row(3, "val", "A", 1, {"dice-LV": 0.1})  # round 3 never finished ...
    log.close("FAILED")  # ... the coordinator died in it
    run_id = (out / RUN_ID_FILE).read_text().strip()
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and run.info.run_name == "run-1"
    assert run.data.params == {"lr": "0.002", "strategy": "fedavgm"}
    assert _history(uri, run_id, "val/A/dice-LV") == [(1, 0.5), (2, 0.75)]
    assert _history(uri, run_id, "val/all/dice-LV") == [(1, 0.6), (2, 0.85)]
    assert _history(uri, run_id, "round/seconds") == [(1, 3.5), (2, 3.5)]
    assert set(run.data.metrics) == {
        "val/A/dice-LV", "val/A/num-examples", "val/all/dice-LV", "round/seconds"
    }  # fmt: skip

    resumed = MetricsLog(out / "metrics.jsonl", mlflow=target)  # resume=true, same folder
    resumed.event("train-config", lr=0.002, strategy="fedavgm")  # logged again on a resume
    resumed.site_row(3, "val", "A", 1, {"dice-LV": 0.8})  # round 3 again, to its end
    resumed.event("round-done", round=3, seconds=3.0, sites=["A"])
    resumed.site_row(3, "test", "A", 1, {"dice-LV": 0.7})  # the final test, sent at close
    resumed.close()
    assert (out / RUN_ID_FILE).read_text().strip() == run_id
    (only,) = client.search_runs([run.info.experiment_id])
    assert only.info.run_id == run_id and only.info.status == "FINISHED"
    assert _history(uri, run_id, "val/A/dice-LV") == [(1, 0.5), (2, 0.75), (3, 0.8)]
    assert _history(uri, run_id, "test/A/dice-LV") == [(3, 0.7)]
    assert client.get_run(run_id).data.params == {"lr": "0.002", "strategy": "fedavgm"}


def test_without_mlflow_installed_the_error_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    target = MlflowTarget(f"sqlite:///{tmp_path / 'm.db'}", "e", "r")
    with pytest.raises(ConfigError, match=r"MLflow is not installed.*echofl\[mlflow\]"):
        MetricsLog(tmp_path / "out" / "metrics.jsonl", mlflow=target)


def test_a_store_that_cannot_be_used_is_named(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    uri = f"sqlite:///{tmp_path / 'afile' / 'mlflow.db'}"  # inside a file: cannot be created
    with pytest.raises(ConfigError, match=r"mlflow-tracking-uri .*afile.*cannot start"):
        MetricsLog(tmp_path / "out" / "metrics.jsonl", mlflow=MlflowTarget(uri, "e", "r"))


def test_a_relative_sqlite_store_is_made_absolute_where_it_was_typed(tmp_path: Path) -> None:
    assert absolute_tracking_uri("sqlite:///m/mlflow.db", tmp_path) == (
        f"sqlite:///{tmp_path.resolve() / 'm' / 'mlflow.db'}"
    )
    assert absolute_tracking_uri("sqlite:////abs/mlflow.db", tmp_path) == "sqlite:////abs/mlflow.db"
    assert absolute_tracking_uri("http://host:5000", tmp_path) == "http://host:5000"


def test_a_relative_sqlite_store_is_refused_where_the_serverapp_would_misplace_it() -> None:
    from common.federation.run_settings import parse_run_settings
    from fl_server.server_app import mlflow_target

    relative = parse_run_settings({"mlflow-tracking-uri": "sqlite:///mlflow.db"})
    with pytest.raises(ConfigError, match=r"relative path.*sqlite:////abs"):
        mlflow_target(relative)
    absolute = parse_run_settings(
        {"mlflow-tracking-uri": "sqlite:////data/mlflow.db", "output-dir": "/runs/r7"}
    )
    assert mlflow_target(absolute) == MlflowTarget("sqlite:////data/mlflow.db", "echofl", "r7")
    assert mlflow_target(parse_run_settings({})) is None
