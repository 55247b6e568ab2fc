"""The end of a run: the final model, as signed, sent to every connected site.

Each site verifies it against the coordinator's public key it configured and keeps it for
``fl-client predict`` (:mod:`fl_client.models`); its reply carries the digest of what it kept.
A site that cannot keep it (no key configured, a refused signature, a full disk) answers with an
error: the run is not failed for it, and the operator is told which site has no model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from common.federation import protocol
from common.federation.protocol import FinalModel
from common.security.checkpoint import SIDECAR_SUFFIX


def final_model_message(model: FinalModel) -> RecordDict:
    """The message content: the weights file's bytes and its signed sidecar, unchanged."""
    records = model.to_records()
    return RecordDict(
        {
            protocol.MODEL_FILE: ArrayRecord(
                {"bytes": Array(np.asarray(records[protocol.MODEL_FILE]["bytes"]))}
            ),
            protocol.MODEL_CARD: ConfigRecord(records[protocol.MODEL_CARD]),
        }
    )


def deliver_final_model(
    grid: Grid,
    path: Path,
    nodes: dict[int, str],
    timeout: float,
    say: Callable[[str], None],
) -> dict[str, str]:
    """Send ``path`` (``final.pt``, signed) to ``nodes`` (node id -> site name); returns site ->
    ``"stored"`` or the site's reason for not keeping it (``"no answer"`` when none came)."""
    model = FinalModel(path.read_bytes(), json.loads(Path(str(path) + SIDECAR_SUFFIX).read_text()))
    content, expected = final_model_message(model), model.sidecar["sha256"]
    messages = [
        Message(
            content,
            dst_node_id=node,
            message_type=f"query.{protocol.FINAL_MODEL_ACTION}",
        )
        for node in nodes
    ]
    outcome = {name: "no answer" for name in nodes.values()}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        name = nodes.get(reply.metadata.src_node_id)
        if name is None:
            continue
        if reply.has_error():
            outcome[name] = reply.error.reason
            continue
        try:
            got = str(reply.content[protocol.STORED]["sha256"])
        except KeyError:
            outcome[name] = "malformed reply"
            continue
        outcome[name] = "stored" if got == expected else f"stored another model ({got[:12]}...)"
    stored = sorted(n for n, o in outcome.items() if o == "stored")
    say(f"final model sent to the sites: stored by {', '.join(stored) or 'none'}")
    for name, reason in sorted(outcome.items()):
        if reason != "stored":
            say(f"  site {name} did not keep the final model: {reason}")
    return outcome
