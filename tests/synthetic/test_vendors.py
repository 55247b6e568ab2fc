"""Vendor profiles: the design table of docs/echo-data.md, validation, lookup, the held-out U."""

from __future__ import annotations

import pydantic
import pytest

from common.data.synthetic.vendors import (
    TRAINING_VENDORS,
    UNSEEN_VENDOR,
    VENDORS,
    VendorProfile,
    get_vendor,
)
from common.labels import Structure

# (sector deg, depth mm, MHz, axial mm, lat0 mm, lat slope, DR dB, gain dB, gamma, TGC,
#  haze, smoothing px, dropout prob, shadow prob) from the table in docs/echo-data.md
TABLE = {
    "A": (80, 150, 2.5, 0.35, 0.8, 0.012, 55, 0, 1.0, 0.95, 0.15, 0.0, 0.3, 0.10),
    "B": (90, 160, 2.0, 0.45, 1.0, 0.015, 60, 3, 0.8, 0.90, 0.25, 0.6, 0.4, 0.15),
    "C": (75, 140, 3.0, 0.30, 0.7, 0.010, 50, -3, 1.2, 1.00, 0.10, 0.3, 0.2, 0.10),
    "D": (70, 170, 2.0, 0.60, 1.5, 0.022, 45, 5, 1.0, 0.80, 0.45, 1.2, 0.6, 0.30),
    "E": (85, 90, 4.0, 0.25, 0.5, 0.010, 55, 0, 1.0, 0.95, 0.10, 0.3, 0.2, 0.05),
}
FIELDS = (
    "sector_deg",
    "depth_mm",
    "frequency_mhz",
    "axial_psf_mm",
    "lateral_psf0_mm",
    "lateral_psf_slope",
    "dynamic_range_db",
    "gain_db",
    "gamma",
    "tgc_compensation",
    "haze",
    "smoothing_px",
    "wall_dropout_prob",
    "shadow_prob",
)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_profiles_follow_the_design_table(name: str) -> None:
    vendor = VENDORS[name]
    for field, expected in zip(FIELDS, TABLE[name], strict=True):
        assert getattr(vendor, field) == pytest.approx(expected), f"{name}.{field}"


def test_natural_export_sizes_and_labelled_sets() -> None:
    assert VENDORS["B"].export_size == (112, 112)
    assert VENDORS["E"].export_size == (112, 112)
    assert VENDORS["C"].export_size == (224, 224)
    assert VENDORS["D"].export_size == (256, 256)
    assert VENDORS["A"].default_labelled == frozenset(Structure)
    assert VENDORS["B"].default_labelled == frozenset({Structure.LV})
    assert VENDORS["C"].default_labelled == frozenset({Structure.MYO})
    assert VENDORS["D"].default_labelled == frozenset({Structure.LV, Structure.LA})
    assert VENDORS["E"].population == "paediatric"


def test_lateral_psf_grows_linearly_with_depth() -> None:
    a = VENDORS["A"]
    assert a.lateral_psf_mm(0.0) == pytest.approx(0.8)
    assert a.lateral_psf_mm(100.0) == pytest.approx(0.8 + 1.2)


def test_unseen_vendor_differs_in_physics_not_only_settings() -> None:
    u = VENDORS[UNSEEN_VENDOR]
    train = [VENDORS[n] for n in TRAINING_VENDORS]
    assert set(VENDORS) == {*TRAINING_VENDORS, UNSEEN_VENDOR}
    assert u.harmonic and not any(v.harmonic for v in train)
    assert u.compounding_looks >= 2 and all(v.compounding_looks == 1 for v in train)
    assert u.speckle_reduction > 0 and all(v.speckle_reduction == 0 for v in train)
    assert u.gray_map == "sigmoid" and all(v.gray_map == "gamma" for v in train)
    assert u.sector_deg > max(v.sector_deg for v in train)
    assert u.tgc_compensation > 1.0  # over-compensated: brighter far field
    # Harmonic echoes attenuate at the mean of f and 2f.
    assert u.attenuation_mhz == pytest.approx(1.5 * u.frequency_mhz)


def test_get_vendor_is_case_insensitive_and_lists_names_on_error() -> None:
    assert get_vendor("a") is VENDORS["A"]
    assert get_vendor(" U ") is VENDORS["U"]
    with pytest.raises(ValueError, match="A, B, C, D, E, U"):
        get_vendor("Z")


def test_profile_is_frozen_and_forbids_unknown_fields() -> None:
    a = VENDORS["A"]
    with pytest.raises(pydantic.ValidationError):
        a.depth_mm = 10.0  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="extra"):
        VendorProfile(**{**a.model_dump(), "colour_doppler": True})
    with pytest.raises(pydantic.ValidationError, match="sum"):
        a.model_copy(update={}).model_validate({**a.model_dump(), "quality_probs": (0.5, 0.5, 0.5)})
    with pytest.raises(pydantic.ValidationError):
        VendorProfile.model_validate({**a.model_dump(), "sector_deg": 5.0})
