"""The shift-strength axis: one number s in [0, 1] that moves a site away from a reference domain.

At ``s = 0`` a shifted site images its hearts exactly as the reference vendor (site A's, by
default) does: same physics, display, export and the same way the heart is framed. At ``s = 1``
it differs from the reference in both ways real datasets differ (CAMUS vs EchoNet-Dynamic vs
HMC-QU):

- **acquisition and look**: every numeric setting of the vendor profile (frequency, PSF, TGC,
  noise, gain, dynamic range, gray map, artefact rates, export size and compression, quality
  mix) moves linearly from the reference profile to the site's own vendor profile; the discrete
  ones (harmonic imaging, gray-map kind, lossless or JPEG export) switch at s = 0.5;
- **how the structures appear**: the sonographer zooms in (a shallower depth, so the heart fills
  more of the fan), narrows the sector, keeps less of the LA in view (at s = 1 only the 45 % of
  its length nearest the mitral valve is kept inside the fan; the rest falls below it, as in
  many EchoNet-Dynamic views), foreshortens the LV (a shorter long axis, the apex cut obliquely)
  and sees a population with more dilated hearts.

A case's seed draws the same heart at every level and only the shift is applied to it, so a
study across levels is paired by case, with two exceptions: a case whose phenotype the
population shift changes is a different heart, and a paediatric vendor (E) against an adult
reference switches population at s = 0.5, which redraws every case's age and size.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.data.synthetic.anatomy import HeartParams
from common.data.synthetic.knobs import Phenotype
from common.data.synthetic.vendors import VendorName, VendorProfile, get_vendor

# The structure shift at s = 1 (linear in s in between).
ZOOM_DEPTH = 0.75  # imaging depth factor: the heart fills more of the fan
SECTOR = 0.92  # sector opening factor
EDGE_MARGIN_DEG = -6.0  # how far inside the fan's edges the framing keeps the epicardium and LA
#   (2.5 degrees at s = 0; negative: the fan cuts the walls instead of the heart being shrunk)
LA_IN_VIEW = 0.45  # fraction of the LA's length (from the mitral valve) kept inside the fan
LV_LENGTH = 0.80  # foreshortened long axis
DILATED_SHARE = 0.45  # share of dilated hearts in the population (adult default 0.14)
_DISCRETE_SWITCH = 0.5
_MARGIN_DEG = 2.5  # fit_to_sector's default


class DomainShift(BaseModel):
    """Where a site sits on the shift axis: ``strength`` s from ``reference``'s domain (0) to
    its own vendor with the full structure shift (1)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strength: float = Field(ge=0.0, le=1.0)
    reference: VendorName = "A"

    @model_validator(mode="before")
    @classmethod
    def _number(cls, data: Any) -> Any:
        """``shift = 0.5`` in a config means ``shift = { strength = 0.5 }``."""
        if isinstance(data, int | float) and not isinstance(data, bool):
            return {"strength": data}
        return data

    @property
    def depth_factor(self) -> float:
        return 1.0 + (ZOOM_DEPTH - 1.0) * self.strength

    @property
    def sector_factor(self) -> float:
        return 1.0 + (SECTOR - 1.0) * self.strength

    @property
    def edge_margin_deg(self) -> float:
        return _MARGIN_DEG + (EDGE_MARGIN_DEG - _MARGIN_DEG) * self.strength

    @property
    def la_in_view(self) -> float:
        """Fraction of the LA's extent (depth from its top) the framing keeps inside the fan."""
        return 1.0 + (LA_IN_VIEW - 1.0) * self.strength

    @property
    def lv_length_factor(self) -> float:
        return 1.0 + (LV_LENGTH - 1.0) * self.strength

    def phenotype_probs(self, base: dict[Phenotype, float]) -> dict[Phenotype, float]:
        """``base`` with the dilated share moved towards :data:`DILATED_SHARE` (the others scaled
        to keep their ratios)."""
        dilated = base.get("dilated", 0.0)
        target = dilated + (DILATED_SHARE - dilated) * self.strength
        rest = 1.0 - dilated
        scale = (1.0 - target) / rest if rest > 0 else 0.0
        return {k: (target if k == "dilated" else v * scale) for k, v in base.items()}

    def vendor(self, own: VendorProfile) -> VendorProfile:
        """The acquisition of a site with vendor ``own`` at this strength (see the module doc);
        it keeps ``own``'s name (the case seeds, hence the hearts, stay the same at every s)."""
        ref = get_vendor(self.reference)
        s = self.strength
        values: dict[str, Any] = {}
        for name in VendorProfile.model_fields:
            a, b = getattr(ref, name), getattr(own, name)
            values[name] = _blend(a, b, s)
        values["name"] = own.name
        values["population"] = own.population if s >= _DISCRETE_SWITCH else ref.population
        values["default_labelled"] = own.default_labelled
        values["description"] = f"{own.name} at shift {s:g} from {ref.name}"
        return VendorProfile.model_validate(values)

    def heart(self, params: HeartParams) -> HeartParams:
        """The same heart, foreshortened by :attr:`lv_length_factor`."""
        if self.strength == 0:
            return params
        return dataclasses.replace(params, lv_length=params.lv_length * self.lv_length_factor)


def _blend(a: Any, b: Any, s: float) -> Any:
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str | frozenset):
        return b if s >= _DISCRETE_SWITCH else a
    if a is None or b is None:  # jpeg_quality: None = lossless
        return b if s >= _DISCRETE_SWITCH else a
    if isinstance(a, tuple):
        blended = tuple(_blend(x, y, s) for x, y in zip(a, b, strict=True))
        if all(isinstance(x, float) for x in blended):  # a probability vector: keep the sum
            total = sum(blended)
            blended = tuple(x / total for x in blended)
        return blended
    if isinstance(a, int) and isinstance(b, int):
        return round(a + (b - a) * s)
    return float(a + (b - a) * s)


def site_dump(site: BaseModel) -> dict[str, Any]:
    """A site config's JSON dump for hashing, without ``shift`` when it is None: the hashes (of
    generated sites, of runs) of configs written before the shift axis existed stay the same."""
    dumped = site.model_dump(mode="json")
    if dumped.get("shift", 0) is None:
        del dumped["shift"]
    return dumped
