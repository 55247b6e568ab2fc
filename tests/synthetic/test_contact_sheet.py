"""The contact sheet: one row per vendor, ED/ES tiles and outlined tiles at a common mm scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.data.synthetic import contact_sheet
from common.data.synthetic.vendors import VENDORS


def test_sheet_has_rows_columns_and_label_outlines(tmp_path: Path) -> None:
    out = contact_sheet.save_contact_sheet(
        tmp_path / "sheet.png", [VENDORS["E"], VENDORS["U"]], n_per_vendor=2, seed=3, size=(64, 64)
    )
    sheet = np.asarray(Image.open(out).convert("RGB"))
    # 2 cases x (ED, ES, ED outlined, ES outlined); the widest tile is U's 100° fan.
    depth_u = 155 * 1.15  # at most, after depth adjustment
    tile_w = (sheet.shape[1] - contact_sheet._LABEL_W - contact_sheet._PAD) / 8
    assert 2 * 155 * 0.96 * np.sin(np.radians(50)) * contact_sheet._PX_PER_MM <= tile_w
    assert tile_w <= 2 * depth_u * np.sin(np.radians(50)) * contact_sheet._PX_PER_MM + 8
    for colour in contact_sheet._OUTLINE_RGB.values():
        hits = np.all(sheet == np.array(colour, np.uint8), axis=2).sum()
        assert hits > 100, colour  # LV, MYO and LA outlined in 8 tiles


def test_cli_writes_the_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "docs" / "sheet.png"
    assert (
        contact_sheet.main(["--out", str(out), "--vendors", "B", "--n", "1", "--size", "48x48"])
        == 0
    )
    assert out.is_file() and out.stat().st_size > 1000
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(ValueError, match="known vendors"):
        contact_sheet.main(["--out", str(out), "--vendors", "Q"])
