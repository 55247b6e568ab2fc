"""The update gate: what a site's training reply must pass before it is aggregated.

Decode (:func:`common.federation.protocol.decode_weights`: packed or per-tensor, float16 back
to the model's dtypes) and validate (:func:`fl_server.validation.validate_updates`: names,
shapes, dtypes, finite values, update norm against the other sites'). A reply that fails either
is left out, with the site and the reason logged (``update-rejected``); every well-formed
update's norm is logged (``update-norms``). No Flower here: replies come in as
:class:`Reply` values.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from common.federation.protocol import ProtocolError, decode_weights
from fl_server.metrics_log import MetricsLog
from fl_server.validation import validate_updates


@dataclass
class Reply:
    """One site's training reply as the gate sees it (``arrays`` as received)."""

    site: str
    arrays: Mapping[str, object]
    key: object = None  # the caller's handle on the message


@dataclass
class Update:
    """An accepted, decoded update."""

    site: str
    weights: dict[str, np.ndarray]
    key: object = None


class UpdateGate:
    def __init__(
        self,
        reference: Mapping[str, np.ndarray],
        *,
        transfer_dtype: str,
        norm_factor: float,
        log: MetricsLog,
        min_change: float = 0.0,
        history_rounds: int = 5,
    ) -> None:
        self.reference = dict(reference)  # names, shapes, dtypes of the model's state
        self.transfer_dtype = transfer_dtype
        self.norm_factor = norm_factor
        self.min_change = min_change
        self.log = log
        # the median accepted update norm of each recent round: the yardstick with two sites
        self.history: deque[float] = deque(maxlen=history_rounds)

    def decode(self, server_round: int, replies: list[Reply]) -> list[Update]:
        """Replies whose weights decode to the model's layout (the others logged)."""
        decoded = []
        for reply in replies:
            try:
                weights = decode_weights(reply.arrays, self.reference, dtype=self.transfer_dtype)
            except (KeyError, ProtocolError) as exc:
                self.reject(server_round, reply.site, str(exc))
                continue
            decoded.append(Update(reply.site, weights, reply.key))
        return decoded

    def validate(
        self, server_round: int, updates: list[Update], current: Mapping[str, np.ndarray]
    ) -> list[Update]:
        """The decoded updates that pass validation against ``current`` (the global model the
        round started from)."""
        if not updates:
            return []
        accepted, rejected, norms = validate_updates(
            [(u.site, u.weights) for u in updates],
            current,
            self.norm_factor,
            min_change=self.min_change,
            history=list(self.history),
        )
        kept = [norms[updates[i].site] for i in accepted]
        if kept:
            self.history.append(float(np.median(kept)))
        for rejection in rejected:
            self.reject(server_round, rejection.site, rejection.reason)
        if norms:
            self.log.event(
                "update-norms", round=server_round, norms={k: round(v, 6) for k, v in norms.items()}
            )
        return [updates[i] for i in accepted]

    def admit(
        self, server_round: int, replies: list[Reply], current: Mapping[str, np.ndarray]
    ) -> list[Update]:
        return self.validate(server_round, self.decode(server_round, replies), current)

    def reject(self, server_round: int, site: str, reason: str) -> None:
        self.log.event("update-rejected", round=server_round, site=site, reason=reason)
