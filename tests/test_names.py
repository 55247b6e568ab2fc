"""One rule for names that become paths (sites, runs), used by every command and message."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import SiteSpec
from common.federation.protocol import ProtocolError, SiteDescription
from common.names import check_name, child
from fl_client import cli as fl_client_cli
from fl_server import cli as fl_server_cli

BAD = ["..", ".", ".hidden", "../evil", "a/b", "a\\b", 'x"y', "a b", "tab\there", "", "x" * 65]


@pytest.mark.parametrize("name", BAD)
def test_bad_names_are_refused_everywhere(name: str, tmp_path: Path, capsys) -> None:
    with pytest.raises(ValueError, match="invalid site name"):
        check_name(name)
    with pytest.raises(ValueError, match="invalid site name"):
        SiteSpec(name=name, format="folder", root=tmp_path)
    with pytest.raises(ProtocolError, match="query reply: invalid site name"):
        SiteDescription.from_records({"name": name or "?" * 65, "labelled": "LV"}, {})
    for argv in (
        ["add-site", "--home", str(tmp_path / "h"), "--site", name],
        ["init", "--home", str(tmp_path / "h"), "--host", "x.org", "--site", name],
        ["register", "--home", str(tmp_path / "h"), "--site", name],
    ):
        with pytest.raises(SystemExit) as exc:
            fl_server_cli.main(argv)
        assert exc.value.code == 2
        assert "invalid site name" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fl_client_cli.main(["--site", name])
    assert "invalid site name" in capsys.readouterr().err
    assert not (tmp_path / "h").exists()  # nothing half-written


def test_good_names_pass() -> None:
    for name in ("A", "site-1", "St.Olav_2", "x" * 64):
        assert check_name(name) == name


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["init", "--host", "", "--site", "A"], "'' is not a host name or an IP address"),
        (["init", "--host", "a b", "--site", "A"], "'a b' is not a host name or an IP address"),
        (["init", "--host", "x.org", "--port", "99999"], "a TCP port is 1-65535, got 99999"),
        (["init", "--host", "x.org", "--port", "-1"], "a TCP port is 1-65535, got -1"),
        (["init", "--host", "x.org", "--min-sites", "0"], "must be at least 1, got 0"),
        (["run", "--rounds", "0"], "must be at least 1, got 0"),
        (["run", "--name", "../../X"], "invalid run name '../../X'"),
        (["run", "--resume", "../X"], "invalid run name '../X'"),
    ],
)
def test_bad_command_values_are_named(
    argv: list[str], message: str, tmp_path: Path, capsys
) -> None:
    home = tmp_path / "home"
    with pytest.raises(SystemExit) as exc:
        fl_server_cli.main([argv[0], "--home", str(home), *argv[1:]])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not home.exists()


def test_ip_hosts_are_accepted(tmp_path: Path) -> None:
    assert fl_server_cli.host_arg("127.0.0.1") == "127.0.0.1"
    assert fl_server_cli.host_arg("::1") == "::1"
    assert fl_server_cli.host_arg("coordinator.example.org") == "coordinator.example.org"


def test_child_paths_stay_under_their_parent(tmp_path: Path) -> None:
    assert child(tmp_path, "run-1") == tmp_path / "run-1"
    with pytest.raises(ValueError, match="would leave"):
        child(tmp_path, "../x", "run name")
