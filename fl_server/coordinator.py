"""The coordinator's home folder: its validated config and the paths everything lives at.

<home>/coordinator.toml     hosts, listen address and port, app folder, minimum sites
<home>/pki/                 CA, server certificate, site keys, checkpoint-signing key
<home>/bundles/<site>/      what a hospital receives: ca.crt, site.key, <site>.toml
<home>/state/superlink.db   the SuperLink's persistent state (SQLite)
<home>/state/sites.json     site name -> registered node id
<home>/state/superexec.secret  the SuperLink <-> SuperExec shared secret (new at every start)
<home>/logs/superlink.log
<home>/runs/<run>/          metrics.jsonl, checkpoints/ (signed), summary.json
<home>/flwr/config.toml     the Flower CLI's connection to this SuperLink (loopback + CA)
<home>/proxy/               the fleet-only nginx proxy's generated config, pid and logs
<home>/audit.jsonl          append-only audit trail (fl_server.audit)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field

from common.config import StrictModel, load_config
from common.names import check_name, child
from common.security.pki import PkiPaths
from fl_server.audit import AuditLog

CONNECTION = "echofl"
DEFAULT_APP_DIR = Path(__file__).resolve().parents[1]


class CoordinatorConfig(StrictModel):
    """``listen_host:port`` is the sites' address: the fleet-only proxy (fl_server.proxy) by
    default, with the SuperLink on ``127.0.0.1:superlink_port``; with ``expose_control_api``
    the SuperLink itself (Fleet, Control and Runtime APIs) listens there."""

    hosts: list[str] = Field(min_length=1)  # names/IPs the sites use to reach the coordinator
    listen_host: str = "0.0.0.0"
    port: int = Field(default=9092, ge=1, le=65535)
    superlink_port: int = Field(default=9192, ge=1, le=65535)
    expose_control_api: bool = False
    app_dir: Path = DEFAULT_APP_DIR
    min_sites: int = Field(default=2, ge=1)
    # where the SuperLink keeps its per-round traffic (messages, contents, runs): "memory" (the
    # default, fl_server.superlink: only the sites' registrations go to the database file) or
    # everything in its database file (Flower's own flower-superlink)
    message_store: Literal["memory", "database"] = "memory"

    @property
    def superlink_address(self) -> tuple[str, int]:
        """Where the SuperLink listens."""
        if self.expose_control_api:
            return self.listen_host, self.port
        return "127.0.0.1", self.superlink_port

    @property
    def control_port(self) -> int:
        """The loopback port the coordinator's Flower CLI uses (Control API)."""
        return self.superlink_address[1]


class CoordinatorHome:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    @property
    def config_file(self) -> Path:
        return self.root / "coordinator.toml"

    def config(self) -> CoordinatorConfig:
        return load_config(CoordinatorConfig, self.config_file)

    @property
    def pki(self) -> PkiPaths:
        return PkiPaths(self.root / "pki")

    def bundle(self, site: str) -> Path:
        return child(self.root / "bundles", check_name(site), "site name")

    def run_dir(self, name: str) -> Path:
        """``runs/<name>``: a valid run name, directly under the runs folder."""
        return child(self.runs, check_name(name, "run name"), "run name")

    @property
    def database(self) -> Path:
        return self.root / "state" / "superlink.db"

    @property
    def superexec_secret(self) -> Path:
        return self.root / "state" / "superexec.secret"

    @property
    def registry(self) -> Path:
        return self.root / "state" / "sites.json"

    @property
    def log_file(self) -> Path:
        return self.root / "logs" / "superlink.log"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def audit(self) -> AuditLog:
        """``<home>/audit.jsonl``: append-only (fl_server.audit)."""
        return AuditLog(self.root / "audit.jsonl")

    @property
    def proxy_dir(self) -> Path:
        return self.root / "proxy"

    @property
    def flwr_home(self) -> Path:
        return self.root / "flwr"

    def registered(self) -> dict[str, int]:
        if not self.registry.is_file():
            return {}
        return {k: int(v) for k, v in json.loads(self.registry.read_text()).items()}

    def write_connection(self, port: int) -> None:
        """The Flower CLI reaches the SuperLink on loopback (127.0.0.1 is in the SANs)."""
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{port}"\nroot-certificates = "{self.pki.ca_cert}"\n'
        )
