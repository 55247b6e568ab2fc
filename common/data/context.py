"""What the network sees besides the frame it segments: nothing, or the recording's partner frame.

With ``context = "partner"`` the U-Net's input has two channels: the frame to segment and the
frame of the same recording (same case and view) that differs most from it, the mean squared
difference of the two normalised images, each first averaged over 4 x 4 pixel blocks (speckle
does not decide). For an ED / ES pair that is the other phase; in a clip it is, for ED, the
frame of end systole and for ES a diastolic one. What does not move between the two
(stationary near-field clutter, acoustic dropout, shadows) looks the same in both channels, and
the moving endocardium does not: an echocardiographer reads a hazy wall from the loop, not from
one still frame, for the same reason. A recording with one frame is its own partner (the
network then sees the frame twice; trained only on pairs, it segments such frames less well).

``context = "smoothed-partner"`` is the same with the partner averaged over 5 x 5 pixel boxes:
its speckle is independent of the frame's and carries nothing about the frame's borders, while
what the partner is for (the clutter that stays, the wall where it was) is coarse.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Literal

import numpy as np

Context = Literal["none", "partner", "smoothed-partner"]
POOL = 4  # pixels per side averaged before frames are compared
SMOOTH = 5  # side of the box a smoothed partner is averaged over (pixels)


def input_channels(context: Context) -> int:
    """The network's input channels for ``context``."""
    return 1 if context == "none" else 2


def _pooled(images: np.ndarray) -> np.ndarray:
    n, h, w = images.shape
    hh, ww = max(h // POOL, 1) * POOL, max(w // POOL, 1) * POOL
    if hh > h or ww > w:  # smaller than one block: compare the images as they are
        return images.reshape(n, -1).astype(np.float64)
    blocks = images[:, :hh, :ww].reshape(n, hh // POOL, POOL, ww // POOL, POOL)
    return blocks.mean(axis=(2, 4), dtype=np.float64).reshape(n, -1)


def partner_indices(images: np.ndarray, groups: Sequence[Hashable]) -> np.ndarray:
    """For every image of ``images`` (N, H, W), the index of its partner: the image of the same
    group (one recording) with the largest mean squared difference from it (the first such on a
    tie); an image alone in its group is its own partner."""
    if images.ndim != 3:
        raise ValueError(f"images must be (N, H, W), got shape {images.shape}")
    if len(groups) != len(images):
        raise ValueError(f"{len(groups)} group keys for {len(images)} images")
    members: dict[Hashable, list[int]] = {}
    for i, key in enumerate(groups):
        members.setdefault(key, []).append(i)
    partners = np.arange(len(images), dtype=np.int64)
    pooled = _pooled(images)
    for idx in members.values():
        if len(idx) < 2:
            continue
        x = pooled[idx]
        squared = (x * x).sum(1)
        distance = squared[:, None] + squared[None, :] - 2.0 * (x @ x.T)
        np.fill_diagonal(distance, -np.inf)  # never itself while another frame exists
        partners[idx] = np.asarray(idx)[distance.argmax(1)]
    return partners


def model_input(
    images: np.ndarray, context: Context, groups: Sequence[Hashable] | None = None
) -> np.ndarray:
    """The network's input (N, C, H, W) float32 for normalised images (N, H, W): the images
    alone, or each with its partner (``groups``: one key per image naming its recording; None:
    all images are one recording)."""
    images = np.asarray(images, dtype=np.float32)
    if context == "none":
        return images[:, None]
    if context not in ("partner", "smoothed-partner"):
        raise ValueError(f"unknown context {context!r}")
    keys = [0] * len(images) if groups is None else groups
    partners = images[partner_indices(images, keys)]
    if context == "smoothed-partner":
        partners = box_smoothed(partners)
    return np.stack([images, partners], axis=1)


def box_smoothed(images: np.ndarray, side: int = SMOOTH) -> np.ndarray:
    """Each image (N, H, W) averaged over ``side`` x ``side`` boxes centred on each pixel (at the
    borders over the part of the box inside the image)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]
    out = F.avg_pool2d(x, side, stride=1, padding=side // 2, count_include_pad=False)
    return out[:, 0].numpy()
