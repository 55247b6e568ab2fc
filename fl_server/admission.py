"""Which connected nodes are sites of this run: query, registry check, waiting with a deadline.

One collaborator of the strategy, testable without Flower's engine: anything with
``get_node_ids()`` is a grid, and the query is a function ``(grid, node_ids) -> [SiteInfo]``.
A node seen for the first time is queried and its declared name checked against the registry;
it is admitted (a site of the run from then on) or refused (never asked again). A node that
does not answer the query stays unknown and is asked again the next time; one that answers with
an error (a site that did not pin this app refuses it) is reported once per failure, with the
site's reason, and asked again only after ``retry_seconds``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from common.audit import AuditLog
from common.version import software as software_versions
from common.version import software_differences, software_refusal
from fl_server.metrics_log import MetricsLog
from fl_server.negotiation import (
    FederationError,
    QueryFailure,
    SiteInfo,
    check_registered_names,
)


class NodeSource(Protocol):
    def get_node_ids(self) -> Any: ...


Query = Callable[[Any, list[int]], list[SiteInfo | QueryFailure]]


class SiteAdmission:
    """Admitted sites by node id; ``say`` tells the operator, ``log`` keeps the events."""

    def __init__(
        self,
        query: Query,
        *,
        registry: str,
        log: MetricsLog,
        say: Callable[[str], None] = lambda _: None,
        poll_seconds: float = 1.0,
        retry_seconds: float = 60.0,
        audit: AuditLog | None = None,
        software: dict[str, str] | None = None,
    ) -> None:
        self.query = query
        # the coordinator's own versions, which a site's must fit (common.version)
        self.software = software_versions() if software is None else software
        self.registry = registry
        self.log = log
        self.say = say
        self.poll_seconds = poll_seconds
        self.retry_seconds = retry_seconds
        self.audit = audit  # the coordinator's audit trail: every admission and refusal
        self.failed: dict[int, float] = {}  # node -> when to ask again
        self.sites: dict[int, SiteInfo] = {}
        self.refused: set[int] = set()
        self.announce = False  # after the negotiation, every new site is announced as joined

    def name_of(self, node_id: int) -> str:
        site = self.sites.get(node_id)
        return site.name if site is not None else f"node-{node_id}"

    def _audit(self, event: str, info: SiteInfo, **fields: object) -> None:
        if self.audit is not None:
            run = self.log.path.parent.name
            self.audit.record(event, run=run, node=info.node_id, site=info.name, **fields)

    def refuse(self, info: SiteInfo, reason: str) -> None:
        self.refused.add(info.node_id)
        self.log.event("site-refused", node=info.node_id, site=info.name, reason=reason)
        self._audit("site-refused", info, reason=reason)
        self.say(f"refused node {info.node_id}: {reason}")

    def admit_new(self, grid: NodeSource) -> None:
        """Query the nodes not seen before; admit or refuse each that answers."""
        now = time.monotonic()
        new = sorted(
            n
            for n in grid.get_node_ids()
            if n not in self.sites and n not in self.refused and self.failed.get(n, 0.0) <= now
        )
        if not new:
            return
        results = self.query(grid, new)
        for failure in (r for r in results if isinstance(r, QueryFailure)):
            self.failed[failure.node_id] = now + self.retry_seconds
            self.log.event("site-error", phase="query", node=failure.node_id, reason=failure.reason)
            self.say(
                f"node {failure.node_id} could not join: {failure.reason} (asked again in "
                f"{self.retry_seconds:g} s)"
            )
        infos = [r for r in results if isinstance(r, SiteInfo)]
        answered, refused = check_registered_names(infos, self.registry)
        for info in answered:
            taken = {s.name for s in self.sites.values()}
            if info.name in taken:
                refused.append((info, f"site {info.name!r} is already connected as another node"))
                continue
            if info.software:
                reason = software_refusal(self.software, info.software)
                if reason is not None:
                    refused.append((info, reason))
                    continue
                differs = software_differences(self.software, info.software)
                if differs:
                    self.log.event("site-software-differs", site=info.name, versions=differs)
                    said = ", ".join(f"{k} {a} here, {b} there" for k, (a, b) in differs.items())
                    self.say(f"site {info.name}: other versions ({said})")
            self.sites[info.node_id] = info
            self._audit("site-admitted", info, labelled=sorted(x.name for x in info.labelled))
            if self.announce:
                self.log.event(
                    "site-admitted",
                    node=info.node_id,
                    site=info.name,
                    labelled=sorted(x.name for x in info.labelled),
                )
                self.say(f"site {info.name} joined (node {info.node_id})")
        for info, reason in refused:
            self.refuse(info, reason)

    def online(self, grid: NodeSource) -> list[int]:
        """Admitted sites that are connected now (new nodes are checked first)."""
        self.admit_new(grid)
        return sorted(n for n in grid.get_node_ids() if n in self.sites)

    def wait_for(self, grid: NodeSource, minimum: int, timeout: float) -> list[int]:
        """At least ``minimum`` admitted, connected sites, or :class:`FederationError` after
        ``timeout`` seconds (Flower's own sampling would wait forever)."""
        deadline = time.monotonic() + timeout
        while True:
            nodes = self.online(grid)
            if len(nodes) >= minimum:
                return nodes
            if time.monotonic() > deadline:
                raise FederationError(
                    f"only {len(nodes)} site(s) connected after {timeout:.0f}s; "
                    f"at least {minimum} needed (min-sites)"
                )
            time.sleep(self.poll_seconds)
