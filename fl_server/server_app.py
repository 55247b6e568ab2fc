"""The coordinator side of echofl: a Flower ServerApp.

1. wait for ``min-sites`` sites, query their labelled sets and sample counts;
2. compute the structures partially labelled across the federation and send them in every
   round's train instruction (the sites read the recipe, label dropout included, from the run
   config);
3. score the initial model on every site's validation split (round 0);
4. the rounds (FedAvg, FedProx or a robust strategy); after each, the global model is
   checkpointed (and kept as ``best.pt`` when the sites' mean validation Dice on their own
   labels improves);
5. score the final model on every site's test split; write ``summary.json`` and print the
   per-site, per-structure table;
6. send the signed final model to every connected site, which verifies and keeps it for
   ``fl-client predict`` (:mod:`fl_server.delivery`; only when the coordinator signs).

Everything goes to ``output-dir``: ``metrics.jsonl`` (every round x site x structure),
``tensorboard/`` (the same per-round numbers as TensorBoard scalars; run setting
``tensorboard``), ``checkpoints/``, ``summary.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from pathlib import Path

import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from common.audit import AuditLog
from common.errors import ConfigError, DataError
from common.federation import protocol
from common.federation.protocol import EvaluateInstruction, TrainInstruction
from common.federation.run_settings import RunSettings, parse_run_settings
from common.files import write_atomic
from common.labels import format_labelled_set
from common.model_card import card_meta
from common.recipe import SERVER_OPTIMISERS, recipe_to_flat
from common.security.checkpoint import load_checkpoint, save_checkpoint
from common.security.pki import load_signing_key, load_verify_key
from common.timing import Stopwatch
from common.training.class_slices import class_owners
from common.training.model import build_unet, required_divisor
from common.training.scoring import format_table
from common.training.warmup import NETWORK_IMPORTS, import_in_background
from fl_server.admission import SiteAdmission
from fl_server.delivery import deliver_final_model
from fl_server.metrics_log import (
    MetricsLog,
    MlflowTarget,
    is_relative_sqlite,
    read_metrics_log,
)
from fl_server.negotiation import (
    FederationError,
    SiteInfo,
    describe,
    partial_structures,
    query_sites,
)
from fl_server.polling import prompt
from fl_server.resume import (
    find_resume_point,
    optimiser_state_path,
    prune_optimiser_states,
    read_optimiser_state,
    schedule_change,
    trim_log,
    write_optimiser_state,
)
from fl_server.strategy import EchoRounds, MeanRule, make_strategy
from fl_server.update_gate import UpdateGate

log = logging.getLogger("echofl.server")
app = ServerApp()


def say(message: str) -> None:
    """Progress for the operator: the ServerApp's output is what `flwr run --stream` shows."""
    print(f"[echofl] {message}", flush=True)


def dice_line(metrics: dict) -> str:
    """``LV 0.912 MYO 0.803`` for the structures scored (full ground truth where present)."""
    return " ".join(f"{s.name} {d:.3f}" for s, d in protocol.scored_dice(metrics).items())


@app.main()
def main(grid: Grid, context: Context) -> None:
    settings = parse_run_settings(context.run_config)
    import_in_background(NETWORK_IMPORTS)  # for the initial model, while the sites start up
    run = FederatedRun(settings, grid)
    status = "FAILED"
    try:
        run.run()
        status = "FINISHED"
    except FederationError as exc:
        say(
            f"STOPPED: {exc}. Every checkpoint written so far is kept in "
            f"{settings.output_path / 'checkpoints'}; continue later with "
            "fl-server run --resume <run> (or the run config resume=true)."
        )
        run.log.event("stopped", reason=str(exc))
        raise
    finally:
        run.log.close(status)


