"""Small hand-made data for tests that need images without the synthetic echo generator."""

from __future__ import annotations

import numpy as np

from common.cache import SiteData
from common.labels import Structure, labelled_vector


def blob_site(
    n: int,
    *,
    size: int = 32,
    seed: int = 0,
    labelled: frozenset[Structure] = frozenset(Structure),
    name: str = "blobs",
    split: str = "train",
) -> SiteData:
    """``n`` images with a bright-rimmed dark disc (LV), its ring (MYO) and a disc below (LA).

    Masks keep only ``labelled``; ``full_masks`` hold all three. Intensities are z-scored.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images = np.empty((n, size, size), np.float32)
    masks = np.empty((n, size, size), np.uint8)
    full = np.empty((n, size, size), np.uint8)
    for i in range(n):
        cy, cx = rng.uniform(0.3, 0.45) * size, rng.uniform(0.35, 0.65) * size
        r = rng.uniform(0.12, 0.18) * size
        d = np.hypot(yy - cy, xx - cx)
        label = np.zeros((size, size), np.uint8)
        label[(d >= r) & (d < r + 0.08 * size)] = 2
        label[d < r] = 1
        la = np.hypot(yy - (cy + r + 0.22 * size), xx - cx) < 0.12 * size
        label[la & (label == 0)] = 3
        image = np.choose(label, [0.4, 0.05, 0.9, 0.1]) + rng.normal(0, 0.08, (size, size))
        images[i] = (image - image.mean()) / image.std()
        full[i] = label
        masks[i] = np.where(np.isin(label, [int(s) for s in labelled]), label, 0)
    vec = np.tile(labelled_vector(labelled), (n, 1))
    records = [
        {"case_id": f"c{i:03d}", "view": "4CH", "phase": "ED", "split": split, "frame": None,
         "quality": None, "spacing_mm": None}
        for i in range(n)
    ]
    return SiteData(name, images, masks, vec, full, records)
