"""Fault injection for reliability tests (run config ``inject-faults``; empty = off).

``"B:nan,C:raise,A:fail@0.3"``: site ``B`` returns weights containing NaN, ``C`` raises an error
whose text holds a file path and a case id (to check that nothing private reaches the
coordinator), ``A`` fails at random in 30% of its rounds (seeded by round and site, so a soak
run is reproducible). Other kinds: ``scale`` (update norm x1000), ``shape`` (one tensor with a
wrong shape), ``missing`` (one tensor left out), ``dtype`` (one tensor as float64), ``inflate``
(honest weights, but the site claims 1e9 training images and reports every Dice as 50).
Only the coordinator sets the run config, so a site cannot be made to misbehave by anyone else.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

import torch

from common.errors import DataError

KINDS = ("nan", "scale", "shape", "missing", "dtype", "raise", "fail", "inflate")
INFLATED_COUNT, INFLATED_DICE = 1e9, 50.0


def parse_faults(text: str) -> dict[str, tuple[str, float]]:
    """``"B:nan,A:fail@0.3"`` -> ``{"B": ("nan", 1.0), "A": ("fail", 0.3)}``."""
    faults: dict[str, tuple[str, float]] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        site, _, kind = item.partition(":")
        kind, _, prob = kind.partition("@")
        if kind not in KINDS:
            raise ValueError(f"unknown fault {kind!r} in inject-faults; known: {', '.join(KINDS)}")
        faults[site] = (kind, float(prob) if prob else 1.0)
    return faults


def before_training(site: str, server_round: int, faults: Mapping[str, tuple[str, float]]) -> None:
    kind, prob = faults.get(site, ("", 0.0))
    if kind == "raise":
        raise DataError(
            "/hospital/data/patient0042/patient0042_4CH_ED_gt.nii.gz",
            "label value 7 outside the schema (case patient0042)",
        )
    if kind == "fail" and random.Random(f"{site}-{server_round}").random() < prob:
        raise RuntimeError(f"injected random failure of site {site} in round {server_round}")


def corrupt(
    site: str,
    state: dict[str, torch.Tensor],
    faults: Mapping[str, tuple[str, float]],
    reference: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    kind, _ = faults.get(site, ("", 0.0))
    name = next(k for k, v in state.items() if v.is_floating_point() and v.ndim > 1)
    state = dict(state)
    if kind == "nan":
        state[name] = state[name].clone()
        state[name].view(-1)[0] = float("nan")
    elif kind == "scale":
        state = {
            k: (reference[k] + 1000 * (v - reference[k])) if v.is_floating_point() else v
            for k, v in state.items()
        }
    elif kind == "shape":
        state[name] = state[name].flatten()
    elif kind == "missing":
        del state[name]
    elif kind == "dtype":
        state[name] = state[name].double()
    return state


def inflate_claims(
    site: str, metrics: dict[str, float], faults: Mapping[str, tuple[str, float]]
) -> dict[str, float]:
    """``inflate``: the reply's metrics claim 1e9 images and Dice 50 (a lying site)."""
    if faults.get(site, ("", 0.0))[0] != "inflate":
        return metrics
    out = dict(metrics)
    if "num-examples" in out and "train-loss" in out:  # a training reply
        out["num-examples"] = INFLATED_COUNT
    for key in out:
        if key.startswith("dice-"):
            out[key] = INFLATED_DICE
    return out
