"""Calibration knobs of the synthetic generator (validated once, passed as a typed object).

The defaults reproduce the vendor profiles as designed. Difficulty calibration against a
training run (same-vendor Dice near published real-data figures, not 0.98+) adjusts these,
without code changes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Phenotype = Literal["normal", "dilated", "hypertrophic", "infarct"]
PHENOTYPES: tuple[Phenotype, ...] = ("normal", "dilated", "hypertrophic", "infarct")

ADULT_PHENOTYPE_PROBS: dict[Phenotype, float] = {
    "normal": 0.60,
    "dilated": 0.14,
    "hypertrophic": 0.12,
    "infarct": 0.14,
}
PAEDIATRIC_PHENOTYPE_PROBS: dict[Phenotype, float] = {
    "normal": 0.85,
    "dilated": 0.10,
    "hypertrophic": 0.05,
    "infarct": 0.0,
}


class SynthesisKnobs(BaseModel):
    """What calibration may turn.

    difficulty: scales every acquisition artefact (near-field haze, wall dropout and its
        probability, shadows, cloudy blood, noise, gain/TGC errors, aberration blur). 0 leaves
        the clean physics (speckle, PSF, attenuation); 1 is the vendor design; up to 3.
    quality_probs: overrides every vendor's (good, medium, poor) probabilities.
    annotation_jitter_mm: standard deviation (mm) of the smooth, tracer-like displacement of the
        label contours (LV endocardium, epicardium, LA) relative to the rendered anatomy; 0 gives
        labels exactly equal to the rendered anatomy.
    flip_lr: mirror every frame and label map (LV on the image left): an orientation stress test,
        separate from the held-out vendor U.
    phenotype_probs: overrides the population's phenotype mix.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    difficulty: float = Field(1.0, ge=0.0, le=3.0)
    quality_probs: tuple[float, float, float] | None = None
    annotation_jitter_mm: float = Field(0.0, ge=0.0, le=5.0)
    flip_lr: bool = False
    phenotype_probs: dict[Phenotype, float] | None = None

    @model_validator(mode="after")
    def _check(self) -> SynthesisKnobs:
        if self.quality_probs is not None and (
            min(self.quality_probs) < 0 or abs(sum(self.quality_probs) - 1.0) > 1e-6
        ):
            raise ValueError(f"quality_probs {self.quality_probs} must be >= 0 and sum to 1")
        if self.phenotype_probs is not None:
            values = list(self.phenotype_probs.values())
            if min(values) < 0 or sum(values) <= 0:
                raise ValueError(f"phenotype_probs {self.phenotype_probs} must be >= 0, not all 0")
        return self
