"""Communication: bytes a site sends per round versus the size of the fp32 model, and the
optional float16 transfer, with its effect on Dice measured in the same run.

    python benchmarks/bench_communication.py [--rounds 6] [--size 64]

Weights travel packed into two flat arrays (run config ``pack-weights``, the default; one
Flower array per tensor is measured beside it). Bytes are counted the way Flower 1.42 moves a
message: every object of the reply's object tree
(message, records, arrays, array chunks) deflated to the bytes that are pushed. The fp32 model
size is the sum of the state dict's tensor bytes. Goal: <= 1.01 x the model size per round
(fp32 transfer); float16 (run config ``transfer-dtype="float16"``) should halve it. The Dice
effect: two identical simulations, fp32 and fp16 transfer, final test Dice per site.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from common_setup import REPO, federation, record
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.task_identity import TaskIdentity

from common.federation.protocol import encode_weights
from common.training.model import build_unet
from simulations.engine import SimulationEngine

GOAL = 1.01
SITES = {"A": 40, "B": 80, "C": 12}


def reply_bytes(dtype: str, packed: bool = True) -> tuple[int, int]:
    """(bytes of a train reply, fp32 model bytes)."""
    state = build_unet().state_dict()
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = 1  # outside a run
    model_bytes = sum(
        t.numel() * 4 if t.is_floating_point() else t.numel() * t.element_size()
        for t in state.values()
    )
    metrics = {f"dice-{s}": 0.5 for s in ("LV", "MYO", "LA")} | {"num-examples": 100.0}
    message = Message(
        RecordDict(
            {
                "arrays": ArrayRecord(
                    {
                        k: Array(v)
                        for k, v in encode_weights(state, packed=packed, dtype=dtype).items()
                    }
                ),
                "metrics": MetricRecord(metrics),
            }
        ),
        dst_node_id=1,
        message_type="train",
    )
    sent = sum(len(obj.deflate()) for obj in get_all_nested_objects(message).values())
    return sent, model_bytes


def simulate(work: Path, specs: list, rounds: int, size: int, dtype: str) -> dict:
    out = work / f"out-{dtype}"
    config = {
        "num-server-rounds": rounds,
        "local-epochs": 2,
        "lr": 0.003,
        "batch-size": 16,
        "image-size": size,
        "label-dropout-p": 0.5,
        "min-sites": len(specs),
        "client-threads": 1,
        "seed": 0,
        "transfer-dtype": dtype,
        "output-dir": str(out),
        "cache-dir": str(work / "cache"),
        "sim-sites": str(work / "sites.json"),
    }
    with SimulationEngine(work / f"flwr-{dtype}") as engine:
        outcome = engine.run(REPO, config, len(specs), timeout=3600)
    if outcome.returncode != 0:
        raise SystemExit("\n".join(outcome.output[-30:]))
    summary = json.loads((out / "summary.json").read_text())
    return {
        site: {s: row[f"full-dice-{s}"] for s in ("LV", "MYO", "LA")}
        for site, row in summary["test"].items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--data-dir", type=Path, default=Path("data/bench-communication"))
    args = parser.parse_args()
    sent32, model = reply_bytes("float32")
    sent16, _ = reply_bytes("float16")
    per_tensor, _ = reply_bytes("float32", packed=False)
    print(
        f"one Flower array per tensor (pack-weights=false): {per_tensor:,} bytes "
        f"= {per_tensor / model:.4f} x the model"
    )
    print(
        f"fp32 model: {model:,} bytes; a train reply sends {sent32:,} bytes "
        f"= {sent32 / model:.4f} x the model (goal <= {GOAL}: "
        f"{'met' if sent32 / model <= GOAL else 'NOT met'})"
    )
    print(
        f"float16 transfer: {sent16:,} bytes = {sent16 / model:.4f} x the model "
        f"({sent16 / sent32:.3f} of fp32)"
    )
    specs = federation(args.data_dir, SITES)
    work = Path(tempfile.mkdtemp(prefix="echofl-bench-comm-"))
    (work / "sites.json").write_text(json.dumps([s.model_dump(mode="json") for s in specs]))
    try:
        dice = {
            dtype: simulate(work, specs, args.rounds, args.size, dtype)
            for dtype in ("float32", "float16")
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    diffs = [
        dice["float16"][site][s] - dice["float32"][site][s]
        for site in dice["float32"]
        for s in ("LV", "MYO", "LA")
    ]
    print(f"final test Dice, {len(dice['float32'])} sites x 3 structures, {args.rounds} rounds:")
    for site in dice["float32"]:
        cells = "  ".join(
            f"{s} {dice['float32'][site][s]:.3f} -> {dice['float16'][site][s]:.3f}"
            for s in ("LV", "MYO", "LA")
        )
        print(f"  {site}: {cells}")
    print(
        f"fp16 - fp32 Dice: mean {np.mean(diffs):+.4f}, largest |diff| {np.max(np.abs(diffs)):.4f}"
    )
    path = record(
        "communication",
        {
            "settings": {**vars(args), "data_dir": str(args.data_dir), "sites": SITES},
            "model_bytes": model,
            "reply_bytes_fp32": sent32,
            "reply_bytes_fp16": sent16,
            "ratio_fp32": sent32 / model,
            "ratio_fp16": sent16 / model,
            "goal": GOAL,
            "dice": dice,
            "dice_diff_mean": float(np.mean(diffs)),
            "dice_diff_max_abs": float(np.max(np.abs(diffs))),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
