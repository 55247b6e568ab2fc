"""The recipes section of a study report, on hand-made results: ratios, worst seed, gap,
rounds to 0.9 of the final Dice, drift read from the runs' logs."""

import json
from pathlib import Path

import pytest

from common.config import validate_config
from simulations.experiment import ExperimentConfig
from simulations.recipes_report import recipes_markdown, rounds_to_fraction, structure_scores


def config(tmp_path: Path) -> ExperimentConfig:
    return validate_config(
        ExperimentConfig,
        {
            "name": "r",
            "output_dir": str(tmp_path),
            "sites": [
                {"name": "A", "vendor": "A", "format": "camus-nifti", "cases": 2},
                {"name": "B", "vendor": "B", "format": "echonet-dynamic", "cases": 2},
            ],
            "conditions": [
                {"name": "central", "kind": "centralised"},
                {"name": "fedavg", "kind": "federated"},
                {"name": "full", "kind": "federated", "labels": "full"},
            ],
        },
        "r.toml",
    )


def result(name: str, seed: int, a: dict, b: dict, curve: list[float] | None = None) -> dict:
    return {
        "condition": name,
        "seed": seed,
        "test": {"A": a, "B": b},
        "curves": {"all": curve or []},
    }


ALL = {"LV": 0.9, "MYO": 0.8, "LA": 0.8}


def test_ratios_worst_seed_gap_rounds_and_drift(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    results = [
        result("central", 0, ALL, ALL),
        result("central", 1, ALL, ALL),
        result("fedavg", 0, ALL, {"LV": 0.9, "MYO": 0.8, "LA": 0.4}, [0.1, 0.5, 0.6, 0.7]),
        result("fedavg", 1, ALL, ALL, [0.1, 0.7, 0.7, 0.7]),
        result("full", 0, ALL, ALL),
        result("full", 1, ALL, ALL),
    ]
    run = cfg.run_dir / "runs" / "fedavg" / "seed-0"
    run.mkdir(parents=True)
    rows = [
        {"event": "class-drift", "round": r, "LV": 0.0, "MYO": 0.5, "LA": v}
        for r, v in ((1, 0.6), (2, 0.8))
    ]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    text = recipes_markdown(cfg, results, {"A": {"LV", "MYO", "LA"}, "B": {"LV"}})
    # seed 0: LA = (0.8 + 0.4) / 2 = 0.6 against 0.8 -> 0.75; unannotated B/MYO, B/LA: 0.6
    assert "| fedavg | 0 | 1.000 | 1.000 | 0.750 | 0.600 | 0.200 | 3 |" in text  # 0.7 >= 0.63
    assert "| fedavg | 1 | 1.000 | 1.000 | 1.000 | 0.800 | 0.000 | 1 |" in text
    assert "| fedavg | 1.000 | 1.000 | 0.750 | 0.200 | no |" in text
    assert "| fedavg | 0.000 | 0.500 | 0.700 |" in text  # drift: mean of 0.6 and 0.8 (seed 0)


def test_helpers() -> None:
    assert rounds_to_fraction([0.0, 0.5, 0.95, 1.0]) == 2
    assert rounds_to_fraction([0.3]) is None
    scores = structure_scores(result("x", 0, {"LV": 0.5}, {"LV": 0.7, "LA": 0.2}), ["A", "B"])
    assert scores["LV"] == pytest.approx(0.6) and scores["LA"] == pytest.approx(0.2)
    assert scores["MYO"] != scores["MYO"]  # NaN: nobody scored it
