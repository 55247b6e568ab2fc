"""Flower strategies with echofl's bookkeeping: per-site metrics, dtype-faithful aggregation.

The aggregation itself is Flower's (FedAvg / FedProx: sample-weighted mean of the sites'
weights, weight = ``num-examples``). Around it, echofl logs every site's reply per round,
restores each tensor's dtype after averaging (BatchNorm's integer ``num_batches_tracked``
would otherwise come back as float64), optionally saves the sites' returned weights (for
checking FedAvg end to end), and aggregates Dice per structure weighted by the number of
images that scored it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedMedian, FedProx, FedTrimmedAvg

from common.metrics import STRUCTURES
from common.packing import PACKED_FLOAT, is_packed, pack, unpack
from common.run_settings import RunSettings
from fl_server.metrics_log import MetricsLog
from fl_server.negotiation import FederationError
from fl_server.validation import validate_updates

SCORE_PREFIXES = ("", "full-")


def aggregate_site_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Dice per structure weighted by how many images scored it (``n-X``); every other metric
    weighted by ``weight_key`` (``num-examples``); counts summed."""
    rows = [dict(next(iter(r.metric_records.values()))) for r in records]
    out: dict[str, float] = {}
    total = sum(float(r.get(weight_key, 0.0)) for r in rows)
    structure_keys = set()
    for prefix in SCORE_PREFIXES:
        for s in STRUCTURES:
            n_key, d_key, a_key = (
                f"{prefix}n-{s.name}",
                f"{prefix}dice-{s.name}",
                f"{prefix}area-{s.name}",
            )
            if n_key not in rows[0]:
                continue
            structure_keys |= {n_key, d_key, a_key}
            n = sum(float(r[n_key]) for r in rows)
            out[n_key] = n
            if n > 0:
                out[d_key] = sum(float(r[d_key]) * float(r[n_key]) for r in rows) / n
                out[a_key] = sum(float(r[a_key]) * float(r[n_key]) for r in rows) / n
    for key in rows[0]:
        if key in structure_keys:
            continue
        if key == weight_key:
            out[key] = total
        elif total > 0:
            out[key] = sum(float(r[key]) * float(r.get(weight_key, 0.0)) for r in rows) / total
    return MetricRecord(out)


def mean_dice(metrics: Mapping[str, float], prefix: str = "") -> float:
    """Mean of the per-structure Dice present in an aggregate (NaN when none)."""
    values = [
        metrics[f"{prefix}dice-{s.name}"]
        for s in STRUCTURES
        if metrics.get(f"{prefix}n-{s.name}", 0) > 0
    ]
    return float(np.mean(values)) if values else float("nan")


