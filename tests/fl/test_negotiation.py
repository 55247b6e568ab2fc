"""Site names are checked against the registry that `fl-server register` keeps."""

import json
from pathlib import Path

import pytest

from common.errors import ConfigError
from common.labels import Structure
from fl_server.cli import parse_overrides
from fl_server.negotiation import SiteInfo, check_registered_names


def info(node: int, name: str) -> SiteInfo:
    return SiteInfo(node_id=node, name=name, labelled=frozenset({Structure.LV}), counts={})


def test_names_must_match_the_registered_node(tmp_path: Path) -> None:
    registry = tmp_path / "sites.json"
    registry.write_text(json.dumps({"A": 11, "B": 22}))
    kept, refused = check_registered_names(
        [info(11, "A"), info(33, "B"), info(44, "Z")], str(registry)
    )
    assert [i.name for i in kept] == ["A"]
    reasons = {i.node_id: r for i, r in refused}
    assert reasons[33] == "node 33 claims site 'B', which is registered to node 22"
    assert reasons[44] == "no site named 'Z' is registered"
    # no registry (simulation): every site is kept
    assert check_registered_names([info(1, "A")], "")[0] == [info(1, "A")]


def test_run_config_overrides_parse_and_refuse_garbage() -> None:
    assert parse_overrides('label-dropout-p=0.5 output-dir="/x y/z" rounds=3') == {
        "label-dropout-p": "0.5",
        "output-dir": '"/x y/z"',
        "rounds": "3",
    }
    with pytest.raises(ConfigError, match="expected key=value at"):
        parse_overrides("label-dropout-p")
