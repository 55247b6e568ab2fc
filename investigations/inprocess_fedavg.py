"""In-process FedAvg probe: the federation's rounds without Flower, for fast screening only.

NOT the system: real runs go through the Flower apps (``simulations/run.py``). This probe
reuses the same pieces (``train_site``, ``fl_server.aggregation.aggregate``, the recipe,
the cached site data) in one process so a recipe idea costs ~20 s at --quick sizes instead of
~90 s; a promising idea is then measured with the harness. Server-side steps here are written
out (server lr / momentum on the aggregated change) to probe ideas before they become options.

    python investigations/inprocess_fedavg.py \
        --config simulations/configs/partial-labels-screen.toml --seeds 0 1 2 \
        --set aggregation.step_normalised=true --server-momentum 0.7 --tag sn-m07
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.config import read_toml
from common.data.cache import load_site_cached
from common.federation.protocol import TrainInstruction
from common.federation.site_round import train_site
from common.labels import partially_labelled
from common.recipe import Recipe, merge
from common.training.class_slices import class_owners
from common.training.model import build_unet
from common.training.scoring import score_sites
from fl_server.aggregation import SiteUpdate, aggregate, drift_shares
from simulations.experiment import ExperimentConfig


def parse_value(text: str):  # type: ignore[no-untyped-def]
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text in ("true", "false"):
        return text == "true"
    return text


def nested(key: str, value) -> dict:  # type: ignore[no-untyped-def]
    out: dict = {}
    cur = out
    parts = key.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return out


def flat_change(weights, current, buffers) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.concatenate(
        [
            (np.asarray(weights[k], np.float64) - v).ravel()
            for k, v in current.items()
            if k not in buffers and v.dtype.kind == "f"
        ]
    )


def measure_gate(tag, seed, rnd, updates, current, buffers, previous):  # type: ignore[no-untyped-def]
    """Per site: per-step norm / median of the others', cosine to the others' coordinate-wise
    median change and to the previous global change, relative change ||d|| / ||w||."""
    deltas = [flat_change(u.weights, current, buffers) for u in updates]
    w = np.sqrt(
        sum(
            float((v.astype(np.float64) ** 2).sum())
            for k, v in current.items()
            if k not in buffers and v.dtype.kind == "f"
        )
    )
    per_step = [np.linalg.norm(d) / u.steps for d, u in zip(deltas, updates, strict=True)]
    parts = []
    for i, (d, u) in enumerate(zip(deltas, updates, strict=True)):
        others = [deltas[j] for j in range(len(deltas)) if j != i]
        med = np.median(np.stack(others), axis=0)
        cos_med = float(d @ med / (np.linalg.norm(d) * np.linalg.norm(med) + 1e-30))
        cos_prev = (
            float(d @ previous / (np.linalg.norm(d) * np.linalg.norm(previous) + 1e-30))
            if previous is not None
            else float("nan")
        )
        ratio = per_step[i] / float(np.median([per_step[j] for j in range(len(deltas)) if j != i]))
        parts.append(
            f"{u.site}: step-norm x{ratio:.2f} cos-others {cos_med:+.2f} "
            f"cos-prev {cos_prev:+.2f} rel {np.linalg.norm(d) / w:.1e}"
        )
    print(f"  gate [{tag} s{seed} r{rnd}] " + " | ".join(parts), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--set", action="append", default=[], help="recipe.key=value (no 'recipe.')")
    ap.add_argument("--server-lr", type=float, default=1.0)
    ap.add_argument("--server-momentum", type=float, default=0.0)
    ap.add_argument("--full", action="store_true", help="fully labelled sites")
    ap.add_argument("--tag", default="probe")
    ap.add_argument("--measure-gate", action="store_true", help="print update geometry")
    ap.add_argument("--diagnose", action="store_true", help="score each local model too")
    ap.add_argument("--out", default="runs/probe")
    args = ap.parse_args()
    torch.set_num_threads(1)

    config = ExperimentConfig.model_validate(read_toml(Path(args.config)))
    recipe = config.recipe
    for item in args.set:
        k, v = item.split("=", 1)
        recipe = Recipe.model_validate(merge(recipe, nested(k, parse_value(v))))
    rounds = args.rounds or config.budget.rounds
    cache = Path(".cache/echofl")
    sites = {
        s.name: load_site_cached(config.site_spec(s), recipe.preprocess, cache)
        for s in config.sites
    }
    train_names = [s.name for s in config.train_sites]
    train_data = {n: sites[n].split("train") for n in train_names}
    if args.full:
        train_data = {n: d.fully_labelled() for n, d in train_data.items()}
    partial = partially_labelled(d.labelled_set for d in train_data.values())
    device = torch.device("cpu")
    agg = recipe.aggregation
    out_dir = Path(args.out) / args.tag
    out_dir.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        started = time.perf_counter()
        torch.manual_seed(seed)
        model = build_unet(recipe.model)
        buffers = {n for n, _ in model.named_buffers()}
        owners = class_owners(model)
        velocity: dict[str, np.ndarray] = {}
        previous_change = None
        curve, drifts = [], []
        for rnd in range(1, rounds + 1):
            current = {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
            updates = []
            for name in train_names:
                model.load_state_dict({k: torch.from_numpy(v) for k, v in current.items()})
                m = train_site(
                    model,
                    train_data[name],
                    recipe,
                    TrainInstruction(server_round=rnd, partial=partial),
                    seed=seed,
                    device=device,
                )
                if args.diagnose and rnd % 2 == 0:
                    local = score_sites(
                        model,
                        {name: sites[name]},
                        split="val",
                        device=device,
                        amp=False,
                        context=recipe.model.context,
                    )
                    print(
                        f"  [{args.tag} s{seed} r{rnd}] local {name}: "
                        + " ".join(f"{k} {local[name][k]:.3f}" for k in ("LV", "MYO", "LA")),
                        flush=True,
                    )
                classes = frozenset({0} | {int(s) for s in train_data[name].labelled_set})
                updates.append(
                    SiteUpdate(
                        name,
                        {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()},
                        m["num-examples"],
                        classes,
                        m["train-steps"],
                    )
                )
            drifts.append(drift_shares(updates, current, owners, [1, 2, 3]))
            if args.measure_gate:
                measure_gate(args.tag, seed, rnd, updates, current, buffers, previous_change)
            new = aggregate(
                updates,
                current,
                owners=owners if agg.label_aware else None,
                buffers=buffers,
                step_normalised=agg.step_normalised,
            )
            if args.server_lr != 1.0 or args.server_momentum > 0:
                for k, ref in current.items():
                    if k in buffers or ref.dtype.kind != "f":
                        continue
                    delta = new[k].astype(np.float64) - ref
                    v = args.server_momentum * velocity.get(k, 0.0) + delta
                    velocity[k] = v
                    new[k] = (ref + args.server_lr * v).astype(ref.dtype)
            previous_change = flat_change(new, current, buffers)
            model.load_state_dict(
                {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in new.items()}
            )
            if rnd % 5 == 0 or rnd == rounds or (args.diagnose and rnd % 2 == 0):
                val = score_sites(
                    model,
                    {n: sites[n] for n in train_names},
                    split="val",
                    device=device,
                    amp=False,
                    context=recipe.model.context,
                )
                curve.append((rnd, val))
                la = np.mean([val[n]["LA"] for n in train_names])
                myo = np.mean([val[n]["MYO"] for n in train_names])
                print(
                    f"[{args.tag} s{seed}] round {rnd} val MYO {myo:.3f} LA {la:.3f}"
                    f"  A/LA {val['A']['LA']:.3f}",
                    flush=True,
                )
        test = score_sites(
            model, sites, split="test", device=device, amp=False, context=recipe.model.context
        )
        result = {
            "tag": args.tag,
            "seed": seed,
            "args": vars(args),
            "seconds": round(time.perf_counter() - started, 1),
            "test": test,
            "curve": curve,
            "drift": {c: float(np.nanmean([d[c] for d in drifts])) for c in (1, 2, 3)},
        }
        (out_dir / f"seed-{seed}.json").write_text(json.dumps(result, indent=1, default=float))
        means = {s: np.mean([test[n][s] for n in train_names]) for s in ("LV", "MYO", "LA")}
        print(
            f"[{args.tag} s{seed}] TEST "
            + " ".join(f"{k} {v:.3f}" for k, v in means.items())
            + f"  ({result['seconds']}s)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