class SiteBookkeeping:
    """Mixin for a Flower strategy: waits for sites with a deadline, continues round numbers
    after a resume, validates updates before aggregation, logs per-site replies, keeps dtypes,
    remembers the last aggregated validation metrics."""

    def setup_bookkeeping(
        self,
        *,
        sites: Mapping[int, str],
        log: MetricsLog,
        reference: ArrayRecord,
        updates_dir: Path | None,
        min_sites: int = 1,
        sites_timeout: float = 600.0,
        round_offset: int = 0,
        norm_factor: float = 0.0,
        admit: Callable[[Grid, list[int]], None] | None = None,
        transfer_float16: bool = False,
        pack_weights: bool = False,
    ) -> None:
        self.site_names = dict(sites)
        self.metrics_log = log
        self.dtypes = {k: v.numpy().dtype for k, v in reference.items()}
        self.updates_dir = updates_dir
        self.last_validation: dict[str, float] = {}
        self.participants: dict[int, list[str]] = {}
        self.min_sites = min_sites
        self.sites_timeout = sites_timeout
        self.round_offset = round_offset
        self.norm_factor = norm_factor
        self.current: dict[str, np.ndarray] = {}
        self.refused: set[int] = set()
        self.admit = admit
        self.transfer_float16 = transfer_float16
        self.transfer_dtype = "float16" if transfer_float16 else "float32"
        self.pack = pack_weights
        self.reference = {k: v.numpy() for k, v in reference.items()}

    def admitted(self, grid: Grid) -> list[int]:
        """Connected nodes that are known sites; nodes seen for the first time are checked
        first (query + registry) through the ``admit`` hook."""
        online = sorted(grid.get_node_ids())
        new = [n for n in online if n not in self.site_names and n not in self.refused]
        if new and self.admit is not None:
            self.admit(grid, new)
        return [n for n in online if n in self.site_names]

    def wait_for_admitted(self, grid: Grid) -> list[int]:
        """At least ``min_sites`` admitted sites, or :class:`FederationError` after the
        deadline (Flower's own sampling would wait forever)."""
        deadline = time.monotonic() + self.sites_timeout
        while True:
            nodes = self.admitted(grid)
            if len(nodes) >= self.min_sites:
                return nodes
            if time.monotonic() > deadline:
                raise FederationError(
                    f"only {len(nodes)} site(s) connected after {self.sites_timeout:.0f}s; "
                    f"at least {self.min_sites} needed (min-sites)"
                )
            time.sleep(1.0)

    def outgoing(self, arrays: ArrayRecord) -> ArrayRecord:
        """The global weights as they travel (packed into two flat arrays by default)."""
        if not self.pack:
            return arrays
        return ArrayRecord(
            {k: Array(v) for k, v in pack({k: a.numpy() for k, a in arrays.items()}).items()}
        )

    def _unpack(self, server_round: int, replies: list[Message]) -> list[Message]:
        """Packed replies back to per-tensor weights; a reply that does not fit the model (or
        was packed in another dtype than the run's transfer dtype) is rejected and logged."""
        kept = []
        for msg in replies:
            records = msg.content.array_records if not msg.has_error() else {}
            if len(records) != 1 or not is_packed(next(iter(records.values())).keys()):
                kept.append(msg)
                continue
            key, record = next(iter(records.items()))
            arrays = {k: v.numpy() for k, v in record.items()}
            try:
                if arrays[PACKED_FLOAT].dtype != np.dtype(self.transfer_dtype):
                    raise ValueError(
                        f"packed weights are {arrays[PACKED_FLOAT].dtype}, the run "
                        f"transfers {self.transfer_dtype}"
                    )
                msg.content[key] = ArrayRecord(
                    {k: Array(v) for k, v in unpack(arrays, self.reference).items()}
                )
                kept.append(msg)
            except (KeyError, ValueError) as exc:
                self.metrics_log.event(
                    "update-rejected",
                    round=server_round,
                    site=self.site_of(msg.metadata.src_node_id),
                    reason=str(exc),
                )
        return kept

    def _only_admitted(self, messages: Iterable[Message], nodes: list[int]) -> list[Message]:
        return [m for m in messages if m.metadata.dst_node_id in nodes]

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        nodes = self.wait_for_admitted(grid)
        self.current = {k: v.numpy() for k, v in arrays.items()}
        arrays = self.outgoing(arrays)
        return self._only_admitted(
            super().configure_train(  # type: ignore[misc]
                server_round + self.round_offset, arrays, config, grid
            ),
            nodes,
        )

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        nodes = self.wait_for_admitted(grid)
        arrays = self.outgoing(arrays)
        return self._only_admitted(
            super().configure_evaluate(  # type: ignore[misc]
                server_round + self.round_offset, arrays, config, grid
            ),
            nodes,
        )

    def site_of(self, node_id: int) -> str:
        return self.site_names.get(node_id, f"node-{node_id}")

    def _log_replies(self, server_round: int, phase: str, replies: list[Message]) -> None:
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                self.metrics_log.event(
                    "site-error",
                    round=server_round,
                    phase=phase,
                    site=self.site_of(node),
                    node=node,
                    code=msg.error.code,
                    reason=msg.error.reason,
                )
            else:
                metrics = next(iter(msg.content.metric_records.values()))
                self.metrics_log.site_row(
                    server_round, phase, self.site_of(node), node, dict(metrics)
                )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        server_round += self.round_offset
        replies = list(replies)
        self._log_replies(server_round, "train", replies)
        if self.updates_dir is not None:  # what arrived, as it arrived
            self.audit_replies(server_round, "train", [m for m in replies if not m.has_error()])
        replies = self._unpack(server_round, replies)
        if self.transfer_float16:
            self._upcast(replies)
        if self.updates_dir is not None:  # every well-formed update is kept, rejected ones too
            self._save_updates(server_round, [m for m in replies if not m.has_error()])
        replies = self._validated(server_round, replies)
        ok = [m for m in replies if not m.has_error()]
        self.participants[server_round] = []  # the sites whose updates are in the global model
        if len(ok) < self.min_sites:
            self.metrics_log.event(
                "round-not-aggregated",
                round=server_round,
                reason=f"{len(ok)} valid update(s), {self.min_sites} needed (min-sites): "
                "the global model is unchanged",
            )
            return None, None
        self.participants[server_round] = sorted(self.site_of(m.metadata.src_node_id) for m in ok)
        arrays, metrics = super().aggregate_train(server_round, replies)  # type: ignore[misc]
        if arrays is not None:
            arrays = ArrayRecord(
                {
                    k: Array(np.asarray(v.numpy()).astype(self.dtypes.get(k, v.numpy().dtype)))
                    for k, v in arrays.items()
                }
            )
        if metrics is not None:
            self.metrics_log.site_row(server_round, "train", "*", 0, dict(metrics))
        return arrays, metrics

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        server_round += self.round_offset
        replies = list(replies)
        self._log_replies(server_round, "val", replies)
        if self.updates_dir is not None:
            self.audit_replies(server_round, "val", replies)
        metrics = super().aggregate_evaluate(server_round, replies)  # type: ignore[misc]
        if metrics is not None:
            self.last_validation = dict(metrics)
            self.metrics_log.site_row(server_round, "val", "*", 0, dict(metrics))
        return metrics

    def _upcast(self, replies: list[Message]) -> None:
        """Weights sent in float16 (``transfer-dtype``) back to the model's dtypes, in place,
        before validation and aggregation."""
        for msg in replies:
            if msg.has_error() or len(msg.content.array_records) != 1:
                continue
            key = next(iter(msg.content.array_records))
            record = msg.content.array_records[key]
            if any(v.numpy().dtype == np.float16 for v in record.values()):
                msg.content[key] = ArrayRecord(
                    {
                        k: Array(
                            v.numpy().astype(self.dtypes[k])
                            if v.numpy().dtype == np.float16
                            and k in self.dtypes
                            and self.dtypes[k].kind == "f"
                            else v.numpy()
                        )
                        for k, v in record.items()
                    }
                )

    def _validated(self, server_round: int, replies: list[Message]) -> list[Message]:
        """Drop the replies whose weights fail validation (logged with the site and reason)."""
        ok = [m for m in replies if not m.has_error()]
        if not ok or not self.current:
            return replies
        updates = []
        for msg in ok:
            records = list(msg.content.array_records.values())
            arrays = {k: v.numpy() for k, v in records[0].items()} if len(records) == 1 else {}
            updates.append((self.site_of(msg.metadata.src_node_id), arrays))
        accepted, rejected, norms = validate_updates(updates, self.current, self.norm_factor)
        for rejection in rejected:
            self.metrics_log.event(
                "update-rejected", round=server_round, site=rejection.site, reason=rejection.reason
            )
        if norms:
            self.metrics_log.event(
                "update-norms", round=server_round, norms={k: round(v, 6) for k, v in norms.items()}
            )
        keep = {id(ok[i]) for i in accepted}
        return [m for m in replies if m.has_error() or id(m) in keep]

    def audit_replies(self, server_round: int, phase: str, replies: list[Message]) -> None:
        """Log what each reply carried: record kinds, array count, metric value types."""
        for msg in replies:
            if msg.has_error():
                continue
            content = msg.content
            self.metrics_log.event(
                "reply-audit",
                round=server_round,
                phase=phase,
                site=self.site_of(msg.metadata.src_node_id),
                records={name: type(rec).__name__ for name, rec in content.items()},
                arrays={name: sorted(rec.keys()) for name, rec in content.array_records.items()},
                metrics={
                    name: {k: type(v).__name__ for k, v in rec.items()}
                    for name, rec in content.metric_records.items()
                },
            )

    def _save_updates(self, server_round: int, replies: list[Message]) -> None:
        assert self.updates_dir is not None
        self.updates_dir.mkdir(parents=True, exist_ok=True)
        for msg in replies:
            site = self.site_of(msg.metadata.src_node_id)
            arrays = next(iter(msg.content.array_records.values()))
            weight = float(next(iter(msg.content.metric_records.values()))["num-examples"])
            np.savez(
                self.updates_dir / f"round-{server_round:04d}-{site}.npz",
                __weight__=np.array(weight),
                **{k: v.numpy() for k, v in arrays.items()},
            )


