"""Image-quality strata and the difficulty knob."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest

from common.data.synthetic.knobs import SynthesisKnobs
from common.data.synthetic.quality import Artefacts, sample_artefacts, sample_quality
from common.data.synthetic.vendors import VENDORS


def _draw(vendor: str, quality: str, difficulty: float, n: int = 300) -> list[Artefacts]:
    rng = np.random.default_rng(0)
    knobs = SynthesisKnobs(difficulty=difficulty)
    return [sample_artefacts(rng, VENDORS[vendor], quality, knobs) for _ in range(n)]  # type: ignore[arg-type]


def test_quality_strata_follow_the_vendor_probabilities() -> None:
    rng = np.random.default_rng(1)
    for name in ("A", "D"):
        draws = [sample_quality(rng, VENDORS[name], SynthesisKnobs()) for _ in range(4000)]
        freq = [draws.count(q) / len(draws) for q in ("good", "medium", "poor")]
        assert freq == pytest.approx(VENDORS[name].quality_probs, abs=0.03)
    forced = SynthesisKnobs(quality_probs=(0.0, 0.0, 1.0))
    assert {sample_quality(rng, VENDORS["E"], forced) for _ in range(50)} == {"poor"}


def test_poor_cases_have_stronger_artefacts_than_good_ones() -> None:
    good, poor = _draw("A", "good", 1.0), _draw("A", "poor", 1.0)

    def mean(arts: list[Artefacts], f) -> float:
        return float(np.mean([f(a) for a in arts]))

    assert mean(poor, lambda a: a.haze) > 2.5 * mean(good, lambda a: a.haze)
    assert mean(poor, lambda a: a.dropout_db > 0) > 2.0 * mean(good, lambda a: a.dropout_db > 0)
    assert mean(poor, lambda a: len(a.shadows)) > 2.0 * mean(good, lambda a: len(a.shadows))
    assert mean(poor, lambda a: a.blood_shift_db) > 4.0 * mean(good, lambda a: a.blood_shift_db)
    assert mean(poor, lambda a: a.lateral_blur) > mean(good, lambda a: a.lateral_blur)
    assert mean(poor, lambda a: a.noise_offset_db) > mean(good, lambda a: a.noise_offset_db) + 6


def test_vendor_prevalences_show_through() -> None:
    # Handheld D: dropout in 0.6 and shadows in 0.3 of medium cases; C: 0.2 and 0.1.
    d, c = _draw("D", "medium", 1.0, 1000), _draw("C", "medium", 1.0, 1000)
    assert np.mean([a.dropout_db > 0 for a in d]) == pytest.approx(0.6, abs=0.05)
    assert np.mean([a.dropout_db > 0 for a in c]) == pytest.approx(0.2, abs=0.05)
    rib = [[s for s in a.shadows if not s.pleura] for a in d]
    assert np.mean([len(s) > 0 for s in rib]) == pytest.approx(0.3, abs=0.05)


def test_difficulty_zero_leaves_clean_physics_and_two_is_harder() -> None:
    clean = _draw("D", "poor", 0.0)
    assert all(a.haze == 0 and a.dropout_db == 0 and not a.shadows for a in clean)
    assert all(a.blood_shift_db == 0 and a.orientation_db == 0 for a in clean)
    one, two = _draw("B", "medium", 1.0), _draw("B", "medium", 2.0)
    assert np.mean([a.haze for a in two]) == pytest.approx(
        2 * np.mean([a.haze for a in one]), rel=0.15
    )
    assert np.mean([len(a.shadows) for a in two]) > 1.5 * np.mean([len(a.shadows) for a in one])


def test_knobs_are_validated() -> None:
    with pytest.raises(pydantic.ValidationError, match="sum to 1"):
        SynthesisKnobs(quality_probs=(0.5, 0.2, 0.2))
    with pytest.raises(pydantic.ValidationError):
        SynthesisKnobs(difficulty=-1)
    with pytest.raises(pydantic.ValidationError, match="extra"):
        SynthesisKnobs(realism=11)  # type: ignore[call-arg]
