"""The mean of the sites' updates: plain, label-aware and step-normalised (no Flower here).

* **Plain** (FedAvg): every element is the mean of the sites' values weighted by their
  training images ``n_i``.
* **Label-aware** (an echofl variant of FedAvg): an element that belongs to output class ``c``
  (:func:`common.training.class_slices.class_owners`) is averaged only over the sites whose
  labelled set contains ``c``, weighted by their images; background and shared elements are
  plain FedAvg. A class no participating site annotates keeps the global value.
* **Step-normalised** (after FedNova, Wang et al. 2020, "Tackling the objective inconsistency
  problem in heterogeneous federated optimization"): a site's change is divided by its local
  steps ``tau_i`` before averaging and the mean direction is scaled by the weighted mean of the
  steps, ``w + (sum p_i tau_i) * sum p_i (w_i - w) / tau_i``, so a site that takes three times
  the steps does not also count three times. Buffers (running statistics) are not steps: they
  are always averaged plainly (with the label-aware weights where they belong to a class).

Every computation is in float64 and cast back to the tensor's dtype.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from common.training.class_slices import SHARED


@dataclass(frozen=True)
class SiteUpdate:
    site: str
    weights: Mapping[str, np.ndarray]
    examples: float  # the FedAvg weight (training images)
    classes: frozenset[int]  # output classes the site annotates (background 0 included)
    steps: float = 1.0  # local optimiser steps this round


def _weights(
    updates: list[SiteUpdate], owner: np.ndarray | None, ndim: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-site weight of every element (broadcastable to ``(S, *tensor)``) and the mask of
    elements that some site weighs."""
    n = np.array([u.examples for u in updates], dtype=np.float64)
    if owner is None:
        return n.reshape(-1, *([1] * ndim)), np.ones((1,) * ndim, dtype=bool)
    w = np.empty((len(updates), *owner.shape), dtype=np.float64)
    for i, u in enumerate(updates):
        annotates = np.isin(owner, sorted(u.classes)) | (owner == SHARED)
        w[i] = np.where(annotates, n[i], 0.0)
    return w, w.sum(0) > 0


def aggregate(
    updates: list[SiteUpdate],
    current: Mapping[str, np.ndarray],
    *,
    owners: Mapping[str, np.ndarray] | None = None,
    buffers: Iterable[str] = (),
    step_normalised: bool = False,
) -> dict[str, np.ndarray]:
    """The new global weights from ``updates`` and the ``current`` global model.

    ``owners`` turns on label-aware averaging; ``buffers`` names the running statistics
    (averaged plainly, never step-normalised).
    """
    if not updates:
        raise ValueError("no updates to aggregate")
    if any(u.examples <= 0 for u in updates):
        raise ValueError("every update needs a positive weight")
    buffers = set(buffers)
    steps = np.array([u.steps for u in updates], dtype=np.float64)
    if step_normalised and (steps <= 0).any():
        raise ValueError("step-normalised averaging needs every site's step count > 0")
    out: dict[str, np.ndarray] = {}
    for name, ref in current.items():
        owner = None if owners is None else owners[name]
        w, has = _weights(updates, owner, np.ndim(ref))
        total = w.sum(0)
        p = np.divide(w, total, out=np.zeros_like(w), where=total > 0)  # (S, ...)
        values = np.stack([np.asarray(u.weights[name], dtype=np.float64) for u in updates])
        base = np.asarray(ref, dtype=np.float64)
        if step_normalised and name not in buffers and ref.dtype.kind == "f":
            tau = steps.reshape(-1, *([1] * base.ndim))
            direction = (p * (values - base) / tau).sum(0)
            mean = base + (p * tau).sum(0) * direction
        else:
            mean = (p * values).sum(0)
        mean = np.where(has, mean, base)  # nobody annotates this class: keep the global value
        out[name] = (
            mean.astype(ref.dtype) if ref.dtype.kind == "f" else np.rint(mean).astype(ref.dtype)
        )
    return out


def drift_shares(
    updates: list[SiteUpdate],
    current: Mapping[str, np.ndarray],
    owners: Mapping[str, np.ndarray],
    classes: Iterable[int],
) -> dict[int, float]:
    """For each class: the share of the FedAvg-weighted change of its own elements (the class
    head) that comes from sites that do not annotate it, ``sum_{i not annotating} ||p_i d_i|| /
    sum_i ||p_i d_i||`` with ``d_i`` the site's change of those elements (NaN: no change)."""
    n = np.array([u.examples for u in updates], dtype=np.float64)
    p = n / n.sum()
    out: dict[int, float] = {}
    for c in classes:
        norms = np.zeros(len(updates))
        for name, owner in owners.items():
            mask = owner == c
            if not mask.any() or name not in current:
                continue
            base = np.asarray(current[name], dtype=np.float64)[mask]
            for i, u in enumerate(updates):
                d = p[i] * (np.asarray(u.weights[name], dtype=np.float64)[mask] - base)
                norms[i] += float(np.dot(d, d))
        norms = np.sqrt(norms)
        total = norms.sum()
        outside = sum(norms[i] for i, u in enumerate(updates) if c not in u.classes)
        out[c] = float(outside / total) if total > 0 else float("nan")
    return out
