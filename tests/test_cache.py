"""Preprocessing cache: built once, read back identically, rebuilt when the data change."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from common.config import SiteSpec
from common.data.cache import load_site_cached
from common.data.formats import write_site
from common.data.preprocess import PreprocessConfig, resize_labels
from common.errors import ConfigError
from common.labels import Structure
from tests.helpers import build_recording, draw_labels


@pytest.fixture
def folder_site(tmp_path: Path) -> Path:
    recordings = [
        build_recording(f"case{i}", shape=(64, 48), split=s, seed=i)
        for i, s in enumerate(["train", "train", "val", "test"])
    ]
    return write_site("folder", tmp_path / "site", recordings, labelled=["LV", "MYO", "LA"])


def test_first_load_builds_later_loads_read(folder_site: Path, tmp_path: Path) -> None:
    spec = SiteSpec(name="S", format="folder", root=folder_site)
    pre = PreprocessConfig(size=(32, 32))
    first = load_site_cached(spec, pre, tmp_path / "cache")
    folders = list((tmp_path / "cache" / "S").iterdir())
    assert len(folders) == 1
    manifest = json.loads((folders[0] / "manifest.json").read_text())
    assert manifest["samples"] == len(first) == 8  # 4 cases x ED/ES
    stamp = (folders[0] / "images.npy").stat().st_mtime_ns
    second = load_site_cached(spec, pre, tmp_path / "cache")
    assert (folders[0] / "images.npy").stat().st_mtime_ns == stamp  # read, not rebuilt
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.masks, second.masks)
    assert first.records == second.records
    assert first.images.shape == (8, 32, 32) and first.images.dtype == np.float32
    # z-scored per image
    np.testing.assert_allclose(first.images.mean(axis=(1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(first.images.std(axis=(1, 2)), 1, atol=1e-3)
    assert [len(first.split(s)) for s in ("train", "val", "test")] == [4, 2, 2]
    assert first.labelled_set == frozenset(Structure)


def test_changed_data_or_settings_rebuild(folder_site: Path, tmp_path: Path) -> None:
    spec = SiteSpec(name="S", format="folder", root=folder_site)
    a = load_site_cached(spec, PreprocessConfig(size=(32, 32)), tmp_path / "cache")
    b = load_site_cached(spec, PreprocessConfig(size=(48, 32)), tmp_path / "cache")
    assert b.images.shape[1:] == (48, 32)
    mask_file = sorted((folder_site / "masks").iterdir())[0]
    os.utime(mask_file, ns=(1, 1))
    c = load_site_cached(spec, PreprocessConfig(size=(32, 32)), tmp_path / "cache")
    np.testing.assert_array_equal(a.masks, c.masks)
    assert len(list((tmp_path / "cache" / "S").iterdir())) == 1  # stale keys pruned


def test_restricting_the_labelled_set(folder_site: Path, tmp_path: Path) -> None:
    spec = SiteSpec(name="S", format="folder", root=folder_site, labelled=["LV"])
    data = load_site_cached(spec, PreprocessConfig(size=(32, 32)), tmp_path / "cache")
    assert set(np.unique(data.masks)) == {0, 1}
    assert data.labelled[:, 1].all() and not data.labelled[:, 2:].any()
    assert data.labelled_set == {Structure.LV}
    assert data.full_masks is not None and set(np.unique(data.full_masks)) == {0, 1, 2, 3}


def test_asking_for_a_structure_the_data_lack(tmp_path: Path) -> None:
    rec = [build_recording("c0", shape=(32, 32))]
    root = write_site("folder", tmp_path / "lv", rec, labelled=["LV"])
    spec = SiteSpec(name="S", format="folder", root=root, labelled=["LV", "LA"])
    with pytest.raises(ConfigError, match=r"annotate only \{LV\}"):
        load_site_cached(spec, PreprocessConfig(size=(32, 32)), tmp_path / "cache")


def test_label_resize_round_trip_and_areas() -> None:
    labels = draw_labels((64, 48), 0.5)
    up = resize_labels(labels, (128, 96))
    np.testing.assert_array_equal(resize_labels(up, (64, 48)), labels)
    for c in (1, 2, 3):  # 2x up keeps each area fraction exactly
        assert (up == c).mean() == pytest.approx((labels == c).mean())
    big = draw_labels((256, 256), 0.3)
    small = resize_labels(big, (64, 64))
    assert small.dtype == np.uint8 and set(np.unique(small)) == {0, 1, 2, 3}
    for c in (1, 2, 3):  # 4x down keeps area fractions within 2%
        assert (small == c).mean() == pytest.approx((big == c).mean(), rel=0.02)
