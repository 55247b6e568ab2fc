"""What the coordinator records of the sites' replies: one metrics-log row per reply (or a
``site-error`` event), an audit of what each reply carried, and (research) the updates."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from flwr.app import Message

from fl_server.metrics_log import MetricsLog
from fl_server.update_gate import Update

NameOf = Callable[[int], str]


def log_replies(
    log: MetricsLog, server_round: int, phase: str, replies: list[Message], name_of: NameOf
) -> None:
    for msg in replies:
        node = msg.metadata.src_node_id
        if msg.has_error():
            log.event(
                "site-error",
                round=server_round,
                phase=phase,
                site=name_of(node),
                node=node,
                code=msg.error.code,
                reason=msg.error.reason,
            )
        else:
            metrics = next(iter(msg.content.metric_records.values()))
            log.site_row(server_round, phase, name_of(node), node, dict(metrics))


def audit_replies(
    log: MetricsLog, server_round: int, phase: str, replies: list[Message], name_of: NameOf
) -> None:
    """Log what each reply carried: record kinds, array names, metric value types."""
    for msg in replies:
        if msg.has_error():
            continue
        content = msg.content
        log.event(
            "reply-audit",
            round=server_round,
            phase=phase,
            site=name_of(msg.metadata.src_node_id),
            records={name: type(rec).__name__ for name, rec in content.items()},
            arrays={name: sorted(rec.keys()) for name, rec in content.array_records.items()},
            metrics={
                name: {k: type(v).__name__ for k, v in rec.items()}
                for name, rec in content.metric_records.items()
            },
        )


def save_updates(folder: Path, server_round: int, updates: list[Update]) -> None:
    """Each decoded update with its FedAvg weight (``__weight__``), for checking end to end."""
    folder.mkdir(parents=True, exist_ok=True)
    for update in updates:
        msg: Message = update.key  # type: ignore[assignment]
        weight = float(next(iter(msg.content.metric_records.values()))["num-examples"])
        np.savez(
            folder / f"round-{server_round:04d}-{update.site}.npz",
            __weight__=np.array(weight),
            **update.weights,
        )
