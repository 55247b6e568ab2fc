"""Full ground truth kept beside a synthetic site's native tree, for evaluation only.

One file per site, ``<site root>/echofl-full-ground-truth.npz``; each array is a uint8 (H, W)
label map keyed by :func:`sample_key`. Real datasets have no such file and loaders then leave
``Sample.full_mask`` as None.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.errors import DataError

FILENAME = "echofl-full-ground-truth.npz"


def sample_key(case_id: str, view: str, phase: str | None, frame: int | None) -> str:
    """Key of one frame: ``<case>_<view>_<ED|ES>`` or ``<case>_<view>_f<frame>``."""
    if phase is not None:
        return f"{case_id}_{view}_{phase}"
    if frame is None:
        raise ValueError("a sample key needs a phase or a frame index")
    return f"{case_id}_{view}_f{frame}"


def write_full_ground_truth(root: Path, maps: dict[str, np.ndarray]) -> Path:
    """Write all of a site's full label maps at once (atomically: temp file then rename)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / FILENAME
    tmp = root / (FILENAME + ".tmp.npz")
    np.savez_compressed(tmp, **{k: np.asarray(v, dtype=np.uint8) for k, v in maps.items()})
    tmp.replace(path)
    return path


class FullGroundTruth:
    """Lazy reader; ``get(key)`` returns the map or None when the site has no full ground truth."""

    def __init__(self, root: Path) -> None:
        self.path = root / FILENAME
        self._data: dict[str, np.ndarray] | None = None

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    def get(self, key: str) -> np.ndarray | None:
        if not self.exists:
            return None
        if self._data is None:
            try:
                with np.load(self.path) as npz:
                    self._data = {k: npz[k] for k in npz.files}
            except Exception as exc:  # zip/npy errors come in many types
                raise DataError(self.path, f"unreadable full ground-truth file ({exc})") from exc
        if key not in self._data:
            raise DataError(self.path, f"no full ground truth for sample {key!r}")
        return self._data[key]
