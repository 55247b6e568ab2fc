"""Paired statistics and condition roles of the study, on hand-made numbers."""

import math

import pytest
from scipy import stats

from simulations.experiment import Condition
from simulations.study import Cell, annotated_cells, compare, paired, roles, unannotated_cells


def test_paired_difference_ci_and_verdicts() -> None:
    a, b = [0.50, 0.60, 0.55], [0.70, 0.75, 0.80]
    p = paired(a, b)
    diffs = [0.20, 0.15, 0.25]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    assert p.mean_diff == pytest.approx(0.20)
    assert (p.ci_low, p.ci_high) == pytest.approx((mean - half, mean + half))
    assert p.relative == pytest.approx(0.75 / 0.55 - 1)
    assert p.verdict == "better"
    assert paired(b, a).verdict == "worse"
    assert paired([0.5, 0.6, 0.7], [0.6, 0.5, 0.72]).verdict == "tie"
    assert paired([0.5], [0.9]).verdict == "n/a (1 seed)"


def test_compare_pairs_by_seed_and_averages_cells() -> None:
    results = [
        {"condition": "base", "seed": 0, "test": {"B": {"MYO": 0.2, "LA": 0.4}}},
        {"condition": "base", "seed": 1, "test": {"B": {"MYO": 0.3, "LA": 0.5}}},
        {"condition": "ld", "seed": 1, "test": {"B": {"MYO": 0.6, "LA": 0.6}}},
        {"condition": "ld", "seed": 2, "test": {"B": {"MYO": 0.9, "LA": 0.9}}},
    ]
    p = compare(results, "base", "ld", [Cell("B", "MYO"), Cell("B", "LA")])
    assert p is not None and p.seeds == 1  # only seed 1 is in both
    assert p.mean_a == pytest.approx(0.4) and p.mean_b == pytest.approx(0.6)


def test_cells_and_roles() -> None:
    labelled = {"A": {"LV", "MYO", "LA"}, "B": {"LV"}, "C": {"MYO"}}
    cells = unannotated_cells(labelled, ["A", "B", "C"], ["U"])
    assert cells == [Cell("B", "MYO"), Cell("B", "LA"), Cell("C", "LV"), Cell("C", "LA")]
    assert len(annotated_cells(labelled, ["A", "B", "C"])) == 5
    conditions = [
        Condition(name="ad", kind="federated"),
        Condition(name="ld5", kind="federated", recipe={"label_dropout": {"p": 0.5}}),
        Condition(name="ld2", kind="federated", recipe={"label_dropout": {"p": 0.25}}),
        Condition(
            name="prox",
            kind="federated",
            recipe={"aggregation": {"strategy": "fedprox"}, "label_dropout": {"p": 0.5}},
        ),
        Condition(name="up", kind="federated", labels="full"),
        Condition(name="cen", kind="centralised"),
        Condition(name="cen-ld", kind="centralised", recipe={"label_dropout": {"p": 0.5}}),
        Condition(name="naive", kind="federated", recipe={"loss": {"name": "naive"}}),
        Condition(name="loc", kind="local"),
    ]
    r = roles(conditions)
    assert (r.adaptive, r.upper, r.naive, r.central, r.local) == ("ad", "up", "naive", "cen", "loc")
    assert r.dropout == [(0.25, "ld2"), (0.5, "ld5")]
    assert r.fedprox_dropout == [(0.5, "prox")] and r.central_dropout == [(0.5, "cen-ld")]