class FederatedRun:
    """One federated training run on the coordinator (see the module docstring)."""

    def __init__(self, settings: RunSettings, grid: Grid) -> None:
        self.settings = settings
        self.grid = prompt(grid)  # replies noticed within 0.1 s, not Flower's 3 s naps
        self.out = settings.output_path
        self.out.mkdir(parents=True, exist_ok=True)
        self.checkpoints = self.out / "checkpoints"
        self.signing_key = (
            load_signing_key(Path(settings.signing_key)) if settings.signing_key else None
        )
        self.best = {"score": -math.inf, "round": 0}
        self.round_started = time.perf_counter()
        self.audit = AuditLog(Path(settings.audit_log)) if settings.audit_log else None
        # after everything that can refuse to start: an MLflow run is never left RUNNING
        self.log = MetricsLog(
            self.out / "metrics.jsonl",
            self.out / "tensorboard" if settings.tensorboard else None,
            mlflow_target(settings),
        )
        self.admission = SiteAdmission(
            lambda g, nodes: query_sites(g, nodes, settings.round_timeout),
            registry=settings.site_registry,
            log=self.log,
            say=say,
            audit=self.audit,
        )

    # -- steps --------------------------------------------------------------------------------
    def negotiate(self) -> list[SiteInfo]:
        s = self.settings
        self.admission.wait_for(self.grid, s.min_sites, s.sites_timeout)
        self.admission.announce = True
        infos = sorted(self.admission.sites.values(), key=lambda i: i.name)
        partial = partial_structures(infos)
        self.log.event(
            "negotiated",
            sites={i.name: sorted(x.name for x in i.labelled) for i in infos},
            counts={i.name: i.counts for i in infos},
            partial=sorted(x.name for x in partial),
            label_dropout_p=s.recipe.label_dropout.p,
            server_rounds=s.num_server_rounds,
        )
        say(f"sites: {describe(infos)}")
        say(
            f"partially labelled across the federation: {format_labelled_set(partial)}; "
            f"label dropout p = {s.recipe.label_dropout.p}"
        )
        return infos

    def starting_point(self) -> tuple[ArrayRecord, int]:
        """(initial global weights, last completed round): fresh, fine-tuned or resumed."""
        s = self.settings
        verify_key = self.signing_key.public_key() if self.signing_key is not None else None
        if s.resume:
            point = find_resume_point(self.out)
            if point.checkpoint is not None:
                dropped = trim_log(self.out, point.completed)
                state, _ = load_checkpoint(
                    point.checkpoint, verify_key=verify_key, expect_run=self.out.name
                )
                self.best.update(score=point.best_score, round=point.best_round)
                self.log.event("resumed", after_round=point.completed, rows_dropped=dropped)
                changed = schedule_change(
                    read_metrics_log(self.log.path),
                    s.num_server_rounds,
                    s.recipe.optimiser.lr_schedule,
                )
                if changed:
                    self.log.event("schedule-changed", reason=changed)
                    say(f"warning: {changed}")
                say(
                    f"resuming after round {point.completed} (from {point.checkpoint.name}; "
                    f"{dropped} row(s) of an unfinished round dropped from the log)"
                )
                return ArrayRecord(state), point.completed
            say("resume requested but no completed round found: starting from the beginning")
        torch.manual_seed(s.seed)
        model = build_unet(s.recipe.model)
        if s.initial_checkpoint:
            model.load_state_dict(initial_state(s, self.signing_key))
            say(f"starting from {s.initial_checkpoint} (signature verified)")
        return ArrayRecord(model.state_dict()), -1

    def metadata(
        self, server_round: int, validation: dict | None = None, role: str = "round"
    ) -> dict:
        """What a checkpoint's sidecar records besides the weights (signed with them)."""
        meta = {
            "run": self.out.name,
            "role": role,
            "round": server_round,
            **card_meta(self.settings.recipe),  # how to apply the weights (common/model_card.py)
        }
        return meta if validation is None else {**meta, "validation": validation}

    def audit_checkpoint(self, path: Path, server_round: int) -> None:
        if self.audit is not None:
            self.audit.record(
                "checkpoint-written",
                run=self.out.name,
                file=path.name,
                round=server_round,
                sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
            )

    def checkpoint(
        self,
        server_round: int,
        arrays: ArrayRecord,
        validation: dict,
        clock: Stopwatch | None = None,
    ) -> None:
        """The explicit end of a round: its checkpoint, ``best.pt`` when the sites' mean
        validation Dice on their own labels improved, the ``round-done`` event."""
        s = self.settings
        meta = self.metadata(server_round, validation)
        state = arrays.to_torch_state_dict()
        written = self.checkpoints / f"round-{server_round:04d}.pt"
        save_checkpoint(written, state, meta, self.signing_key)
        self.audit_checkpoint(written, server_round)
        score = protocol.mean_dice(validation)
        if server_round > 0 and score > self.best["score"]:
            self.best.update(score=score, round=server_round)
            best = {**meta, "role": "best"}
            save_checkpoint(self.checkpoints / "best.pt", state, best, self.signing_key)
            self.audit_checkpoint(self.checkpoints / "best.pt", server_round)
        if server_round > 0:
            self.save_optimiser_state(server_round)  # before round-done: a resume needs it
            seconds = time.perf_counter() - self.round_started
            trained = self.strategy.participants.get(server_round, [])
            say(
                f"round {server_round}/{s.num_server_rounds} done in {seconds:.1f}s: "
                f"{len(trained)} site(s) trained; val Dice {dice_line(validation)}"
            )
            self.log.event(
                "round-done",
                round=server_round,
                seconds=round(seconds, 3),
                sites=trained,
                score=None if math.isnan(score) else score,
                rss_mb=resident_mb(),
                # where the round's time went, on the coordinator
                **({} if clock is None else clock.laps("checkpoint")),
            )
            prune_optimiser_states(self.checkpoints, server_round)
        self.round_started = time.perf_counter()

    def save_optimiser_state(self, server_round: int) -> None:
        """The server optimiser's memory after ``server_round`` (nothing for FedAvg)."""
        state = self.strategy.optimiser_state()
        if not state:
            return
        meta = {
            "run": self.out.name,
            "role": "server-optimiser",
            "round": server_round,
            "strategy": self.settings.recipe.aggregation.strategy,
        }
        path = optimiser_state_path(self.checkpoints, server_round)
        write_optimiser_state(path, state, meta, self.signing_key)

    def restore_optimiser_state(self, completed: int) -> None:
        """After a resume: the server optimiser's memory of the last completed round."""
        strategy = self.settings.recipe.aggregation.strategy
        if completed < 1 or not self.strategy.keeps_state:
            return
        path = optimiser_state_path(self.checkpoints, completed)
        if not path.is_file():
            say(
                f"no server-optimiser state for round {completed} ({path.name}, e.g. a run "
                f"from an older echofl): {strategy}'s momentum restarts from zero"
            )
            self.log.event("optimiser-state-missing", round=completed, file=path.name)
            return
        verify_key = self.signing_key.public_key() if self.signing_key is not None else None
        state, sidecar = read_optimiser_state(path, verify_key, self.out.name)
        if sidecar.get("strategy") != strategy or sidecar.get("round") != completed:
            raise DataError(
                path,
                f"server-optimiser state of {sidecar.get('strategy')!r} round "
                f"{sidecar.get('round')!r}, but this run resumes {strategy!r} after round "
                f"{completed}: refused",
            )
        try:
            self.strategy.restore_optimiser_state(state)
        except ValueError as exc:
            raise DataError(path, f"server-optimiser state does not fit: {exc}") from None
        self.log.event("optimiser-state-restored", round=completed, file=path.name)
        say(f"{strategy}'s state after round {completed} restored ({path.name})")

    def one_round(
        self, server_round: int, arrays: ArrayRecord, instruction: TrainInstruction
    ) -> ArrayRecord:
        """Train on the admitted sites, aggregate, validate, checkpoint."""
        s, strategy = self.settings, self.strategy
        clock = Stopwatch("-s")  # the round-done event's <step>-s fields
        messages = strategy.configure_train(
            server_round, arrays, ConfigRecord(instruction.to_config()), self.grid
        )
        clock.lap("configure")
        replies = self.grid.send_and_receive(messages, timeout=s.round_timeout)
        clock.lap("train-exchange")
        aggregated, _ = strategy.aggregate_train(server_round, replies)
        arrays = aggregated if aggregated is not None else arrays
        clock.lap("aggregate")
        validation: dict = {}
        if s.federated_evaluation and s.fraction_evaluate > 0:
            config = ConfigRecord(EvaluateInstruction("val", server_round).to_config())
            messages = strategy.configure_evaluate(server_round, arrays, config, self.grid)
            replies = self.grid.send_and_receive(messages, timeout=s.round_timeout)
            validation = dict(strategy.aggregate_evaluate(server_round, replies) or {})
            clock.lap("evaluate")
        self.checkpoint(server_round, arrays, validation, clock)
        return arrays

    def distribute(self, final: Path) -> dict[str, str]:
        """The signed final model to every connected site (site -> "stored" or its reason)."""
        s = self.settings
        if not s.distribute_model:
            return {}
        if self.signing_key is None:
            say("final model not sent to the sites: the coordinator signs no models here")
            return {}
        nodes = {n: self.admission.name_of(n) for n in self.grid.get_node_ids()}
        nodes = {n: name for n, name in nodes.items() if n in self.admission.sites}
        outcome = deliver_final_model(self.grid, final, nodes, s.round_timeout, say)
        digest = hashlib.sha256(final.read_bytes()).hexdigest()
        for site, result in sorted(outcome.items()):
            self.log.event("model-delivered", site=site, result=result)
            if self.audit is not None:
                self.audit.record(
                    "model-delivered",
                    run=self.out.name,
                    site=site,
                    result=result,
                    sha256=digest,
                )
        return outcome

    def run(self) -> None:
        s = self.settings
        started = time.perf_counter()
        infos = self.negotiate()
        initial, completed = self.starting_point()
        reference = {k: v.numpy() for k, v in initial.items()}
        gate = UpdateGate(
            reference,
            transfer_dtype=s.transfer_dtype,
            norm_factor=s.update_norm_factor,
            min_change=s.update_min_change,
            log=self.log,
        )
        rule = s.recipe.aggregation
        if not rule.uses_mean and (rule.label_aware or rule.step_normalised):
            say(
                f"{rule.strategy} uses no mean: label-aware / step-normalised averaging do not "
                "apply to it"
            )
        self.strategy: EchoRounds = make_strategy(
            s,
            admission=self.admission,
            gate=gate,
            log=self.log,
            updates_dir=self.out / "updates" if s.save_updates else None,
            mean=mean_rule(s),
        )
        self.restore_optimiser_state(completed)
        if completed < 0:  # a fresh run: score the initial model (round 0)
            if s.federated_evaluation:
                round0 = self.strategy.score(
                    self.grid,
                    initial,
                    [i.node_id for i in infos],
                    EvaluateInstruction("val", 0),
                    s.round_timeout,
                )
                say(f"round 0 (initial model): val Dice {dice_line(round0) if round0 else 'n/a'}")
            self.checkpoint(0, initial, {})
            completed = 0
        partial = partial_structures(infos)
        self.log.event(
            "train-config",
            **TrainInstruction(0, partial).to_config(),
            **recipe_to_flat(s.recipe),
        )
        final = initial
        for server_round in range(completed + 1, s.num_server_rounds + 1):
            final = self.one_round(
                server_round,
                final,
                TrainInstruction(server_round, partial, server_rounds=s.num_server_rounds),
            )
        save_checkpoint(
            self.checkpoints / "final.pt",
            final.to_torch_state_dict(),
            self.metadata(s.num_server_rounds, role="final"),
            self.signing_key,
        )
        self.audit_checkpoint(self.checkpoints / "final.pt", s.num_server_rounds)
        test: dict = {}
        if s.federated_evaluation:
            nodes = self.admission.wait_for(self.grid, 1, s.sites_timeout)
            test = self.strategy.score(
                self.grid,
                final,
                nodes,
                EvaluateInstruction("test", s.num_server_rounds),
                s.round_timeout,
            )
        delivered = self.distribute(self.checkpoints / "final.pt")
        rows = _final_test_rows(self.log.path, s.num_server_rounds)
        summary = {
            "rounds": s.num_server_rounds,
            "sites": {i.name: sorted(x.name for x in i.labelled) for i in infos},
            "partial_structures": sorted(x.name for x in partial),
            "label_dropout_p": s.recipe.label_dropout.p,
            "strategy": s.recipe.aggregation.strategy,
            "best_round": self.best["round"],
            "seconds": round(time.perf_counter() - started, 2),
            "test": {r["site"]: r for r in rows},
            "test_aggregate": test,
            "final_model_delivered": delivered,
        }
        write_atomic(self.out / "summary.json", json.dumps(summary, indent=2, default=str).encode())
        table = format_table({r["site"]: protocol.metrics_to_row(r) for r in rows}, scored_on=True)
        say("final model on each site's test split:\n" + table)
        say(f"done in {summary['seconds']:.0f}s; outputs in {self.out}")


