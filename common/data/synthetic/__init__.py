"""Synthetic multi-vendor apical four-chamber echo (no real data can be downloaded).

Public entry points::

    from common.data.synthetic import get_vendor, generate_recording, generate_site, SynthesisKnobs

    rec = generate_recording(get_vendor("A"), seed=0, case_id="case0001", size=(128, 128))

Modules, one concern each: :mod:`.vendors` (scanner profiles A-E and the held-out U),
:mod:`.knobs` (calibration knobs), :mod:`.anatomy` (A4C heart in mm over the cycle),
:mod:`.tissue` (echogenicity), :mod:`.quality` (image-quality strata and artefacts),
:mod:`.geometry` (fan, beam grid, scan conversion maps), :mod:`.acoustics` (scatterer model,
PSF, TGC, log compression, export), :mod:`.annotation` (label maps, tracer-style labels),
:mod:`.generator` (recordings and sites), :mod:`.contact_sheet` (the PNG overview).
"""

from common.data.synthetic.generator import (
    SyntheticCase,
    case_seed,
    generate_recording,
    generate_site,
    render_case,
)
from common.data.synthetic.knobs import SynthesisKnobs
from common.data.synthetic.vendors import VENDORS, VendorProfile, get_vendor

__all__ = [
    "VENDORS",
    "SynthesisKnobs",
    "SyntheticCase",
    "VendorProfile",
    "case_seed",
    "generate_recording",
    "generate_site",
    "get_vendor",
    "render_case",
]
