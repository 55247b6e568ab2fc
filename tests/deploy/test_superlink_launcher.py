"""fl_server.superlink: Flower's SuperLink with messages' contents in memory and its link state
(registered keys, node ids, runs) in the database file. The patch point must still exist in the
installed Flower (an upgrade that moves it fails here, not silently), the replacement must give
Flower's in-memory store, and the launcher is Flower's own entry point otherwise."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import flwr.superlink.config_loader as loader
from flwr.supercore.object_store.in_memory_object_store import InMemoryObjectStore

from fl_server.superlink import in_memory_object_store


def test_flower_builds_the_superlinks_object_store_through_the_module_level_factory() -> None:
    source = inspect.getsource(loader.get_objectstore_linkstate_factories)
    assert "objectstore_factory = ObjectStoreFactory(database)" in source
    # the link state gets the object store from that factory, not from the database itself
    assert "LinkStateFactory(database, federation_manager, objectstore_factory)" in source


def test_the_replacement_keeps_objects_in_memory_whatever_the_database(tmp_path: Path) -> None:
    store = in_memory_object_store(str(tmp_path / "state.db")).store()
    assert isinstance(store, InMemoryObjectStore)
    assert not (tmp_path / "state.db").exists()  # nothing of the objects goes to the file


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