def mean_rule(settings: RunSettings) -> MeanRule:
    """The strategy's mean: the class of every weight (derived from the network, for
    label-aware averaging and the drift measurement), the buffers a server optimiser must not
    step, the local steps of a site."""
    recipe = settings.recipe
    model = build_unet(recipe.model)
    rule = recipe.aggregation
    return MeanRule(
        owners=class_owners(model, size=2 * required_divisor(recipe.model)),
        label_aware=rule.effective_label_aware,
        step_normalised=rule.effective_step_normalised,
        buffers=(
            tuple(name for name, _ in model.named_buffers())
            if rule.strategy in SERVER_OPTIMISERS
            else ()
        ),
        epochs=recipe.train.epochs,
        batch_size=recipe.train.batch_size,
    )


def mlflow_target(settings: RunSettings) -> MlflowTarget | None:
    uri = settings.mlflow_tracking_uri
    if not uri:
        return None
    if is_relative_sqlite(uri):
        raise ConfigError(
            "run config",
            f"mlflow-tracking-uri {uri!r} is a relative path, which the ServerApp would resolve "
            "in its own working folder: give an absolute one (sqlite:////abs/path/mlflow.db); "
            "fl-server run and simulations/run.py make a relative one absolute for you",
        )
    return MlflowTarget(
        uri,
        settings.mlflow_experiment,
        settings.mlflow_run_name or settings.output_path.name,
    )


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
    return sorted(
        (
            r
            for r in read_metrics_log(path)
            if r.get("phase") == "test" and r.get("round") == server_round and r.get("site") != "*"
        ),
        key=lambda r: r["site"],
    )
