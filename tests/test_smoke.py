"""`python simulations/run.py --smoke`, the README's main job, from a fresh working directory.

Runs the real thing (synthetic data generation, three federated conditions on Flower's
simulation engine, local-only and centralised runs, the report) and checks what it writes.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import ProcessWatch

REPO = Path(__file__).resolve().parents[1]
CONDITIONS = [
    "FedAvg + adaptive CE",
    "FedAvg + adaptive CE + label dropout",
    "FedAvg + naive CE",
    "local only",
    "centralised pooled",
]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("smoke")
    command = [sys.executable, str(REPO / "simulations" / "run.py"), "--smoke"]
    with ProcessWatch(str(work)) as watch:  # the harness's FLWR_HOME is under work
        first = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=900)
        second = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=300)
    leftovers = watch.leftovers()
    return {
        "work": work,
        "first": first,
        "second": second,
        "leftovers": leftovers,
        "report": work / "runs" / "smoke" / "report",
    }


def test_smoke_runs_and_prints_the_table(smoke: dict) -> None:
    first = smoke["first"]
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    lines = first.stdout.splitlines()
    assert any(line.startswith("| A | train | synthetic vendor A |") for line in lines)  # set-up
    header = next(line for line in lines if line.startswith("| site | structure |"))
    assert header == "| site | structure | " + " | ".join(CONDITIONS) + " |"
    assert "round 2/2 done" in first.stdout  # progress per round was shown
    assert smoke["leftovers"] == {}


def test_second_invocation_resumes(smoke: dict) -> None:
    second = smoke["second"]
    assert second.returncode == 0
    assert second.stdout.count("already done") == len(CONDITIONS)
    assert "running" not in second.stdout


def test_table_numbers_come_from_the_runs(smoke: dict) -> None:
    runs = smoke["work"] / "runs" / "smoke" / "runs"
    results = [json.loads(p.read_text()) for p in runs.glob("*/seed-0/result.json")]
    assert sorted(r["condition"] for r in results) == sorted(CONDITIONS)
    with (smoke["report"] / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    # 3 federated + centralised on A, B, C, U; local only on its own sites A, B, C
    assert len(rows) == (4 * 4 + 3) * 3
    by_condition = {r["condition"]: r for r in results}
    for row in rows:
        stored = by_condition[row["condition"]]["test"][row["site"]][row["structure"]]
        assert float(row["dice_mean"]) == pytest.approx(stored, abs=1e-4)
        assert row["scored_on"] == "full"
    markdown = (smoke["report"] / "results.md").read_text()
    table = [line for line in markdown.splitlines() if line.startswith("| B | MYO *")]
    assert table, "B does not annotate MYO: its row must be marked"
    cells = [c.strip() for c in table[0].strip("|").split("|")][2:]
    expected = [by_condition[c]["test"]["B"]["MYO"] for c in CONDITIONS]
    assert [float(c) for c in cells] == pytest.approx(expected, abs=5e-4)


def test_plots_are_real_images(smoke: dict) -> None:
    report = smoke["report"]
    names = ["curves.png", "bars.png"] + [f"overlays-{s}.png" for s in "ABCU"]
    for name in names:
        image = np.asarray(Image.open(report / name).convert("L"), dtype=float)
        assert image.shape[0] > 300 and image.shape[1] > 300, name
        assert image.std() > 10, f"{name} looks blank"
    overlay = np.asarray(Image.open(report / "overlays-A.png").convert("RGB"), dtype=int)
    red = (overlay[..., 0] > 120) & (overlay[..., 1] < 80) & (overlay[..., 2] < 80)
    assert red.sum() > 200  # the LV fill of the ground truth and predictions is drawn
