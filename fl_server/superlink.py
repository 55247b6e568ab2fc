"""``python -m fl_server.superlink [flower-superlink arguments]``: Flower's SuperLink, with the
messages' payloads held in memory.

Flower 1.42's SuperLink keeps two things in its ``--database``: its *link state* (registered
sites' keys and node ids, runs, the messages' headers and statuses) and its *object store*
(every message's content: the weights, object by object). With a database file, both are
SQLAlchemy tables, and every object a ServerApp or a site pushes or pulls is a SQL transaction
on a ~1 MB blob. On the 2-core benchmark machine that costs the coordinator 0.6-1.2 s to hand a
round's three training messages to the SuperLink (0.1 s in memory), and each reply 0.9 s from
its site to the ServerApp (0.3 s in memory): ~1 s per round per site, about a third of
Flower's whole per-message overhead (``benchmarks/bench_deployment_overhead.py``, docs
section 2). A database file on tmpfs is as slow: it is the SQL path, not the disk.

What must survive a restart is the link state: the registered keys and node ids
(``fl-server register`` wrote them, and the coordinator's registry names each site by its node
id). A message's content is needed only while its round is open, and a round does not survive
a SuperLink restart anyway (its ServerApp loses the SuperLink; ``fl-server run --resume``
continues from the coordinator's own signed checkpoints). So this launcher gives the link state
the ``--database`` file as before and the object store Flower's own in-memory store (the one
every SuperNode and Flower's simulation use), then runs Flower's ``flower-superlink`` entry
point unchanged: same arguments, same behaviour, same exit codes. Not yet tested: a SuperLink
restart in the middle of a round (the open messages' contents are then gone; the site should
report its task as failed). ``tests/deploy/test_superlink_launcher.py`` checks that the
installed Flower still builds the object store where this replaces it.
"""

from __future__ import annotations

import sys


def in_memory_object_store(database: str):  # type: ignore[no-untyped-def]
    """Flower's ``ObjectStoreFactory`` for ``database``, made in memory whatever it names."""
    from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME
    from flwr.supercore.object_store import ObjectStoreFactory

    del database  # the link state keeps it
    return ObjectStoreFactory(FLWR_IN_MEMORY_DB_NAME)


def main() -> None:
    import flwr.superlink.config_loader as loader
    from flwr.superlink.cli.flower_superlink import flower_superlink

    loader.ObjectStoreFactory = in_memory_object_store  # type: ignore[assignment,misc]
    sys.argv[0] = "flower-superlink"
    flower_superlink()


if __name__ == "__main__":
    main()
