"""The shift-strength axis (common.data.synthetic.shift) and its measured index
(simulations.shift_index)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from common.data.synthetic.anatomy import heart_at
from common.data.synthetic.federation import SyntheticSiteConfig, settings_hash
from common.data.synthetic.generator import case_seed, render_case
from common.data.synthetic.knobs import SynthesisKnobs
from common.data.synthetic.shift import DomainShift
from common.data.synthetic.vendors import get_vendor
from common.labels import Structure
from simulations.experiment import ExperimentSite
from simulations.shift_index import (
    CalibrationSettings,
    domain_accuracy,
    generate,
    level_site,
    load,
)


def test_at_zero_a_site_images_exactly_as_the_reference_vendor() -> None:
    seed = case_seed(4, "B", 0)
    shifted = render_case(get_vendor("B"), seed=seed, case_id="x", shift=DomainShift(strength=0))
    reference = render_case(get_vendor("A"), seed=seed, case_id="x")
    assert np.array_equal(shifted.recording.frames, reference.recording.frames)
    assert np.array_equal(shifted.recording.labels, reference.recording.labels)
    assert shifted.recording.info["shift"] == "0 from A"


def test_the_vendor_moves_linearly_and_discrete_settings_switch_at_half() -> None:
    a, b = get_vendor("A"), get_vendor("B")
    half = DomainShift(strength=0.5).vendor(b)
    assert half.gain_db == pytest.approx((a.gain_db + b.gain_db) / 2)  # 0 and 3 dB
    assert half.export_size == (216, 184)  # (320, 256) to (112, 112)
    assert half.jpeg_quality == 75 and DomainShift(strength=0.49).vendor(b).jpeg_quality is None
    assert sum(half.quality_probs) == pytest.approx(1.0)
    assert half.name == "B" and half.default_labelled == b.default_labelled
    full = DomainShift(strength=1).vendor(b)
    same = {"description"}
    assert {k for k in type(b).model_fields if getattr(full, k) != getattr(b, k)} <= same


def test_the_structures_change_monotonically_with_strength() -> None:
    """The heart fills more of the image (zoom), less of the LA is in the fan, the LV is shorter;
    exact on 10 cases of vendor B rendered small."""
    levels = (0.0, 0.5, 1.0)
    heart_share, la_cut, lv_length = [], [], []
    for s in levels:
        shares, cuts, lengths = [], [], []
        for i in range(10):
            case = render_case(
                get_vendor("B"),
                seed=case_seed(2, "B", i),
                case_id="x",
                size=(64, 64),
                shift=DomainShift(strength=s),
            )
            labels = case.recording.labels[case.recording.ed]
            shares.append(float((labels > 0).mean()))
            la = heart_at(case.params, 0.0, 0.0).la
            cuts.append(float((np.hypot(la[:, 0], la[:, 1]) > case.geometry.depth_mm).mean()))
            lengths.append((case.params.phenotype, case.params.lv_length))
        heart_share.append(np.mean(shares))
        la_cut.append(np.mean(cuts))
        lv_length.append(lengths)
    assert heart_share[0] < heart_share[1] < heart_share[2]
    assert la_cut[0] == 0.0 < la_cut[1] < la_cut[2]
    # the same heart, foreshortened (a case whose phenotype the population shift changed is a
    # different heart)
    same = [(a, b) for a, b in zip(lv_length[0], lv_length[2], strict=True) if a[0] == b[0]]
    assert len(same) >= 6
    assert all(b[1] == pytest.approx(0.8 * a[1]) for a, b in same)
    # LA labels stay inside the fan, so a cut LA is smaller in the labels, not drawn off-image
    case = render_case(get_vendor("B"), seed=case_seed(2, "B", 0), case_id="x", size=(64, 64))
    assert (case.recording.labels == int(Structure.LA)).any()


def test_no_shift_keeps_the_hashes_of_sites_and_runs_written_before_the_axis() -> None:
    """Generated sites and resumable runs are keyed by hashes of their settings: a config with
    no shift hashes as it did before the field existed (pinned value)."""
    site = SyntheticSiteConfig(name="B", vendor="B", format="echonet-dynamic", cases=12)
    assert settings_hash(site, 3, SynthesisKnobs()) == "35e4ae2a8aca96858596"
    shifted = SyntheticSiteConfig(
        name="B", vendor="B", format="echonet-dynamic", cases=12, shift=0.0
    )
    assert settings_hash(shifted, 3, SynthesisKnobs()) != "35e4ae2a8aca96858596"


def test_shift_settings_are_checked_with_clear_errors() -> None:
    assert SyntheticSiteConfig(name="B", vendor="B", format="folder", cases=4, shift=0.5).shift
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        SyntheticSiteConfig(name="B", vendor="B", format="folder", cases=4, shift=1.5)
    with pytest.raises(ValidationError, match="unknown synthetic vendor 'Q'"):
        DomainShift(strength=0.5, reference="Q")
    with pytest.raises(ValidationError, match="setting of synthetic sites only"):
        ExperimentSite(name="R", format="folder", root=Path("/data/x"), shift=0.5)


def test_the_domain_classifier_index_rises_with_strength(tmp_path: Path) -> None:
    """On tiny settings (24 cases a domain, 48 px) the measured index is monotone in s and near
    chance at s = 0 (deterministic for the seed)."""
    settings = CalibrationSettings(
        levels=[0.0, 0.5, 1.0],
        vendors=["B"],
        reference_cases=24,
        shifted_cases=24,
        size=(48, 48),
        render_size=(64, 64),
        classifier_steps=200,
        workers=1,
        data_dir=tmp_path / "data",
        cache_dir=tmp_path / "cache",
    )
    sites = load(generate(settings), settings)
    accuracy = [
        domain_accuracy(sites["ref"], sites[level_site("B", s)], seed=0, steps=200)
        for s in settings.levels
    ]
    assert accuracy[0] < 0.65, accuracy
    assert accuracy[0] < accuracy[1] < accuracy[2], accuracy
    assert accuracy[2] > 0.85, accuracy
