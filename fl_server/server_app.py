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
from common.files import write_atomic
from common.labels import format_labelled_set
from common.metrics import STRUCTURES
from common.model import build_unet
from common.pki import load_signing_key, load_verify_key
from common.run_settings import RunSettings, parse_run_settings
from fl_server.metrics_log import MetricsLog
from fl_server.negotiation import (
    FederationError,
    SiteInfo,
    check_registered_names,
    describe,
    partial_structures,
    query_sites,
    wait_for_sites,
)
from fl_server.resume import find_resume_point, trim_log
from fl_server.strategy import SiteBookkeeping, aggregate_site_metrics, make_strategy, mean_dice

log = logging.getLogger("echofl.server")
app = ServerApp()


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
        {
            "arrays": strategy.outgoing(arrays),
            "config": ConfigRecord({"split": split, "server-round": server_round}),
        }
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
    try:
        FederatedRun(settings, grid).run()
    except FederationError as exc:
        say(
            f"STOPPED: {exc}. Every checkpoint written so far is kept in "
            f"{settings.output_path / 'checkpoints'}; continue later with "
            "fl-server run --resume <run> (or the run config resume=true)."
        )
        MetricsLog(settings.output_path / "metrics.jsonl").event("stopped", reason=str(exc))
        raise


class FederatedRun:
    """One federated training run on the coordinator (see the module docstring)."""

    def __init__(self, settings: RunSettings, grid: Grid) -> None:
        self.settings = settings
        self.grid = grid
        self.out = settings.output_path
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = MetricsLog(self.out / "metrics.jsonl")
        self.checkpoints = self.out / "checkpoints"
        self.signing_key = (
            load_signing_key(Path(settings.signing_key)) if settings.signing_key else None
        )
        self.best = {"score": -math.inf, "round": 0}
        self.round_started = time.perf_counter()
        self.strategy: SiteBookkeeping | None = None
        self.refused: set[int] = set()

    # -- steps --------------------------------------------------------------------------------
    def negotiate(self) -> list[SiteInfo]:
        s = self.settings
        node_ids = wait_for_sites(self.grid, s.min_sites, s.sites_timeout)
        infos, refused = check_registered_names(
            query_sites(self.grid, node_ids, s.round_timeout), s.site_registry
        )
        for info, reason in refused:
            self.log.event("site-refused", node=info.node_id, site=info.name, reason=reason)
            say(f"refused node {info.node_id}: {reason}")
            self.refused.add(info.node_id)
        if len(infos) < s.min_sites:
            raise FederationError(
                f"only {len(infos)} site(s) answered the query; {s.min_sites} needed"
            )
        names = [i.name for i in infos]
        if len(set(names)) != len(names):
            raise FederationError(f"two nodes claim the same site name: {sorted(names)}")
        partial = partial_structures(infos)
        self.log.event(
            "negotiated",
            sites={i.name: sorted(x.name for x in i.labelled) for i in infos},
            counts={i.name: i.counts for i in infos},
            partial=sorted(x.name for x in partial),
            label_dropout_p=s.label_dropout_p,
        )
        say(f"sites: {describe(infos)}")
        say(
            f"partially labelled across the federation: {format_labelled_set(partial)}; "
            f"label dropout p = {s.label_dropout_p}"
        )
        return infos

    def admit(self, grid: Grid, node_ids: list[int]) -> None:
        """A node that connects during the run: query it, check its name, admit or refuse."""
        assert self.strategy is not None
        s = self.settings
        answered, refused = check_registered_names(
            query_sites(grid, node_ids, s.round_timeout), s.site_registry
        )
        taken = set(self.strategy.site_names.values())
        for info in answered:
            if info.name in taken:
                refused.append((info, f"site {info.name!r} is already connected as another node"))
                continue
            self.strategy.site_names[info.node_id] = info.name
            self.log.event(
                "site-admitted",
                node=info.node_id,
                site=info.name,
                labelled=sorted(x.name for x in info.labelled),
            )
            say(f"site {info.name} joined (node {info.node_id})")
        for info, reason in refused:
            self.strategy.refused.add(info.node_id)
            self.log.event("site-refused", node=info.node_id, site=info.name, reason=reason)
            say(f"refused node {info.node_id}: {reason}")

    def starting_point(self) -> tuple[ArrayRecord, int]:
        """(initial global weights, last completed round): fresh, fine-tuned or resumed."""
        s = self.settings
        verify_key = self.signing_key.public_key() if self.signing_key is not None else None
        if s.resume:
            point = find_resume_point(self.out)
            if point.checkpoint is not None:
                dropped = trim_log(self.out, point.completed)
                state, _ = load_checkpoint(point.checkpoint, verify_key=verify_key)
                self.best.update(score=point.best_score, round=point.best_round)
                self.log.event("resumed", after_round=point.completed, rows_dropped=dropped)
                say(
                    f"resuming after round {point.completed} (from {point.checkpoint.name}; "
                    f"{dropped} row(s) of an unfinished round dropped from the log)"
                )
                return ArrayRecord(state), point.completed
            say("resume requested but no completed round found: starting from the beginning")
        torch.manual_seed(s.seed)
        model = build_unet(s.model)
        if s.initial_checkpoint:
            model.load_state_dict(initial_state(s, self.signing_key))
            say(f"starting from {s.initial_checkpoint} (signature verified)")
        return ArrayRecord(model.state_dict()), -1

    def checkpoint(self, server_round: int, arrays: ArrayRecord) -> None:
        assert self.strategy is not None
        s = self.settings
        validation = self.strategy.last_validation if server_round > 0 else {}
        meta = {
            "round": server_round,
            "model": s.model.model_dump(mode="json"),
            "image_size": s.image_size,
            "validation": validation,
        }
        state = arrays.to_torch_state_dict()
        save_checkpoint(
            self.checkpoints / f"round-{server_round:04d}.pt", state, meta, self.signing_key
        )
        score = mean_dice(validation)
        if server_round > 0 and score > self.best["score"]:
            self.best.update(score=score, round=server_round)
            save_checkpoint(self.checkpoints / "best.pt", state, meta, self.signing_key)
        if server_round > 0:
            seconds = time.perf_counter() - self.round_started
            trained = self.strategy.participants.get(server_round, [])
            say(
                f"round {server_round}/{s.num_server_rounds} done in {seconds:.1f}s: "
                f"{len(trained)} site(s) trained; val Dice {_dice_line(validation)}"
            )
            self.log.event(
                "round-done",
                round=server_round,
                seconds=round(seconds, 3),
                sites=trained,
                score=None if math.isnan(score) else score,
                rss_mb=resident_mb(),
            )
        self.round_started = time.perf_counter()

    def run(self) -> None:
        s = self.settings
        started = time.perf_counter()
        infos = self.negotiate()
        initial, completed = self.starting_point()
        self.strategy = make_strategy(s)
        self.strategy.setup_bookkeeping(
            sites={i.node_id: i.name for i in infos},
            log=self.log,
            reference=initial,
            updates_dir=self.out / "updates" if s.save_updates else None,
            min_sites=s.min_sites,
            sites_timeout=s.sites_timeout,
            round_offset=max(completed, 0),
            norm_factor=s.update_norm_factor,
            admit=self.admit,
            transfer_float16=s.transfer_dtype == "float16",
            pack_weights=s.pack_weights,
        )
        self.strategy.refused.update(self.refused)
        if completed < 0 and not s.federated_evaluation:
            self.checkpoint(0, initial)
            completed = 0
        if completed < 0:  # a fresh run: score the initial model (round 0)
            round0 = evaluate_round(
                self.grid,
                initial,
                [i.node_id for i in infos],
                "val",
                0,
                self.strategy,
                s.round_timeout,
            )
            say(f"round 0 (initial model): val Dice {_dice_line(round0) if round0 else 'n/a'}")
            self.checkpoint(0, initial)
            completed = 0
        config = train_config(s, infos)
        self.log.event("train-config", **dict(config))
        final = initial
        remaining = s.num_server_rounds - completed
        if remaining > 0:
            result = self.strategy.start(
                grid=self.grid,
                initial_arrays=initial,
                num_rounds=remaining,
                timeout=s.round_timeout,
                train_config=config,
                evaluate_config=ConfigRecord({"split": "val"}),
                evaluate_fn=lambda r, a: self.checkpoint(r + completed, a) if r > 0 else None,
            )
            final = result.arrays
        save_checkpoint(
            self.checkpoints / "final.pt",
            final.to_torch_state_dict(),
            {
                "round": s.num_server_rounds,
                "model": s.model.model_dump(mode="json"),
                "image_size": s.image_size,
            },
            self.signing_key,
        )
        test: dict = {}
        if s.federated_evaluation:
            wait_for_sites(self.grid, 1, s.sites_timeout)
            test = evaluate_round(
                self.grid,
                final,
                self.strategy.admitted(self.grid),
                "test",
                s.num_server_rounds,
                self.strategy,
                s.round_timeout,
            )
        rows = _final_test_rows(self.log.path, s.num_server_rounds)
        summary = {
            "rounds": s.num_server_rounds,
            "sites": {i.name: sorted(x.name for x in i.labelled) for i in infos},
            "partial_structures": sorted(x.name for x in partial_structures(infos)),
            "label_dropout_p": s.label_dropout_p,
            "strategy": s.strategy,
            "best_round": self.best["round"],
            "seconds": round(time.perf_counter() - started, 2),
            "test": {r["site"]: r for r in rows},
            "test_aggregate": test,
        }
        write_atomic(self.out / "summary.json", json.dumps(summary, indent=2, default=str).encode())
        say("final model on each site's test split:\n" + summary_table(rows))
        say(f"done in {summary['seconds']:.0f}s; outputs in {self.out}")


def resident_mb() -> float:
    """This process's resident memory in MiB (Linux /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return float("nan")


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
