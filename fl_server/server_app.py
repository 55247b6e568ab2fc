"""The coordinator side of echofl: a Flower ServerApp.

1. wait for ``min-sites`` sites, query their labelled sets and sample counts;
2. compute the structures partially labelled across the federation and send them with the
   label-dropout probability p (0 turns it off) in every round's train config;
3. score the initial model on every site's validation split (round 0);
4. FedAvg (or FedProx) rounds; after each, the global model is checkpointed (and kept as
   ``best.pt`` when the sites' mean validation Dice on their own labels improves);
5. score the final model on every site's test split; write ``summary.json`` and print the
   per-site, per-structure table.

Everything goes to ``output-dir``: ``metrics.jsonl`` (every round x site x structure),
``checkpoints/``, ``summary.json``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from common.checkpoint import load_checkpoint, save_checkpoint
from common.errors import ConfigError
from common.labels import format_labelled_set
from common.metrics import STRUCTURES
from common.model import build_unet
from common.pki import load_signing_key, load_verify_key
from common.run_settings import RunSettings, parse_run_settings
from fl_server.metrics_log import MetricsLog
from fl_server.negotiation import (
    FederationError,
    SiteInfo,
    describe,
    partial_structures,
    query_sites,
    wait_for_sites,
)
from fl_server.strategy import SiteBookkeeping, aggregate_site_metrics, make_strategy, mean_dice

log = logging.getLogger("echofl.server")
app = ServerApp()

SITES_TIMEOUT_S = 600.0


def say(message: str) -> None:
    """Progress for the operator: the ServerApp's output is what `flwr run --stream` shows."""
    print(f"[echofl] {message}", flush=True)


def train_config(settings: RunSettings, infos: list[SiteInfo]) -> ConfigRecord:
    partial = partial_structures(infos) if settings.label_dropout_p > 0 else frozenset()
    return ConfigRecord(
        {
            "lr": settings.lr,
            "local-epochs": settings.local_epochs,
            "batch-size": settings.batch_size,
            "loss": settings.loss,
            "dice-weight": settings.dice_weight,
            "augment": settings.augment,
            "label-dropout-p": settings.label_dropout_p,
            "partial-structures": ",".join(s.name for s in sorted(partial)),
            "seed": settings.seed,
        }
    )


def evaluate_round(
    grid: Grid,
    arrays: ArrayRecord,
    node_ids: list[int],
    split: str,
    server_round: int,
    strategy: SiteBookkeeping,
    timeout: float,
) -> dict:
    """One federated evaluation outside the strategy's loop (round 0, and the final test)."""
    content = RecordDict(
        {"arrays": arrays, "config": ConfigRecord({"split": split, "server-round": server_round})}
    )
    messages = [
        Message(content, dst_node_id=n, message_type=MessageType.EVALUATE) for n in node_ids
    ]
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    strategy._log_replies(server_round, split, replies)
    ok = [r.content for r in replies if not r.has_error()]
    if not ok:
        return {}
    aggregate = dict(aggregate_site_metrics(ok, "num-examples"))
    strategy.metrics_log.site_row(server_round, split, "*", 0, aggregate)
    return aggregate


def _dice_line(metrics: dict) -> str:
    prefix = "full-" if metrics.get("full-n-LV", 0) > 0 else ""
    return " ".join(
        f"{s.name} {metrics[f'{prefix}dice-{s.name}']:.3f}"
        for s in STRUCTURES
        if metrics.get(f"{prefix}n-{s.name}", 0) > 0
    )


def summary_table(rows: list[dict]) -> str:
    """Per-site Dice of the final model on the test split (full ground truth where present)."""
    header = f"{'site':<14}" + "".join(f"{s.name:>8}" for s in STRUCTURES) + f"{'n':>6}  scored on"
    lines = [header, "-" * len(header)]
    for row in rows:
        prefix = "full-" if row.get("full-n-LV", 0) > 0 else ""
        cells = "".join(
            f"{row[f'{prefix}dice-{s.name}']:>8.3f}"
            if row.get(f"{prefix}n-{s.name}", 0) > 0
            else f"{'-':>8}"
            for s in STRUCTURES
        )
        lines.append(
            f"{row['site']:<14}{cells}{int(row['num-examples']):>6}  "
            f"{'full ground truth' if prefix else 'labelled structures'}"
        )
    return "\n".join(lines)


