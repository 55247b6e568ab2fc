"""The query round: which sites are there, and what do they annotate?

Before training (and whenever a node connects later), the coordinator asks a site for its
labelled set and sample counts (nothing else travels; the layout is
:class:`common.federation.protocol.SiteDescription`) and checks its declared name against the
registry. From the admitted sites it computes the structures that are partially labelled across
the federation: the structures label dropout acts on. No site can know this alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from flwr.app import Message, MessageType, RecordDict
from flwr.serverapp import Grid

from common.errors import EchoflError
from common.federation.protocol import COUNTS, SITE, ProtocolError, SiteDescription
from common.labels import LabelledSet, format_labelled_set, partially_labelled


@dataclass(frozen=True)
class SiteInfo:
    node_id: int
    name: str
    labelled: LabelledSet
    counts: dict[str, int]
    software: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class QueryFailure:
    """A node answered the query with an error (for example: the site refused to execute this
    app bundle because it did not pin it)."""

    node_id: int
    reason: str


class FederationError(EchoflError):
    """The federation cannot proceed (too few sites, no answers)."""


def query_sites(grid: Grid, node_ids: list[int], timeout: float) -> list[SiteInfo | QueryFailure]:
    """Send the query to every node; a node that answers with an error is a
    :class:`QueryFailure` (with the site's reason); nodes that do not answer or answer with a
    malformed description are left out."""
    messages = [
        Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY) for n in node_ids
    ]
    infos: list[SiteInfo | QueryFailure] = []
    for reply in grid.send_and_receive(messages, timeout=timeout):
        if reply.has_error():
            infos.append(QueryFailure(reply.metadata.src_node_id, reply.error.reason))
            continue
        try:
            site = SiteDescription.from_records(reply.content[SITE], reply.content[COUNTS])
        except (KeyError, ProtocolError):
            continue
        infos.append(
            SiteInfo(
                reply.metadata.src_node_id, site.name, site.labelled, site.counts, site.software
            )
        )
    return sorted(infos, key=lambda i: (isinstance(i, QueryFailure), getattr(i, "name", "")))


def check_registered_names(
    infos: list[SiteInfo],
    registry_path: str,
) -> tuple[list[SiteInfo], list[tuple[SiteInfo, str]]]:
    """Keep the sites whose declared name is the one their key was registered under
    (``fl-server register`` records name -> node id); a node that claims another site's name,
    or a name nobody registered, is left out. Without a registry file every site is kept."""
    path = Path(registry_path) if registry_path else None
    if path is None or not path.is_file():
        return infos, []
    registry = {k: int(v) for k, v in json.loads(path.read_text()).items()}
    kept, refused = [], []
    for info in infos:
        expected = registry.get(info.name)
        if expected == info.node_id:
            kept.append(info)
        elif expected is None:
            refused.append((info, f"no site named {info.name!r} is registered"))
        else:
            refused.append(
                (
                    info,
                    f"node {info.node_id} claims site {info.name!r}, which is "
                    f"registered to node {expected}",
                )
            )
    return kept, refused


def partial_structures(infos: list[SiteInfo]) -> LabelledSet:
    """Structures annotated by some sites of the federation but not by all."""
    return partially_labelled(i.labelled for i in infos)


def describe(infos: list[SiteInfo]) -> str:
    return "; ".join(
        f"{i.name} {format_labelled_set(i.labelled)} train {i.counts.get('train', 0)}"
        for i in infos
    )
