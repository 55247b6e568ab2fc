"""The shift-strength study: ``[shift]`` in an experiment config (simulations.experiment), its
report across levels (simulations.shift_report) on hand-made results, and the shipped config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from common.config import load_config
from simulations.experiment import ExperimentConfig
from simulations.shift_report import (
    Test,
    analyse,
    bound_of,
    claim_verdict,
    markdown,
    twin_of,
    write_shift_report,
)
from simulations.study import holm

REPO = Path(__file__).resolve().parents[2]

BASE = {
    "name": "sh",
    "seeds": list(range(10)),
    "shift": {"levels": [0.0, 1.0], "sites": ["B"]},
    "sites": [
        {"name": "A", "vendor": "A", "format": "camus-nifti", "cases": 6},
        {"name": "B", "vendor": "B", "format": "folder", "labelled": ["LV"], "cases": 6},
    ],
    "conditions": [
        {"name": "adaptive", "kind": "centralised"},
        {"name": "LD", "kind": "centralised", "recipe": {"label_dropout": {"p": 0.5}}},
        {"name": "IN", "kind": "centralised", "recipe": {"model": {"norm": "instance"}}},
        {
            "name": "IN LD",
            "kind": "centralised",
            "recipe": {"model": {"norm": "instance"}, "label_dropout": {"p": 0.5}},
        },
        {"name": "full", "kind": "centralised", "labels": "full"},
    ],
}


def test_each_level_is_its_own_experiment_with_the_shifted_sites_set() -> None:
    config = ExperimentConfig.model_validate(BASE)
    level = config.at_level(0.67)
    assert (level.name, level.data_dir, level.shift) == (
        "sh-s067",
        Path("data/experiments/s067"),
        None,
    )
    a, b = level.sites
    assert a.shift is None and (b.shift.strength, b.shift.reference) == (0.67, "A")
    # a run at one level is keyed by its shifted sites: levels never share results
    cond = config.conditions[0]
    assert config.at_level(0.0).run_key(cond, 0) != config.at_level(1.0).run_key(cond, 0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sites": ["Q"]}, "shift.sites names unknown site 'Q'"),
        ({"levels": [0.5, 1.5]}, r"levels must lie in \[0, 1\]"),
        ({"levels": [0.5, 0.5]}, "levels must differ in their first two decimals"),
        ({"levels": [0.12, 0.124]}, "levels must differ in their first two decimals"),
        ({"level": [0.5]}, "Extra inputs are not permitted"),
    ],
)
def test_bad_shift_settings_name_the_problem(change: dict, message: str) -> None:
    data = {**BASE, "shift": {**BASE["shift"], **change}}
    with pytest.raises(ValidationError, match=message):
        ExperimentConfig.model_validate(data)


def test_twins_pair_each_condition_with_the_same_one_without_label_dropout() -> None:
    conditions = ExperimentConfig.model_validate(BASE).conditions
    twins = {c.name: getattr(twin_of(c, conditions), "name", None) for c in conditions}
    assert twins == {
        "adaptive": None,
        "LD": "adaptive",
        "IN": "adaptive",
        "IN LD": "IN",
        "full": None,
    }


def _results(level: float, rng: np.random.Generator) -> list[dict]:
    """B's unannotated cells (MYO, LA): the bound at 0.9; adaptive CE at 0.9 on A's domain and
    0.5 at s = 1 (the shortcut); LD recovers to 0.8 at s = 1; noise 0.01."""
    out = []
    u = {"adaptive": 0.9 - 0.4 * level, "LD": 0.9 - 0.1 * level, "IN": 0.9, "IN LD": 0.9}
    u["full"] = 0.9
    for seed in range(10):
        for name, value in u.items():
            v = value + rng.normal(0, 0.01)
            test = {"A": {"LV": 0.9, "MYO": 0.85, "LA": 0.88}, "B": {"LV": 0.9, "MYO": v, "LA": v}}
            out.append({"condition": name, "seed": seed, "test": test})
    return out


def test_the_report_finds_the_shortcut_and_its_removal_where_they_are(tmp_path: Path) -> None:
    config = ExperimentConfig.model_validate(BASE)
    rng = np.random.default_rng(0)
    per_level = {0.0: _results(0.0, rng), 1.0: _results(1.0, rng)}
    analysis = analyse(config, per_level)
    assert analysis["unannotated"] == ["B/MYO", "B/LA"]
    assert analysis["annotated"] == ["A/LV", "A/MYO", "A/LA", "B/LV"]
    u = analysis["table"]["1"]["adaptive"]["U"]
    assert sorted(u) == list(range(10)) and np.mean(list(u.values())) == pytest.approx(
        0.5, abs=0.01
    )
    tests = {(t["family"], t["level"], t["a"], t["b"]): t for t in analysis["tests"]}
    shortcut0, shortcut1 = (tests[("shortcut", s, "adaptive", "full")] for s in (0.0, 1.0))
    assert shortcut0["verdict"] == "tie" and shortcut1["verdict"] == "higher"
    assert shortcut1["diff"] == pytest.approx(0.4, abs=0.02)
    # 10 seeds all one way: exact Wilcoxon p = 2 / 1024; Holm over the claim's 2 levels
    assert shortcut1["p"] == pytest.approx(2 / 1024)
    claim = [t for t in analysis["tests"] if (t["family"], t["a"]) == ("shortcut", "adaptive")]
    assert len(claim) == 2
    assert [t["p_holm"] for t in claim] == pytest.approx(holm([t["p"] for t in claim]))
    assert [t["family_size"] for t in claim] == [2, 2]
    assert tests[("improvement", 1.0, "adaptive", "LD")]["verdict"] == "higher"
    assert tests[("improvement", 0.0, "adaptive", "LD")]["verdict"] == "tie"
    # the domain-dependent part: U's deficit (0.4 at s = 1) beyond N's (none)
    gap0, gap1 = (tests[("domain gap", s, "adaptive", "full")] for s in (0.0, 1.0))
    assert gap0["verdict"] == "tie" and gap1["verdict"] == "higher"
    assert gap1["diff"] == pytest.approx(0.4, abs=0.02)
    # structure by structure: B/MYO and B/LA (0.5 at s = 1) against A/MYO (0.85) and A/LA (0.88):
    # -0.365 for adaptive CE, +0.035 for the bound (B at 0.9): a difference of 0.4
    matched1 = tests[("matched gap", 1.0, "adaptive", "full")]
    assert matched1["mean_a"] == pytest.approx(0.5 - 0.865, abs=0.01)
    assert matched1["diff"] == pytest.approx(0.4, abs=0.02)
    assert matched1["verdict"] == "higher"
    assert tests[("matched gap", 0.0, "adaptive", "full")]["verdict"] == "tie"
    # InstanceNorm has no shortcut here, and label dropout on top of it costs a little
    assert tests[("shortcut", 1.0, "IN", "full")]["verdict"] == "tie"
    assert tests[("improvement", 1.0, "IN", "IN LD")]["verdict"] == "lower"
    # the verdict across levels: only from s* = 1 on

    ld = [Test(**{k: v for k, v in t.items() if k != "verdict"}) for t in analysis["tests"]]
    ld = [t for t in ld if t.family == "improvement" and t.b == "LD"]
    assert claim_verdict(ld, "higher") == "reproduced only from s* = 1 on"
    text = markdown(config, analysis)
    assert "LD improves on adaptive on U: **reproduced only from s* = 1 on**" in text
    config = ExperimentConfig.model_validate({**BASE, "output_dir": str(tmp_path / "runs")})
    level_report = config.at_level(1.0).run_dir / "report"
    level_report.mkdir(parents=True)
    (level_report / "overlays-B.png").write_bytes(b"png of B at s = 1")
    paths = write_shift_report(config, per_level, tmp_path / "report")
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    # the shifted site's overlays of each level's own report come along, linked
    assert (tmp_path / "report" / "overlays-s100-B.png").read_bytes() == b"png of B at s = 1"
    assert "![overlays-s100-B.png](overlays-s100-B.png)" in paths["markdown"].read_text()


def test_the_shipped_shift_study_config() -> None:
    config = load_config(ExperimentConfig, REPO / "simulations" / "configs" / "shift.toml")
    assert config.shift is not None and len(config.shift.levels) >= 4 and len(config.seeds) >= 10
    assert config.shift.sites == ["B", "C"]
    kinds = {c.kind for c in config.conditions}
    assert kinds == {"centralised"}
    dropout = sorted(
        (
            c.recipe.get("label_dropout", {}).get("mode", "structures"),
            c.recipe.get("label_dropout", {}).get("p", 0),
        )
        for c in config.conditions
    )
    # adaptive CE, the bound, the paper's three drop rates and the site-set variant
    assert dropout == [
        ("site-sets", 0.5),
        ("structures", 0),
        ("structures", 0),
        ("structures", 0.25),
        ("structures", 0.5),
        ("structures", 0.75),
    ]
    quick = config.quick_variant()
    assert quick.shift is not None and quick.shift.levels == [0.0, 1.0]
    assert quick.at_level(1.0).name == "shift-quick-s100"


@pytest.mark.parametrize("name", ["shift-unit", "shift-instancenorm", "shift-federated"])
def test_the_shipped_factor_configs_pair_each_condition_with_its_own_baseline(name: str) -> None:
    """The preprocessing and normalisation-layer variants: every label-dropout condition has a
    twin with the same preprocessing / layer, every partial condition a bound with it."""
    config = load_config(ExperimentConfig, REPO / "simulations" / "configs" / f"{name}.toml")
    partial = [c for c in config.conditions if c.labels == "partial"]
    for c in partial:
        bound = bound_of(c, config.conditions)
        assert bound is not None and bound.recipe == _strip(c.recipe), c.name
        if "label_dropout" in c.recipe:
            twin = twin_of(c, config.conditions)
            assert twin is not None and twin.recipe == _strip(c.recipe), c.name
    assert config.data_dir == Path("data/shift")  # the sites of shift.toml, reused


def _strip(recipe: dict) -> dict:
    return {k: v for k, v in recipe.items() if k != "label_dropout"}


def test_a_tiny_shift_study_runs_resumes_and_reports_from_finished_runs(tmp_path: Path) -> None:
    """python simulations/run.py on a [shift] config: every level runs and the report across
    levels is written; --report-only then reports from what is finished and runs nothing."""
    import json
    import subprocess
    import sys

    import tomli_w

    config = {
        **BASE,
        "seeds": [0],
        "data_dir": str(tmp_path / "data"),
        "output_dir": str(tmp_path / "runs"),
        "budget": {"rounds": 1},
        "recipe": {"preprocess": {"size": [32, 32]}},
        "conditions": [BASE["conditions"][0], BASE["conditions"][-1]],
    }
    path = tmp_path / "tiny-shift.toml"
    path.write_bytes(tomli_w.dumps(config).encode())
    command = [sys.executable, str(REPO / "simulations" / "run.py"), "--config", str(path)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    results = sorted((tmp_path / "runs").glob("sh-s*/runs/*/seed-0/result.json"))
    assert len(results) == 4  # 2 levels x 2 conditions
    analysis = json.loads((tmp_path / "runs" / "sh" / "report" / "analysis.json").read_text())
    families = sorted(t["family"] for t in analysis["tests"])
    assert analysis["levels"] == [0.0, 1.0]
    assert families == ["domain gap"] * 2 + ["matched gap"] * 2 + ["shortcut"] * 2
    results[0].unlink()
    second = subprocess.run(
        [*command, "--report-only"], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert "report from the 3 of 4 runs finished so far (nothing run)" in second.stdout
    assert not results[0].exists()
    text = (tmp_path / "runs" / "sh" / "report" / "results.md").read_text()
    assert "**In progress: 3 of 4 runs finished**" in text


def test_site_set_dropout_is_refused_where_it_cannot_work() -> None:
    conditions = [
        {
            "name": "fed",
            "kind": "federated",
            "recipe": {"label_dropout": {"p": 0.5, "mode": "site-sets"}},
        }
    ]
    with pytest.raises(ValidationError, match="centralised conditions only"):
        ExperimentConfig.model_validate({**BASE, "conditions": conditions})
    both = {"p": 0.5, "mode": "site-sets", "structures": ["LA"]}
    conditions = [{"name": "c", "kind": "centralised", "recipe": {"label_dropout": both}}]
    with pytest.raises(ValidationError, match="cannot be combined with mode 'site-sets'"):
        ExperimentConfig.model_validate({**BASE, "conditions": conditions})


def _claim(levels_hits: list[tuple[float, str]], seeds: int = 10) -> list[Test]:
    return [
        Test(
            "improvement",
            s,
            "a",
            "b",
            seeds,
            0.5,
            0.6,
            0.1,
            0.05,
            0.15,
            1.0,
            p,
            p,
            len(levels_hits),
        )
        if verdict == "higher"
        else Test("improvement", s, "a", "b", seeds, 0.5, 0.5, 0.0, -0.1, 0.1, 0.0, 0.8, 0.9, 2)
        for s, verdict in levels_hits
        for p in [0.002]
    ]


def test_claim_verdicts_say_where_a_claim_holds() -> None:
    assert claim_verdict(_claim([(0, "higher"), (1, "higher")]), "higher") == (
        "reproduced at every level tested"
    )
    assert claim_verdict(_claim([(0, "tie"), (0.5, "higher"), (1, "higher")]), "higher") == (
        "reproduced only from s* = 0.5 on"
    )
    assert claim_verdict(_claim([(0, "higher"), (0.5, "higher"), (1, "tie")]), "higher") == (
        "reproduced only up to s = 0.5"
    )
    assert claim_verdict(_claim([(0, "higher"), (0.5, "tie"), (1, "higher")]), "higher") == (
        "reproduced at s = 0, 1 only"
    )
    partial = claim_verdict(_claim([(0, "higher")]), "higher", levels=[0, 0.5, 1])
    assert partial == "reproduced at every level tested (no finished runs yet at s = 0.5, 1)"
    # 5 seeds: the exact Wilcoxon p is at least 2 / 32 = 0.0625 > 0.05, whatever the data
    few = [
        Test("improvement", s, "a", "b", 5, 0.5, 0.9, 0.4, 0.3, 0.5, 5.0, 0.0625, 0.125, 2)
        for s in (0, 1)
    ]
    assert [t.verdict for t in few] == ["underpowered", "underpowered"]
    assert claim_verdict(few, "higher").startswith("cannot be decided with this many seeds")
