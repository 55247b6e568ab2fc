"""fl_server.superlink: Flower's SuperLink with messages, their contents and runs in memory and
the sites' registrations in the database file. The patch points must still exist in the
installed Flower (an upgrade that moves them fails here, not silently), registrations must
survive a restart with their node ids and stay readable by Flower's own SQL link state, and the
launcher is Flower's own entry point otherwise."""

from __future__ import annotations

import inspect
import sqlite3
import subprocess
import sys
from pathlib import Path

import flwr.superlink.config_loader as loader
import pytest
from flwr.server.superlink.linkstate.sql_linkstate import SqlLinkState
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NodeStatus, TaskType
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.object_store.in_memory_object_store import InMemoryObjectStore
from flwr.superlink.federation import NoOpFederationManager

from fl_server.superlink import (
    KeptRegistrationsFactory,
    KeptRegistrationsLinkState,
    in_memory_object_store,
)


def state(database: Path):  # type: ignore[no-untyped-def]
    """What the launcher's SuperLink builds at start for ``--database database``."""
    return KeptRegistrationsFactory(
        str(database), NoOpFederationManager(), in_memory_object_store(str(database))
    ).state()


def test_flower_builds_both_stores_through_the_module_level_factories() -> None:
    source = inspect.getsource(loader.get_objectstore_linkstate_factories)
    assert "objectstore_factory = ObjectStoreFactory(database)" in source
    assert "LinkStateFactory(database, federation_manager, objectstore_factory)" in source


def test_the_replacement_keeps_objects_in_memory_whatever_the_database(tmp_path: Path) -> None:
    store = in_memory_object_store(str(tmp_path / "state.db")).store()
    assert isinstance(store, InMemoryObjectStore)
    assert not (tmp_path / "state.db").exists()  # nothing of the objects goes to the file


def test_registrations_survive_a_restart_with_their_node_ids(tmp_path: Path) -> None:
    db = tmp_path / "superlink.db"
    first = state(db)
    assert isinstance(first, KeptRegistrationsLinkState)
    a = first.create_node("aid", "coordinator", b"key-a", 10.0, name="A")
    b = first.create_node("aid", "coordinator", b"key-b", 10.0, name="B")
    assert first.acknowledge_node_heartbeat(a, 10.0)  # A online before the restart

    again = state(db)  # a new SuperLink process on the same file
    assert again.get_node_id_by_public_key(b"key-a") == a
    assert again.get_node_id_by_public_key(b"key-b") == b
    assert {n.node_id: n.name for n in again.get_node_info()} == {a: "A", b: "B"}
    # a site that reconnects with its key is the same node, and comes online again
    assert again.acknowledge_node_heartbeat(b, 10.0)
    assert [n.node_id for n in again.get_node_info(statuses=[NodeStatus.ONLINE])] == [b]
    with pytest.raises(ValueError, match="already in use"):
        again.create_node("aid", "coordinator", b"key-a", 10.0)

    again.delete_node("aid", a)
    after = state(db)
    assert after.get_node_id_by_public_key(b"key-a") is None  # unregistered stays so
    assert after.get_node_id_by_public_key(b"key-b") == b


def test_the_file_keeps_flowers_schema_so_plain_flower_reads_the_registrations(
    tmp_path: Path,
) -> None:
    db = tmp_path / "superlink.db"
    node = state(db).create_node("aid", "coordinator", b"key-a", 10.0, name="A")
    plain = SqlLinkState(
        str(db), NoOpFederationManager(), ObjectStoreFactory(FLWR_IN_MEMORY_DB_NAME).store()
    )
    plain.initialize()
    assert plain.get_node_id_by_public_key(b"key-a") == node
    # and the other way: a site registered under plain Flower is known to the launcher
    other = plain.create_node("aid", "coordinator", b"key-b", 10.0, name="B")
    assert state(db).get_node_id_by_public_key(b"key-b") == other


def test_runs_and_messages_do_not_go_to_the_file(tmp_path: Path) -> None:
    db = tmp_path / "superlink.db"
    link = state(db)
    run_id = link.create_run(None, None, "a" * 64, {}, "", None, "aid", TaskType.SERVER_APP)
    assert link.get_run_info(run_ids=[run_id])  # known in memory
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM run").fetchone() == (0,)


def test_the_launcher_is_flowers_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fl_server.superlink", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "usage: flower-superlink" in out.stdout and "--database" in out.stdout
