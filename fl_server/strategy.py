"""Flower strategies with echofl's collaborators: admission, the update gate, the metrics log.

The aggregation itself is Flower's (FedAvg / FedProx: sample-weighted mean of the sites'
weights, weight = ``num-examples``; FedMedian; trimmed mean). The strategy is a thin subclass:

* which nodes train or evaluate: :class:`fl_server.admission.SiteAdmission` (admitted sites
  only, at least ``min-sites`` of them, waiting with a deadline);
* what the global weights look like on the wire: :mod:`common.federation.protocol`;
* which replies are aggregated: :class:`fl_server.update_gate.UpdateGate` (decode + validate);
* what is recorded: :mod:`fl_server.replies` into the :class:`MetricsLog`.

After averaging, each tensor gets its model dtype back (BatchNorm's integer
``num_batches_tracked`` would otherwise come back as float64). Checkpoints are not written
here: the round loop in :mod:`fl_server.server_app` writes them after each round.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
)

from common.federation import protocol
from common.federation.protocol import ARRAYS, CONFIG, NUM_EXAMPLES, EvaluateInstruction
from common.federation.run_settings import RunSettings
from common.labels import BACKGROUND, Structure
from fl_server import aggregation, claims
from fl_server import replies as recorded
from fl_server.admission import SiteAdmission
from fl_server.aggregation import SiteUpdate
from fl_server.metrics_log import MetricsLog
from fl_server.update_gate import Reply, Update, UpdateGate


def aggregate_site_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Flower's metrics aggregation hook: :func:`common.federation.protocol.aggregate_metrics`
    over the replies' metric records."""
    rows = [dict(next(iter(r.metric_records.values()))) for r in records]
    return MetricRecord(protocol.aggregate_metrics(rows, weight_key))


def to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()})


