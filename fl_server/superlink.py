"""``python -m fl_server.superlink [flower-superlink arguments]``: Flower's SuperLink with its
per-round traffic in memory and only the sites' registrations in the database file.

Flower 1.42's SuperLink keeps everything in its ``--database``: the *link state* (registered
sites' keys and node ids, runs, every message's header and status, tasks, heartbeats) and the
*object store* (every message's content: the weights, object by object). With a database file
both are SQLAlchemy tables, and every message a ServerApp or a site pushes, pulls or marks is
one or more SQL transactions. On the 2-core benchmark machine that cost the coordinator 0.6-1.2
s to hand a round's three training messages to the SuperLink (0.1 s all in memory) and each
reply 0.96 s from its site to the ServerApp (0.32 s all in memory); a database on tmpfs was as
slow (the SQL path, not the disk). ``benchmarks/bench_deployment_overhead.py`` measures the two
side by side (docs/benchmarks.md, section 2).

What must survive a restart is what ``fl-server register`` wrote: each site's public key and
node id (the coordinator's registry, ``state/sites.json``, names sites by node id, and a
SuperNode authenticates with its key). A message and its content matter only while its round
is open, and an open round does not survive a SuperLink restart either way (its ServerApp loses
the SuperLink; ``fl-server run --resume`` continues from the coordinator's signed checkpoints).
So this launcher runs Flower's own ``flower-superlink`` entry point unchanged (same arguments,
behaviour and exit codes) with two factories swapped where ``flwr.superlink.config_loader``
builds them:

- the object store: Flower's in-memory store (the one every SuperNode and Flower's simulation
  use);
- the link state: Flower's ``InMemoryLinkState`` (the simulation's), whose node registrations
  (create, delete) also go to Flower's own SQL node table in the ``--database`` file and are
  read back from it at start, with the same node ids. The file keeps Flower's schema, so a
  coordinator can switch ``message_store`` back to ``"database"`` (plain ``flower-superlink``)
  and keep its registrations.

Runs are not kept: after a restart ``flwr ls`` (``fl-server status``) lists only the runs
started since (the coordinator's audit log and ``runs/`` keep every run). Not tested: a
SuperLink restart in the middle of a round (the open messages are then gone; the site should
report its task as failed). ``tests/deploy/test_superlink_launcher.py`` checks that the
installed Flower still builds both where this replaces them, and that registrations survive.
"""

from __future__ import annotations

import sys

from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
from flwr.server.superlink.linkstate.sql_linkstate import SqlLinkState
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME
from flwr.supercore.object_store import ObjectStore, ObjectStoreFactory
from flwr.superlink.federation import FederationManager


def in_memory_object_store(database: str) -> ObjectStoreFactory:
    """Flower's ``ObjectStoreFactory`` for ``database``, made in memory whatever it names."""
    del database  # the registrations keep it
    return ObjectStoreFactory(FLWR_IN_MEMORY_DB_NAME)


class KeptRegistrationsLinkState(InMemoryLinkState):
    """Flower's in-memory link state whose node registrations are also Flower's SQL node table
    in ``database``: loaded from it at start, written to it when a site is registered or
    unregistered (the file first: a registration the file refused is not made in memory)."""

    def __init__(
        self, database: str, federation_manager: FederationManager, object_store: ObjectStore
    ) -> None:
        self._file = SqlLinkState(database, federation_manager, object_store)
        self._file.initialize()
        super().__init__(federation_manager, object_store)  # the federation now uses this one
        for node in self._file.get_node_info():
            self._remember(node)

    def _remember(self, node) -> None:  # type: ignore[no-untyped-def]
        with self.lock:
            self.nodes[node.node_id] = node
            self.node_public_key_to_node_id[node.public_key] = node.node_id
            self.owner_to_node_ids.setdefault(node.owner_aid, set()).add(node.node_id)

    def create_node(
        self,
        owner_aid: str,
        owner_name: str,
        public_key: bytes,
        heartbeat_interval: float,
        *,
        location: str | None = None,
        name: str | None = None,
    ) -> int:
        with self.lock:
            if public_key in self.node_public_key_to_node_id:
                raise ValueError("Public key already in use")
            node_id = self._file.create_node(
                owner_aid,
                owner_name,
                public_key,
                heartbeat_interval,
                location=location,
                name=name,
            )
            if node_id:  # 0: Flower's "unexpected registration failure"
                self._remember(self._file.get_node_info(node_ids=[node_id])[0])
            return node_id

    def delete_node(self, owner_aid: str, node_id: int) -> None:
        with self.lock:
            self._file.delete_node(owner_aid, node_id)  # raises as Flower's own would
            super().delete_node(owner_aid, node_id)


class KeptRegistrationsFactory(LinkStateFactory):
    """Flower's ``LinkStateFactory``, building a :class:`KeptRegistrationsLinkState` for a
    database file (``:flwr-in-memory:`` stays Flower's plain in-memory state)."""

    def state(self):  # type: ignore[no-untyped-def]
        if self.database == FLWR_IN_MEMORY_DB_NAME:
            return super().state()
        with self._state_lock:
            if self.state_instance is None:
                self.state_instance = KeptRegistrationsLinkState(
                    self.database, self.federation_manager, self.objectstore_factory.store()
                )
            return self.state_instance


def main() -> None:
    import flwr.superlink.config_loader as loader
    from flwr.superlink.cli.flower_superlink import flower_superlink

    loader.ObjectStoreFactory = in_memory_object_store  # type: ignore[assignment,misc]
    loader.LinkStateFactory = KeptRegistrationsFactory  # type: ignore[misc]
    sys.argv[0] = "flower-superlink"
    flower_superlink()


if __name__ == "__main__":
    main()
