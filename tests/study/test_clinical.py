"""The harness's clinical scores (simulations/clinical.py): contour distances in mm and the EF
error on native recordings, with a model whose output is known exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.labels import Structure
from common.measure.recording import measure
from common.model_card import ModelCard, card_meta
from common.predict import Recording
from common.recipe import Recipe
from simulations.clinical import clinical_scores
from tests.helpers import draw_labels

SIZE = 48
LEVEL = 60.0  # frame value per label: the frames encode their own label maps


class ReadsLabels(torch.nn.Module):
    """Logits that recover the label map from a frame written as ``label * LEVEL`` ("unit"
    normalisation), moved ``shift`` rows down: an exact, known segmentation."""

    def __init__(self, shift: int = 0) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = torch.arange(4, dtype=x.dtype).view(1, 4, 1, 1) * LEVEL / 255.0
        logits = -((x - levels) ** 2)
        return torch.roll(logits, self.shift, dims=2)


def card() -> ModelCard:
    recipe = Recipe.model_validate({"preprocess": {"size": [SIZE, SIZE], "normalisation": "unit"}})
    meta = card_meta(recipe)
    return ModelCard.model_validate({k: meta[k] for k in ("model", "preprocess", "labels")})


def recording(name: str, spacing: tuple[float, float] | None = (0.5, 0.5)) -> Recording:
    labels = np.stack([draw_labels((SIZE, SIZE), c) for c in (0.0, 1.0)])
    return Recording(
        name=name,
        frames=labels.astype(np.float32) * LEVEL,
        spacing_mm=spacing,
        ed=0,
        es=1,
        truth=labels,
        truth_structures=tuple(Structure),
    )


def test_a_perfect_segmentation_has_zero_distances_and_zero_ef_error() -> None:
    row = clinical_scores(ReadsLabels(), card(), [recording("a"), recording("b")])
    assert row == {
        **{f"{m}-{s.name}": 0.0 for s in Structure for m in ("hd95", "msd")},
        "ef-mae": 0.0,
        "ef-n": 2.0,
    }


def test_a_shifted_segmentation_is_scored_in_mm() -> None:
    """Every contour moved 2 rows (1 mm at 0.5 mm/px): HD95 is at most 1 mm and above 0; the EF
    error is that of the moved masks measured by the same method."""
    rec = recording("a")
    row = clinical_scores(ReadsLabels(shift=2), card(), [rec])
    for s in Structure:
        assert 0.0 < row[f"hd95-{s.name}"] <= 1.0 + 1e-6
        assert 0.0 < row[f"msd-{s.name}"] <= row[f"hd95-{s.name}"]
    moved = np.roll(rec.truth, 2, axis=1)  # type: ignore[arg-type]
    expected = abs(
        float(measure("m", moved, (0.5, 0.5), 0, 1)["ef_percent"])
        - float(measure("t", rec.truth, (0.5, 0.5), 0, 1)["ef_percent"])
    )
    assert row["ef-mae"] == pytest.approx(expected, abs=1e-3)


def test_without_spacing_there_is_no_ef_and_distances_are_in_pixels() -> None:
    row = clinical_scores(ReadsLabels(shift=2), card(), [recording("a", spacing=None)])
    assert "ef-mae" not in row and "ef-n" not in row
    assert 0.0 < row["hd95-LV"] <= 2.0 + 1e-6  # 2 pixels
