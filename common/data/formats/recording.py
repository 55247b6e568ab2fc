"""What a format *writer* takes: one acquisition with its full ground truth.

The synthetic generator produces :class:`Recording` objects; each format module writes them in
its native layout, keeping only the labels that format carries (CAMUS: all three structures on
ED/ES; EchoNet: the LV through 21-row tracings; HMC-QU: the myocardium on every frame; the folder
format: its declared labelled set). The complete label maps are stored beside the native tree in
one ``echofl-full-ground-truth.npz`` file (see :mod:`common.data.formats.full_ground_truth`), for
evaluation only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from common.data.sample import Split


@dataclass(frozen=True)
class Recording:
    """One echo acquisition (a short clip) of one case.

    frames: uint8 (T, H, W) B-mode intensities, 0 outside the imaging sector.
    labels: uint8 (T, H, W) full ground truth (0 bg, 1 LV, 2 MYO, 3 LA) for every frame.
    ed, es: indices into ``frames`` of end-diastole and end-systole.
    spacing_mm: (row, column) pixel size in millimetres.
    fps: frame rate of the clip.
    split: which split the case belongs to (writers record it in the format's own split files).
    info: scalar facts a format may store (``quality``, ``sex``, ``age``, ``ef``, ``vendor``,
        ``phenotype`` ...), all as strings.
    """

    case_id: str
    frames: np.ndarray
    labels: np.ndarray
    ed: int
    es: int
    spacing_mm: tuple[float, float]
    fps: float = 50.0
    view: str = "4CH"
    split: Split = "train"
    info: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.frames.ndim != 3 or self.frames.shape != self.labels.shape:
            raise ValueError(
                f"{self.case_id}: frames {self.frames.shape} and labels {self.labels.shape} "
                "must both be (T, H, W)"
            )
        if self.frames.dtype != np.uint8 or self.labels.dtype != np.uint8:
            raise ValueError(f"{self.case_id}: frames and labels must be uint8")
        n = self.frames.shape[0]
        if not (0 <= self.ed < n and 0 <= self.es < n) or self.ed == self.es:
            raise ValueError(f"{self.case_id}: ED {self.ed} / ES {self.es} invalid for {n} frames")