class EchoFedAvg(SiteBookkeeping, FedAvg):
    """Flower's FedAvg with echofl's bookkeeping."""


class EchoFedProx(SiteBookkeeping, FedProx):
    """Flower's FedProx (sends ``proximal-mu``; sites add the proximal term)."""


class EchoFedMedian(SiteBookkeeping, FedMedian):
    """Flower's FedMedian: coordinate-wise median of the sites' weights (robust)."""


class EchoFedTrimmedAvg(SiteBookkeeping, FedTrimmedAvg):
    """Flower's trimmed mean: drops the ``trim-beta`` fraction at each end, per coordinate."""


def make_strategy(settings: RunSettings) -> SiteBookkeeping:
    common: dict[str, Any] = {
        "fraction_train": settings.fraction_train,
        "min_train_nodes": settings.min_sites,
        "fraction_evaluate": settings.fraction_evaluate if settings.federated_evaluation else 0.0,
        "min_evaluate_nodes": (
            settings.min_sites
            if settings.fraction_evaluate > 0 and settings.federated_evaluation
            else 0
        ),
        "min_available_nodes": settings.min_sites,
        "train_metrics_aggr_fn": aggregate_site_metrics,
        "evaluate_metrics_aggr_fn": aggregate_site_metrics,
    }
    if settings.strategy == "fedprox":
        return EchoFedProx(proximal_mu=settings.proximal_mu, **common)
    if settings.strategy == "fedmedian":
        return EchoFedMedian(**common)
    if settings.strategy == "fedtrimmedavg":
        return EchoFedTrimmedAvg(beta=settings.trim_beta, **common)
    return EchoFedAvg(**common)
