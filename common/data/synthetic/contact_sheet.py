"""Contact sheet of synthetic echo: one row per vendor, ED/ES frames with label outlines.

Every tile is drawn at the same physical scale (pixels per mm), so depth and sector differences
between vendors show as they are. Per case: ED, ES, then ED and ES with the label outlines
(LV red, MYO green, LA blue).

``python -m common.data.synthetic.contact_sheet --out docs/images/synthetic-contact-sheet.png``

With ``--shift 0,0.33,0.67,1`` each vendor gets one row per level of the shift-strength axis
(:mod:`common.data.synthetic.shift`): the same hearts, moved from site A's domain (s = 0) to the
vendor's own with the structure shift (s = 1).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from common.data.synthetic.generator import case_seed, render_case
from common.data.synthetic.knobs import SynthesisKnobs
from common.data.synthetic.shift import DomainShift
from common.data.synthetic.vendors import VENDORS, VendorProfile, get_vendor
from common.labels import Structure

_OUTLINE_RGB = {
    Structure.LV: (255, 60, 60),
    Structure.MYO: (60, 220, 60),
    Structure.LA: (70, 140, 255),
}
_PX_PER_MM = 0.8
_PAD = 4
_LABEL_W = 120
_HEADER_H = 16
_CAPTION_H = 12


def _physical(frame: np.ndarray, spacing: tuple[float, float], resample: int) -> Image.Image:
    """Resize a frame so that one pixel is ``1 / _PX_PER_MM`` mm in both directions."""
    h, w = frame.shape
    size = (max(round(w * spacing[1] * _PX_PER_MM), 1), max(round(h * spacing[0] * _PX_PER_MM), 1))
    return Image.fromarray(frame).resize(size, resample)


def outlined(gray: Image.Image, labels: Image.Image) -> Image.Image:
    """RGB copy of ``gray`` with one-pixel outlines of each labelled structure."""
    rgb = np.repeat(np.asarray(gray)[..., None], 3, axis=2).copy()
    lab = np.asarray(labels)
    for structure, colour in _OUTLINE_RGB.items():
        m = lab == int(structure)
        inner = m.copy()
        inner[1:-1, 1:-1] = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
        rgb[m & ~inner] = colour
    return Image.fromarray(rgb)


def save_contact_sheet(
    path: str | Path,
    vendors: Sequence[VendorProfile] | None = None,
    n_per_vendor: int = 3,
    seed: int = 0,
    size: tuple[int, int] | None = None,
    knobs: SynthesisKnobs | None = None,
    shifts: Sequence[float] | None = None,
    colours: int | None = None,
) -> Path:
    """Write the PNG contact sheet and return its path.

    vendors: rows (default: every built-in profile, U last). n_per_vendor: cases per row.
    shifts: shift strengths; each vendor then gets one row per strength (reference vendor A).
    colours: save with a palette of this many colours (a smaller PNG; gray + 3 outline colours
        need few).
    seed: site seed (case seeds as in :func:`common.data.synthetic.generator.generate_site`).
    size: render size ``(H, W)``; None = each vendor's natural export size.
    """
    vendors = list(vendors) if vendors is not None else list(VENDORS.values())
    if not vendors or n_per_vendor < 1:
        raise ValueError("need at least one vendor and one case per vendor")
    lines: list[tuple[VendorProfile, DomainShift | None]] = [
        (vendor, None if shifts is None else DomainShift(strength=s))
        for vendor in vendors
        for s in (shifts if shifts is not None else [None])
    ]
    rows: list[list[tuple[Image.Image, str]]] = []
    for vendor, shift in lines:
        tiles: list[tuple[Image.Image, str]] = []
        for i in range(n_per_vendor):
            case = render_case(
                vendor,
                seed=case_seed(seed, vendor.name, i),
                case_id=f"{vendor.name}{i}",
                size=size,
                knobs=knobs,
                shift=shift,
            )
            rec = case.recording
            caption = f"{rec.info['quality']} {rec.info['phenotype']} EF {rec.info['ef']}"
            grays = [
                _physical(rec.frames[k], rec.spacing_mm, Image.BILINEAR) for k in (rec.ed, rec.es)
            ]
            labs = [
                _physical(rec.labels[k], rec.spacing_mm, Image.NEAREST) for k in (rec.ed, rec.es)
            ]
            tiles += [(grays[0].convert("RGB"), f"ED {caption}"), (grays[1].convert("RGB"), "ES")]
            tiles += [
                (outlined(g, lab), phase)
                for g, lab, phase in zip(grays, labs, ("ED labels", "ES labels"), strict=True)
            ]
        rows.append(tiles)

    tile_w = max(t.width for row in rows for t, _ in row)
    row_h = [max(t.height for t, _ in row) for row in rows]
    n_cols = len(rows[0])
    width = _LABEL_W + n_cols * (tile_w + _PAD) + _PAD
    height = _HEADER_H + sum(h + _CAPTION_H + _PAD for h in row_h) + _PAD
    sheet = Image.new("RGB", (width, height), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    draw.text(
        (_PAD, 2),
        f"synthetic A4C, seed {seed}, {_PX_PER_MM:g} px/mm; outlines: LV red, MYO green, LA blue",
        fill=(220, 220, 220),
    )
    y = _HEADER_H
    for (vendor, shift), row, h in zip(lines, rows, row_h, strict=True):
        title = vendor.name if shift is None else f"{vendor.name}, shift s = {shift.strength:g}"
        about = vendor.description if shift is None else shift.vendor(vendor).description
        draw.text((_PAD, y + 2), title, fill=(255, 255, 255))
        _wrap(draw, about, (_PAD, y + 16), _LABEL_W - 2 * _PAD)
        for j, (tile, caption) in enumerate(row):
            x = _LABEL_W + j * (tile_w + _PAD) + (tile_w - tile.width) // 2
            sheet.paste(tile, (x, y + _CAPTION_H))
            draw.text((_LABEL_W + j * (tile_w + _PAD), y), caption, fill=(200, 200, 200))
        y += h + _CAPTION_H + _PAD
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if colours is not None:
        sheet = sheet.quantize(colours)
    sheet.save(out, optimize=True)
    return out


def _wrap(draw: ImageDraw.ImageDraw, text: str, xy: tuple[int, int], width_px: int) -> None:
    """Draw ``text`` word-wrapped into ``width_px`` (default bitmap font, ~6 px a character)."""
    per_line = max(width_px // 6, 8)
    line, y = "", xy[1]
    for word in text.split():
        if len(line) + len(word) + 1 > per_line:
            draw.text((xy[0], y), line, fill=(170, 170, 170))
            line, y = "", y + 11
        line = f"{line} {word}".strip()
    if line:
        draw.text((xy[0], y), line, fill=(170, 170, 170))


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write the contact sheet (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images/synthetic-contact-sheet.png"))
    parser.add_argument("--vendors", default=",".join(VENDORS), help="comma-separated names")
    parser.add_argument("--n", type=int, default=3, help="cases per vendor")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default=None, help="HxW render size (default: natural)")
    parser.add_argument("--difficulty", type=float, default=1.0)
    parser.add_argument("--shift", default=None, help="comma-separated strengths in [0, 1]")
    parser.add_argument("--colours", type=int, default=None, help="palette size (smaller PNG)")
    args = parser.parse_args(argv)
    size = None
    if args.size:
        h, w = (int(v) for v in args.size.lower().split("x"))
        size = (h, w)
    vendors = [get_vendor(n) for n in args.vendors.split(",") if n.strip()]
    shifts = None if args.shift is None else [float(v) for v in args.shift.split(",")]
    knobs = SynthesisKnobs(difficulty=args.difficulty)
    out = save_contact_sheet(
        args.out, vendors, args.n, args.seed, size, knobs, shifts, args.colours
    )
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
