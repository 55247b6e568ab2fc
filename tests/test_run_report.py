"""fl-server report on a hand-written run log: exact numbers in the tables; an unfinished run
says so; a folder that is not a run is refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.errors import ConfigError
from fl_server.cli import main as fl_server
from fl_server.metrics_log import MetricsLog
from fl_server.run_report import write_run_report


def scores(lv: float, myo: float | None = None) -> dict[str, float]:
    row = {"num-examples": 4.0, "dice-LV": lv, "n-LV": 4.0}
    row |= {"dice-MYO": myo or 0.0, "n-MYO": 4.0 if myo is not None else 0.0}
    return row | {"dice-LA": 0.0, "n-LA": 0.0}


def write_run(run: Path, *, finished: bool) -> None:
    log = MetricsLog(run / "metrics.jsonl")
    log.event(
        "negotiated",
        sites={"A": ["LV", "MYO"], "B": ["LV"]},
        counts={"A": {"train": 8, "val": 2, "test": 2}, "B": {"train": 6, "val": 2, "test": 4}},
        partial=["MYO"],
    )
    log.event("train-config", strategy="fedavgm", **{"label-dropout-p": 0.5, "lr": 0.002})
    for r, (lv, myo) in enumerate([(0.1, 0.05), (0.6, 0.3), (0.8, 0.55)]):
        log.site_row(r, "val", "A", 1, scores(lv, myo))
        log.site_row(r, "val", "*", 0, scores(lv + 0.01, myo))
        if r:
            log.event("round-done", round=r, seconds=1.25 * r)
    if finished:
        test = {"A": scores(0.812, 0.5), "B": scores(0.9)}
        summary = {
            "rounds": 2,
            "best_round": 2,
            "seconds": 9.5,
            "test": test,
            "final_model_delivered": {"A": "stored", "B": "DataError on the site"},
        }
        (run / "summary.json").write_text(json.dumps(summary))


def test_tables_of_a_finished_run(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "r1"
    write_run(run, finished=True)
    text = write_run_report(run).read_text()
    assert "| A | LV, MYO | 8 / 2 / 2 |" in text and "| B | LV | 6 / 2 / 4 |" in text
    assert "strategy fedavgm, label-dropout-p 0.5, lr 0.002" in text
    assert "| 0 | 0.110 | 0.050 | - | - |" in text
    assert "| 2 | 0.810 | 0.550 | - | 2.5 |" in text
    assert "| A | 0.812 | 0.500 | - | 4 |" in text and "| B | 0.900 | - | - | 4 |" in text
    assert "Final model kept by: A." in text and "- B: DataError on the site" in text
    assert (run / "report" / "curves.png").stat().st_size < 300_000


def test_an_unfinished_run_reports_its_rounds_so_far(tmp_path: Path) -> None:
    run = tmp_path / "r2"
    write_run(run, finished=False)
    text = write_run_report(run).read_text()
    assert "**Unfinished**" in text and "| 1 | 0.610 | 0.300 | - | 1.2 |" in text
    assert "Final model on each site" not in text


def test_not_a_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"no metrics\.jsonl here"):
        write_run_report(tmp_path)
    home = tmp_path / "home"
    (home / "runs").mkdir(parents=True)
    assert fl_server(["report", "--home", str(home), "nope"]) == 2
    assert "no run 'nope' in this home" in capsys.readouterr().err
