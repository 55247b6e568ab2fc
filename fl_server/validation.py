"""Checks on the sites' returned weights before they are aggregated.

An update is rejected, with the site and the reason logged, when

* it has missing or extra tensors, a tensor of the wrong shape or dtype, a NaN or an infinite
  value (structure);
* it barely changes the model: ``||site - global|| / ||global||`` below ``min_change`` (a stale
  or replayed model, or the global model sent back; an honest local epoch changes the U-Net by
  several per cent, see docs/reliability.md);
* its update norm ``||site - global||`` is larger than ``norm_factor`` times the **reference
  scale**: the median of the *other* sites' norms this round (leave-one-out) together with the
  medians of the last rounds' accepted norms (``history``). Leave-one-out keeps one poisoned
  site from setting its own yardstick; the history lets two sites work (with one honest site and
  one scaled one, the scaled one is rejected and the honest one kept).

The order matters: stale updates are dropped before the scale is taken, so that a site sending
an unchanged model cannot make an honest one look too large. What this cannot see, measured:
honest updates of different sites are nearly orthogonal (cosine -0.3 to +0.4 with the others'
coordinate-wise median on the fedecho federation), so a sign-flipped update has the same norm
and almost the same geometry as an honest one; its influence is bounded by the weight the
coordinator gives it (the count from the query round), and robust means (``fedmedian``,
``fedtrimmedavg``) are options of the recipe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Rejection:
    site: str
    reason: str


def _check_structure(
    arrays: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]
) -> str | None:
    missing = sorted(set(reference) - set(arrays))
    extra = sorted(set(arrays) - set(reference))
    if missing:
        return f"missing tensor(s) {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"
    if extra:
        return f"unexpected tensor(s) {', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''}"
    for name, ref in reference.items():
        value = arrays[name]
        if value.shape != ref.shape:
            return f"tensor {name} has shape {value.shape}, expected {ref.shape}"
        if value.dtype != ref.dtype:
            return f"tensor {name} has dtype {value.dtype}, expected {ref.dtype}"
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            return f"tensor {name} contains NaN or infinite values"
    return None


def update_norm(arrays: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> float:
    """L2 norm of (site - global) over the floating-point tensors."""
    total = 0.0
    for name, ref in reference.items():
        if ref.dtype.kind == "f":
            diff = arrays[name].astype(np.float64) - ref.astype(np.float64)
            total += float(np.dot(diff.ravel(), diff.ravel()))
    return total**0.5


def model_norm(reference: Mapping[str, np.ndarray]) -> float:
    """L2 norm of the floating-point tensors."""
    floats = [v for v in reference.values() if v.dtype.kind == "f"]
    return float(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in floats) ** 0.5)


def validate_updates(
    updates: Sequence[tuple[str, Mapping[str, np.ndarray]]],
    reference: Mapping[str, np.ndarray],
    norm_factor: float,
    *,
    min_change: float = 0.0,
    history: Sequence[float] = (),
) -> tuple[list[int], list[Rejection], dict[str, float]]:
    """Indices of the accepted updates, the rejections, and every well-formed update's norm.

    ``reference`` is the global model sent this round (names, shapes, dtypes, values).
    ``norm_factor`` <= 0 disables the norm test, ``min_change`` <= 0 the stale test;
    ``history``: the median accepted norm of each recent round.
    """
    accepted: list[int] = []
    rejected: list[Rejection] = []
    norms: dict[int, float] = {}
    scale = model_norm(reference)
    for i, (site, arrays) in enumerate(updates):
        problem = _check_structure(arrays, reference)
        if problem is not None:
            rejected.append(Rejection(site, problem))
            continue
        norms[i] = update_norm(arrays, reference)
        relative = norms[i] / scale if scale > 0 else float("inf")
        if min_change > 0 and relative < min_change:
            rejected.append(
                Rejection(
                    site,
                    f"update changes the model by {relative:.2g} of its norm, less than "
                    f"update-min-change {min_change:g}: a stale or unchanged model",
                )
            )
            continue
        accepted.append(i)
    if norm_factor > 0:
        keep = []
        for i in accepted:
            yardstick = [norms[j] for j in accepted if j != i] + [h for h in history if h > 0]
            if not yardstick:
                keep.append(i)
                continue
            reference_norm = float(np.median(yardstick))
            if norms[i] > norm_factor * reference_norm:
                rejected.append(
                    Rejection(
                        updates[i][0],
                        f"update norm {norms[i]:.3g} exceeds update-norm-factor {norm_factor:g} x "
                        f"the reference {reference_norm:.3g} (median of the other sites' norms "
                        f"and of recent rounds')",
                    )
                )
            else:
                keep.append(i)
        accepted = keep
    return accepted, rejected, {updates[i][0]: n for i, n in norms.items()}
