"""The format registry: every format through write_site -> load_site, and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.data.formats import FORMATS, load_site, write_site
from common.errors import DataError
from common.labels import Structure

from .conftest import MakeRecording

# format -> (writer options, loader options, recording frame size, samples per recording)
CASES = {
    "camus-nifti": ({}, {"use_half_sequence": True}, (40, 32), 3),
    "camus-mhd": ({}, {"fold": 2}, (40, 32), 2),
    "echonet-dynamic": ({}, {}, (112, 112), 2),
    "hmc-qu": ({"video_size": (256, 240)}, {"frame_stride": 2}, (224, 224), 2),
    "folder": ({"labelled": ["LV", "LA"]}, {}, (40, 32), 2),
}
LABELLED = {
    "camus-nifti": {Structure.LV, Structure.MYO, Structure.LA},
    "camus-mhd": {Structure.LV, Structure.MYO, Structure.LA},
    "echonet-dynamic": {Structure.LV},
    "hmc-qu": {Structure.MYO},
    "folder": {Structure.LV, Structure.LA},
}


def test_registry_names() -> None:
    assert list(FORMATS) == ["camus-nifti", "camus-mhd", "echonet-dynamic", "hmc-qu", "folder"]
    assert set(CASES) == set(FORMATS)
    for name, module in FORMATS.items():
        assert name == module.FORMAT_NAME
        assert callable(module.load) and callable(module.write)


@pytest.mark.parametrize("name", list(CASES))
def test_write_then_load_every_format(
    name: str, tmp_path: Path, make_recording: MakeRecording
) -> None:
    write_options, load_options, shape, per_recording = CASES[name]
    recs = [
        make_recording(f"case{i}", shape=shape, n_frames=3, ed=0, es=2, split=s, seed=i)
        for i, s in enumerate(("train", "test"))
    ]
    root = write_site(name, tmp_path / name, recs, **write_options)
    assert root == tmp_path / name
    assert (root / "echofl-full-ground-truth.npz").is_file()
    samples = load_site(name, root, site=f"site-{name}", **load_options)
    assert len(samples) == per_recording * len(recs)
    for s in samples:
        assert s.meta.site == f"site-{name}"
        assert s.labelled == LABELLED[name]
        assert s.full_mask is not None
        kept = np.isin(s.full_mask, [int(x) for x in s.labelled])
        if name == "echonet-dynamic":  # tracing round trip: close, not equal
            overlap = (s.mask == Structure.LV) & (s.full_mask == Structure.LV)
            assert 2 * overlap.sum() / ((s.mask > 0).sum() + (s.full_mask == 1).sum()) > 0.9
        else:
            np.testing.assert_array_equal(s.mask, np.where(kept, s.full_mask, 0))


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match=r"unknown dataset format 'camus'.*camus-nifti, camus-mhd"):
        load_site("camus", "/nowhere", site="s")
    with pytest.raises(ValueError, match="unknown dataset format"):
        write_site("dicom", "/nowhere", [])


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"absent: site root does not exist"):
        load_site("folder", tmp_path / "absent", site="s")


def test_empty_site(tmp_path: Path) -> None:
    (tmp_path / "manifest.toml").write_text('format_version = 1\nlabelled = ["LV"]\n')
    (tmp_path / "index.csv").write_text("case_id,image,mask\n")
    with pytest.raises(DataError, match=r"empty site: no annotated frames found under"):
        load_site("folder", tmp_path, site="s")
    (tmp_path / "database_nifti").mkdir()
    with pytest.raises(DataError, match=r"empty site"):
        load_site("camus-nifti", tmp_path, site="s")


def test_fixed_labelled_set_formats_refuse_another(
    tmp_path: Path, make_recording: MakeRecording
) -> None:
    rec = make_recording("c", shape=(112, 112))
    with pytest.raises(ValueError, match=r"echonet-dynamic carries only \{LV\}"):
        write_site("echonet-dynamic", tmp_path, [rec], labelled=["LV", "MYO"])
    assert write_site("echonet-dynamic", tmp_path, [rec], labelled=["LV"]) == tmp_path