@app.main()
def main(grid: Grid, context: Context) -> None:
    settings = parse_run_settings(context.run_config)
    out = settings.output_path
    out.mkdir(parents=True, exist_ok=True)
    metrics_log = MetricsLog(out / "metrics.jsonl")
    started = time.perf_counter()

    node_ids = wait_for_sites(grid, settings.min_sites, SITES_TIMEOUT_S)
    infos = query_sites(grid, node_ids, settings.round_timeout)
    if len(infos) < settings.min_sites:
        raise FederationError(
            f"only {len(infos)} site(s) answered the query; {settings.min_sites} needed"
        )
    names = [i.name for i in infos]
    if len(set(names)) != len(names):
        raise FederationError(f"two nodes claim the same site name: {sorted(names)}")
    partial = partial_structures(infos)
    metrics_log.event(
        "negotiated",
        sites={i.name: sorted(s.name for s in i.labelled) for i in infos},
        counts={i.name: i.counts for i in infos},
        partial=sorted(s.name for s in partial),
        label_dropout_p=settings.label_dropout_p,
    )
    say(f"sites: {describe(infos)}")
    say(
        f"partially labelled across the federation: {format_labelled_set(partial)}; "
        f"label dropout p = {settings.label_dropout_p}"
    )

    signing_key = load_signing_key(Path(settings.signing_key)) if settings.signing_key else None
    torch.manual_seed(settings.seed)
    model = build_unet(settings.model)
    if settings.initial_checkpoint:
        model.load_state_dict(initial_state(settings, signing_key))
        say(f"starting from {settings.initial_checkpoint} (signature verified)")
    initial = ArrayRecord(model.state_dict())
    strategy = make_strategy(settings)
    strategy.setup_bookkeeping(
        sites={i.node_id: i.name for i in infos},
        log=metrics_log,
        reference=initial,
        updates_dir=out / "updates" if settings.save_updates else None,
    )
    checkpoints = out / "checkpoints"
    best = {"score": -math.inf, "round": 0}
    round_started = [time.perf_counter()]

    def checkpoint(server_round: int, arrays: ArrayRecord) -> None:
        validation = strategy.last_validation if server_round > 0 else {}
        meta = {
            "round": server_round,
            "model": settings.model.model_dump(mode="json"),
            "image_size": settings.image_size,
            "validation": validation,
        }
        state = arrays.to_torch_state_dict()
        save_checkpoint(checkpoints / f"round-{server_round:04d}.pt", state, meta, signing_key)
        score = mean_dice(validation)
        if server_round > 0 and score > best["score"]:
            best.update(score=score, round=server_round)
            save_checkpoint(checkpoints / "best.pt", state, meta, signing_key)
        if server_round > 0:
            seconds = time.perf_counter() - round_started[0]
            train_agg = strategy.participants.get(server_round, [])
            say(
                f"round {server_round}/{settings.num_server_rounds} done in {seconds:.1f}s: "
                f"{len(train_agg)} site(s) trained; val Dice {_dice_line(validation)}"
            )
            metrics_log.event(
                "round-done", round=server_round, seconds=round(seconds, 3), sites=train_agg
            )
        round_started[0] = time.perf_counter()

    round0 = evaluate_round(
        grid, initial, [i.node_id for i in infos], "val", 0, strategy, settings.round_timeout
    )
    say(f"round 0 (initial model): val Dice {_dice_line(round0) if round0 else 'n/a'}")
    checkpoint(0, initial)

    config = train_config(settings, infos)
    metrics_log.event("train-config", **dict(config))
    result = strategy.start(
        grid=grid,
        initial_arrays=initial,
        num_rounds=settings.num_server_rounds,
        timeout=settings.round_timeout,
        train_config=config,
        evaluate_config=ConfigRecord({"split": "val"}),
        evaluate_fn=lambda r, a: checkpoint(r, a) if r > 0 else None,
    )
    final = result.arrays
    save_checkpoint(
        checkpoints / "final.pt",
        final.to_torch_state_dict(),
        {
            "round": settings.num_server_rounds,
            "model": settings.model.model_dump(mode="json"),
            "image_size": settings.image_size,
        },
        signing_key,
    )
    live = sorted(grid.get_node_ids())
    test = evaluate_round(
        grid, final, live, "test", settings.num_server_rounds, strategy, settings.round_timeout
    )
    rows = [r for r in _final_test_rows(metrics_log.path, settings.num_server_rounds)]
    summary = {
        "rounds": settings.num_server_rounds,
        "sites": {i.name: sorted(s.name for s in i.labelled) for i in infos},
        "partial_structures": sorted(s.name for s in partial),
        "label_dropout_p": settings.label_dropout_p,
        "strategy": settings.strategy,
        "best_round": best["round"],
        "seconds": round(time.perf_counter() - started, 2),
        "test": {r["site"]: r for r in rows},
        "test_aggregate": test,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    say("final model on each site's test split:\n" + summary_table(rows))
    say(f"done in {summary['seconds']:.0f}s; outputs in {out}")


def initial_state(settings: RunSettings, signing_key: Ed25519PrivateKey | None) -> dict:
    """Weights to start from (fine-tuning), verified against the coordinator's public key."""
    if settings.verify_key:
        verify_key = load_verify_key(Path(settings.verify_key))
    elif signing_key is not None:
        verify_key = signing_key.public_key()
    else:
        raise ConfigError(
            "run config",
            "initial-checkpoint needs verify-key (or signing-key): "
            "an unverified model is never loaded",
        )
    state, _ = load_checkpoint(Path(settings.initial_checkpoint), verify_key=verify_key)
    return state


def _final_test_rows(path: Path, server_round: int) -> list[dict]:
    from fl_server.metrics_log import read_metrics_log

    return sorted(
        (
            r
            for r in read_metrics_log(path)
            if r.get("phase") == "test" and r.get("round") == server_round and r.get("site") != "*"
        ),
        key=lambda r: r["site"],
    )
