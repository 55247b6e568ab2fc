"""Carry a study's finished runs across a change of the recipe's layout, verified.

A run's key is the hash of everything that determines its result
(:meth:`simulations.experiment.ExperimentConfig.run_payload`). Adding a recipe setting (at a
default that reproduces the old behaviour) or moving one out of the recipe changes every key,
so a study would redo all its runs. This tool knows each such layout change as a function that
turns today's payload back into the payload of before the change; a finished run is re-keyed
only if its stored key equals the hash of today's payload taken back through the changes (so
its result was computed with exactly today's settings). Nothing else is touched.

    python simulations/rekey.py --config simulations/configs/partial-labels.toml
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.config import read_toml
from common.files import write_atomic
from simulations.experiment import ExperimentConfig, payload_key
from simulations.runs import RESULT

Payload = dict[str, Any]


def _without_model_head(payload: Payload) -> Payload | None:
    """`model.head` was added (default "unet", MONAI's own output block: the old network)."""
    model = payload["recipe"]["model"]
    if model.get("head") != "unet":
        return None  # a run with another head cannot predate the setting
    out = copy.deepcopy(payload)
    del out["recipe"]["model"]["head"]
    return out


def _with_update_norm_factor(payload: Payload) -> Payload | None:
    """`aggregation.update_norm_factor` (default 10) moved to the run options (the update gate
    is the coordinator's, not the training recipe's; honest runs reject no update)."""
    out = copy.deepcopy(payload)
    out["recipe"]["aggregation"]["update_norm_factor"] = 10.0
    return out


# newest first: each turns a payload of after the change into one of before it
CHANGES: list[tuple[str, Callable[[Payload], Payload | None]]] = [
    ("update_norm_factor moved to the run options", _with_update_norm_factor),
    ("model.head added", _without_model_head),
]


def earlier_keys(payload: Payload) -> list[tuple[str, str]]:
    """(description, key) of today's payload taken back through 1, 2, ... of the changes."""
    out, current, steps = [], payload, []
    for name, back in CHANGES:
        previous = back(current)
        if previous is None:
            break
        steps.append(name)
        current = previous
        out.append((" + ".join(steps), payload_key(current)))
    return out


def rekey(config: ExperimentConfig, say: Callable[[str], None] = print) -> dict[str, int]:
    counts = {"current": 0, "rekeyed": 0, "stale": 0}
    by_slug = {c.slug: c for c in config.conditions}
    for path in sorted((config.run_dir / "runs").glob(f"*/seed-*/{RESULT}")):
        result = json.loads(path.read_text())
        condition = by_slug.get(result.get("slug"))
        if condition is None:
            counts["stale"] += 1
            continue
        payload = config.run_payload(condition, int(result["seed"]))
        key = payload_key(payload)
        if result.get("key") == key:
            counts["current"] += 1
            continue
        match = next((n for n, k in earlier_keys(payload) if k == result.get("key")), None)
        if match is None:
            counts["stale"] += 1
            say(f"{path}: computed with other settings; left as is (the study re-runs it)")
            continue
        result["rekeyed"] = {"from": result["key"], "changes": match}
        result["key"] = key
        write_atomic(path, json.dumps(result, indent=2).encode())
        counts["rekeyed"] += 1
    say(
        f"{config.name}: {counts['current']} run(s) current, {counts['rekeyed']} re-keyed, "
        f"{counts['stale']} left for the study to re-run"
    )
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, action="append")
    parser.add_argument("--quick", action="store_true", help="the configs' --quick variants")
    args = parser.parse_args(argv)
    for path in args.config:
        config = ExperimentConfig.model_validate(read_toml(path))
        rekey(config.quick_variant() if args.quick else config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