def from_record(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


@dataclass
class MeanRule:
    """How echofl computes the mean the strategy starts from (see :mod:`fl_server.aggregation`).

    ``plain`` (no label-aware, no step normalisation): Flower averages the decoded weights
    itself. ``buffers``: running statistics a server optimiser must not step (averaged
    plainly). ``owners``: the class of each weight, for label-aware averaging and the drift
    measurement; ``epochs`` and ``batch_size`` give a site's local steps from its image count.
    """

    owners: dict[str, np.ndarray] | None = None
    label_aware: bool = False
    step_normalised: bool = False
    buffers: tuple[str, ...] = ()
    epochs: int = 1
    batch_size: int = 16

    @property
    def plain(self) -> bool:
        return not (self.label_aware or self.step_normalised)

    def steps(self, examples: float) -> float:
        return float(self.epochs * math.ceil(examples / self.batch_size))

    def combine(
        self, sites: list[SiteUpdate], current: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        return aggregation.aggregate(
            sites,
            current,
            owners=self.owners if self.label_aware else None,
            buffers=self.buffers,
            step_normalised=self.step_normalised,
        )

    def drift(self, sites: list[SiteUpdate], current: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Per structure: the share of its head's FedAvg-weighted change made by sites that do
        not annotate it (what label-aware averaging removes)."""
        if self.owners is None:
            return {}
        shares = aggregation.drift_shares(sites, current, self.owners, [int(s) for s in Structure])
        return {Structure(c).name: round(v, 6) for c, v in shares.items() if not math.isnan(v)}


class EchoRounds:
    """Mixin in front of a Flower strategy (see the module docstring)."""

    def __init__(
        self,
        *,
        admission: SiteAdmission,
        gate: UpdateGate,
        log: MetricsLog,
        min_sites: int,
        sites_timeout: float,
        pack_weights: bool,
        mean: MeanRule | None = None,
        updates_dir: Path | None = None,
        **flower: Any,
    ) -> None:
        super().__init__(**flower)  # type: ignore[call-arg]
        self.admission = admission
        self.gate = gate
        self.metrics_log = log
        self.min_sites = min_sites
        self.sites_timeout = sites_timeout
        self.pack_weights = pack_weights
        self.updates_dir = updates_dir
        self.mean = mean or MeanRule()
        self.current: dict[str, np.ndarray] = {}
        self.participants: dict[int, list[str]] = {}

    # -- what travels ---------------------------------------------------------------------------
    def outgoing(self, arrays: ArrayRecord) -> ArrayRecord:
        """The global weights as they travel (packed into two flat arrays by default)."""
        return to_record(protocol.encode_weights(from_record(arrays), packed=self.pack_weights))

    def _only_admitted(self, messages: Iterable[Message], nodes: list[int]) -> list[Message]:
        return [m for m in messages if m.metadata.dst_node_id in nodes]

    # -- Flower's hooks -------------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        nodes = self.admission.wait_for(grid, self.min_sites, self.sites_timeout)
        self.current = from_record(arrays)
        # Flower's server optimisers remember the arrays they are given here: the real weights
        messages = list(super().configure_train(server_round, arrays, config, grid))  # type: ignore[misc]
        wire = self.outgoing(arrays)
        for message in messages:
            message.content[ARRAYS] = wire
        return self._only_admitted(messages, nodes)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        nodes = self.admission.wait_for(grid, self.min_sites, self.sites_timeout)
        messages = super().configure_evaluate(  # type: ignore[misc]
            server_round, self.outgoing(arrays), config, grid
        )
        return self._only_admitted(messages, nodes)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        name_of = self.admission.name_of
        recorded.log_replies(self.metrics_log, server_round, "train", replies, name_of)
        ok = [m for m in replies if not m.has_error()]
        if self.updates_dir is not None:  # what arrived, as it arrived
            recorded.audit_replies(self.metrics_log, server_round, "train", ok, name_of)
        ok = self._believable(server_round, "train", ok)
        decoded = self.gate.decode(
            server_round,
            [Reply(name_of(m.metadata.src_node_id), _arrays(m), m) for m in ok],
        )
        if self.updates_dir is not None:  # every well-formed update is kept, rejected ones too
            recorded.save_updates(self.updates_dir, server_round, decoded)
        # in site order, not arrival order: the float sums (and so the run) are reproducible
        accepted = sorted(self.gate.validate(server_round, decoded, self.current), key=_site)
        self.participants[server_round] = []  # the sites whose updates are in the global model
        if len(accepted) < self.min_sites:
            self.metrics_log.event(
                "round-not-aggregated",
                round=server_round,
                reason=f"{len(accepted)} valid update(s), {self.min_sites} needed (min-sites): "
                "the global model is unchanged",
            )
            return None, None
        self.participants[server_round] = sorted(u.site for u in accepted)
        sites = [self._site_update(u) for u in accepted]
        mean = self.mean.combine(sites, self.current)
        for update in accepted:  # what Flower averages: the decoded weights, or echofl's mean
            msg: Message = update.key  # type: ignore[assignment]
            weights = update.weights if self.mean.plain else mean
            msg.content[_array_key(msg)] = to_record(weights)
        arrays, metrics = super().aggregate_train(  # type: ignore[misc]
            server_round, [u.key for u in accepted]
        )
        if arrays is not None and self.mean.buffers:
            # a server optimiser steps every array; running statistics are not parameters
            arrays = to_record({**from_record(arrays), **{k: mean[k] for k in self.mean.buffers}})
        drift = self.mean.drift(sites, self.current)
        if drift:
            self.metrics_log.event("class-drift", round=server_round, **drift)
        if arrays is not None:
            dtypes = {k: v.dtype for k, v in self.gate.reference.items()}
            arrays = to_record(
                {k: v.astype(dtypes.get(k, v.dtype)) for k, v in from_record(arrays).items()}
            )
        if metrics is not None:
            self.metrics_log.site_row(server_round, "train", "*", 0, dict(metrics))
        return arrays, metrics

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        replies = list(replies)
        name_of = self.admission.name_of
        recorded.log_replies(self.metrics_log, server_round, "val", replies, name_of)
        if self.updates_dir is not None:
            recorded.audit_replies(self.metrics_log, server_round, "val", replies, name_of)
        replies = self._believable(server_round, "val", [m for m in replies if not m.has_error()])
        metrics = super().aggregate_evaluate(server_round, replies)  # type: ignore[misc]
        if metrics is not None:
            self.metrics_log.site_row(server_round, "val", "*", 0, dict(metrics))
        return metrics

    def _believable(self, server_round: int, split: str, replies: list[Message]) -> list[Message]:
        """The replies whose metrics pass :func:`fl_server.claims.metric_problem` against the
        counts the site declared in the query round; a training reply's ``num-examples`` is
        then set to that count (the FedAvg weight is the coordinator's, not the reply's)."""
        kept = []
        for msg in replies:
            node = msg.metadata.src_node_id
            site = self.admission.sites.get(node)
            name = self.admission.name_of(node)
            records = list(msg.content.metric_records.values())
            size = site.counts.get(split, 0) if site is not None else 0
            if site is None:
                problem = "the reply is not from an admitted site"
            elif len(records) != 1:
                problem = f"the reply carries {len(records)} metric records, expected 1"
            else:
                problem = claims.metric_problem(records[0], size, training=split == "train")
            if problem is not None:
                if split == "train":
                    self.gate.reject(server_round, name, problem)
                else:
                    self.metrics_log.event(
                        "metrics-rejected",
                        round=server_round,
                        split=split,
                        site=name,
                        reason=problem,
                    )
                continue
            if split == "train":
                records[0][NUM_EXAMPLES] = float(size)
            kept.append(msg)
        return kept

    def _site_update(self, update: Update) -> SiteUpdate:
        msg: Message = update.key  # type: ignore[assignment]
        node = msg.metadata.src_node_id
        site = self.admission.sites.get(node)
        labelled = site.labelled if site is not None else frozenset()
        examples = float(next(iter(msg.content.metric_records.values()))[NUM_EXAMPLES])
        return SiteUpdate(
            update.site,
            update.weights,
            examples,
            frozenset({BACKGROUND, *(int(s) for s in labelled)}),
            self.mean.steps(examples),
        )

    # -- a server optimiser's memory, kept across a resume ----------------------------------------
    @property
    def keeps_state(self) -> bool:
        """Whether the strategy remembers anything between rounds (see below)."""
        return False

    def optimiser_state(self) -> dict[str, np.ndarray]:
        """What the strategy carries from one round to the next besides the global weights,
        as flat ``<part>/<array>`` keys (empty: nothing, as for FedAvg and the robust means)."""
        return {}

    def restore_optimiser_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Take back what :meth:`optimiser_state` returned (``ValueError`` if it does not fit)."""
        if state:
            raise ValueError(f"{type(self).__name__} keeps no optimiser state")

    # -- outside Flower's loop: round 0 and the final test ---------------------------------------
    def score(
        self,
        grid: Grid,
        arrays: ArrayRecord,
        node_ids: list[int],
        instruction: EvaluateInstruction,
        timeout: float,
    ) -> dict[str, float]:
        """One federated evaluation on ``node_ids``; returns the aggregate (empty when no site
        answered)."""
        content = RecordDict(
            {ARRAYS: self.outgoing(arrays), CONFIG: ConfigRecord(instruction.to_config())}
        )
        messages = [
            Message(content, dst_node_id=n, message_type=MessageType.EVALUATE) for n in node_ids
        ]
        replies = list(grid.send_and_receive(messages, timeout=timeout))
        r, split = instruction.server_round, instruction.split
        recorded.log_replies(self.metrics_log, r, split, replies, self.admission.name_of)
        replies = self._believable(r, split, [m for m in replies if not m.has_error()])
        rows = [dict(m.content[protocol.METRICS]) for m in replies]
        if not rows:
            return {}
        aggregate = protocol.aggregate_metrics(rows, NUM_EXAMPLES)
        self.metrics_log.site_row(r, split, "*", 0, aggregate)
        return aggregate


def _site(update: Update) -> str:
    return update.site


def _array_key(msg: Message) -> str:
    return next(iter(msg.content.array_records))


def _arrays(msg: Message) -> Mapping[str, Any]:
    records = msg.content.array_records
    return next(iter(records.values())) if len(records) == 1 else {}


class EchoFedAvg(EchoRounds, FedAvg):
    """Flower's FedAvg with echofl's collaborators."""


class EchoFedProx(EchoRounds, FedProx):
    """Flower's FedProx (the sites add the proximal term of the recipe)."""


class EchoFedMedian(EchoRounds, FedMedian):
    """Flower's FedMedian: coordinate-wise median of the sites' weights (robust)."""


class EchoFedTrimmedAvg(EchoRounds, FedTrimmedAvg):
    """Flower's trimmed mean: drops the ``trim-beta`` fraction at each end, per coordinate."""


def _parts(state: Mapping[str, np.ndarray], part: str) -> dict[str, np.ndarray]:
    """The arrays of ``state`` stored under ``<part>/<name>``, by name, in stored order."""
    prefix = f"{part}/"
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _flat(part: str, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {f"{part}/{k}": np.asarray(v) for k, v in arrays.items()}


class EchoFedAvgM(EchoRounds, FedAvgM):
    """Flower's FedAvgM: server SGD with momentum on the averaged change.

    Its memory is the momentum and its own copy of the global weights (Flower sets that copy
    once, in the first round, then steps it): both are kept across a resume."""

    @property
    def keeps_state(self) -> bool:
        return self.server_momentum > 0

    def optimiser_state(self) -> dict[str, np.ndarray]:
        if self.momentum_vector is None or self.current_arrays is None:
            return {}
        current = from_record(self.current_arrays)
        momentum = dict(zip(current, self.momentum_vector, strict=True))
        return {**_flat("current", current), **_flat("momentum", momentum)}

    def restore_optimiser_state(self, state: Mapping[str, np.ndarray]) -> None:
        current, momentum = _parts(state, "current"), _parts(state, "momentum")
        if set(current) != set(momentum) or not current:
            raise ValueError("FedAvgM state needs the same arrays under current/ and momentum/")
        self.current_arrays = to_record(current)
        self.momentum_vector = [momentum[k] for k in current]


class ServerMoments:
    """FedAdam's / FedYogi's memory: the first and second moments of the averaged change
    (Flower re-reads the weights themselves every round)."""

    m_t: dict[str, np.ndarray] | None
    v_t: dict[str, np.ndarray] | None

    @property
    def keeps_state(self) -> bool:
        return True

    def optimiser_state(self) -> dict[str, np.ndarray]:
        if not self.m_t or not self.v_t:
            return {}
        return {**_flat("m", self.m_t), **_flat("v", self.v_t)}

    def restore_optimiser_state(self, state: Mapping[str, np.ndarray]) -> None:
        m, v = _parts(state, "m"), _parts(state, "v")
        if set(m) != set(v) or not m:
            raise ValueError("server Adam/Yogi state needs the same arrays under m/ and v/")
        self.m_t, self.v_t = m, v


class EchoFedAdam(ServerMoments, EchoRounds, FedAdam):
    """Flower's FedAdam: server Adam on the averaged change (Reddi et al. 2021)."""


class EchoFedYogi(ServerMoments, EchoRounds, FedYogi):
    """Flower's FedYogi: server Yogi on the averaged change (Reddi et al. 2021)."""


def make_strategy(
    settings: RunSettings,
    *,
    admission: SiteAdmission,
    gate: UpdateGate,
    log: MetricsLog,
    updates_dir: Path | None = None,
    mean: MeanRule | None = None,
) -> EchoRounds:
    rule = settings.recipe.aggregation
    evaluate = settings.federated_evaluation and settings.fraction_evaluate > 0
    kwargs: dict[str, Any] = {
        "admission": admission,
        "gate": gate,
        "log": log,
        "min_sites": settings.min_sites,
        "sites_timeout": settings.sites_timeout,
        "pack_weights": settings.pack_weights,
        "updates_dir": updates_dir,
        "mean": mean,
        "fraction_train": settings.fraction_train,
        "min_train_nodes": settings.min_sites,
        "fraction_evaluate": settings.fraction_evaluate if evaluate else 0.0,
        "min_evaluate_nodes": settings.min_sites if evaluate else 0,
        "min_available_nodes": settings.min_sites,
        "train_metrics_aggr_fn": aggregate_site_metrics,
        "evaluate_metrics_aggr_fn": aggregate_site_metrics,
    }
    if rule.strategy == "fedprox":
        return EchoFedProx(proximal_mu=rule.proximal_mu, **kwargs)
    if rule.strategy == "fedmedian":
        return EchoFedMedian(**kwargs)
    if rule.strategy == "fedtrimmedavg":
        return EchoFedTrimmedAvg(beta=rule.trim_beta, **kwargs)
    if rule.strategy == "fedavgm":
        return EchoFedAvgM(
            server_learning_rate=rule.server_lr, server_momentum=rule.server_momentum, **kwargs
        )
    if rule.strategy in ("fedadam", "fedyogi"):
        cls = EchoFedAdam if rule.strategy == "fedadam" else EchoFedYogi
        return cls(
            eta=rule.server_lr,
            eta_l=settings.recipe.optimiser.lr,
            beta_1=rule.server_beta1,
            beta_2=rule.server_beta2,
            tau=rule.server_tau,
            **kwargs,
        )
    return EchoFedAvg(**kwargs)
