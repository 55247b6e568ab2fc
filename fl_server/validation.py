"""Checks on the sites' returned weights before they are aggregated.

An update is rejected, with the site and the reason logged, when it has missing or extra
tensors, a tensor of the wrong shape or dtype, a NaN or infinite value, or an update norm
(||site weights - global weights||) far outside the round's others: larger than
``norm_factor`` times the median norm of the *other* sites' updates (leave-one-out, so that one
poisoned site among two is still caught). A rejected update never touches the global model.
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


def validate_updates(
    updates: Sequence[tuple[str, Mapping[str, np.ndarray]]],
    reference: Mapping[str, np.ndarray],
    norm_factor: float,
) -> tuple[list[int], list[Rejection], dict[str, float]]:
    """Indices of the accepted updates, the rejections, and every well-formed update's norm.

    ``reference`` is the global model sent this round (names, shapes, dtypes, values).
    ``norm_factor`` <= 0 disables the norm test.
    """
    accepted: list[int] = []
    rejected: list[Rejection] = []
    norms: dict[int, float] = {}
    for i, (site, arrays) in enumerate(updates):
        problem = _check_structure(arrays, reference)
        if problem is not None:
            rejected.append(Rejection(site, problem))
            continue
        norms[i] = update_norm(arrays, reference)
        accepted.append(i)
    if norm_factor > 0 and len(norms) >= 2:
        keep = []
        for i in accepted:
            others = [n for j, n in norms.items() if j != i]
            limit = norm_factor * float(np.median(others))
            if limit > 0 and norms[i] > limit:
                rejected.append(
                    Rejection(
                        updates[i][0],
                        f"update norm {norms[i]:.3g} exceeds {norm_factor:g} x the median of the "
                        f"other sites' ({np.median(others):.3g})",
                    )
                )
            else:
                keep.append(i)
        accepted = keep
    return accepted, rejected, {updates[i][0]: n for i, n in norms.items()}
