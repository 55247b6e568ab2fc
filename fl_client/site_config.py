"""A hospital site's configuration file (``<site>.toml``), validated, and its pre-flight checks.

Example (relative paths are relative to the file's folder)::

    site = "A"
    coordinator = "coordinator.example.org:9092"   # the SuperLink's fleet address
    ca_certificate = "ca.crt"                       # the federation's CA (verifies the coordinator)
    private_key = "site.key"                        # this site's node key (OpenSSH, 0600)
    data_dir = "/data/camus/database_nifti/.."     # the dataset in its native layout
    format = "camus-nifti"                          # camus-nifti | camus-mhd | echonet-dynamic |
                                                    # hmc-qu | folder
    labelled = ["LV", "MYO", "LA"]                  # optional: annotate fewer than the format
    cache_dir = "cache"                             # preprocessing cache (on this machine)
    runtime_port = 9094                             # SuperNode's local runtime port (loopback)
    log_file = "logs/fl-client.log"
    audit_log = "logs/audit.jsonl"                  # what this site ran or refused (append-only)
    trusted_apps = ["<sha256 of the app bundle>"]   # the only code this site executes
    task_timeout_s = 3600                           # a task running longer is stopped
    model_verify_key = "model-signing.pub"          # the coordinator's model-signing key: the
                                                    # final model it sends is kept only if it
    models_dir = "models"                           # verifies; kept here for fl-client predict

    [loader_options]                                # passed to the format's loader
    fold = 1
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from common.config import (
    FormatName,
    OptionalLabelledSet,
    SiteName,
    SiteSpec,
    StrictModel,
    load_config,
)
from common.data.preprocess import PreprocessConfig
from common.errors import ConfigError
from common.labels import LabelledSet, parse_labelled_set
from common.recipe import Recipe
from common.security.pki import check_ca_certificate, check_site_key, load_verify_key


def _app_hash(value: str) -> str:
    text = value.strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(
            f"{value!r} is not an app bundle hash (SHA-256: 64 hexadecimal digits, as printed by "
            "`fl-server app-hash` and by `fl-server run`)"
        )
    return text


AppHash = Annotated[str, AfterValidator(_app_hash)]


class SiteConfig(StrictModel):
    site: SiteName
    coordinator: str = Field(pattern=r"^\[?[A-Za-z0-9_.:-]+\]?:\d{1,5}$")
    ca_certificate: Path
    private_key: Path
    data_dir: Path
    format: FormatName
    labelled: OptionalLabelledSet = None
    cache_dir: Path = Path("cache")
    runtime_port: int = Field(default=9094, ge=1024, le=65535)
    log_file: Path | None = None
    flwr_home: Path = Path("flwr")  # where Flower unpacks the app bundles it receives
    loader_options: dict[str, Any] = Field(default_factory=dict)
    max_retries: int | None = Field(default=None, ge=0)  # None: keep trying
    # The app bundles (Flower FABs, by SHA-256) this site agrees to execute. Every task of any
    # other app is refused before any of its code is read as code (fl_client.task).
    trusted_apps: list[AppHash] = Field(default_factory=list)
    audit_log: Path = Path("audit.jsonl")  # tasks executed and refused, with the app's hash
    task_timeout_s: float = Field(default=3600.0, gt=0, allow_inf_nan=False)
    # how the site worker starts a task: "fork" (from its pre-imported process, ~0.3 s) or
    # "spawn" (a fresh interpreter, ~3-4 s: where fork is unsafe, e.g. not Linux)
    task_start: Literal["fork", "spawn"] = "fork"
    # how long the idle SuperNode waits between asking the coordinator for a message (Flower's
    # own is 3 s; see fl_client.supernode); each ask is one small signed HTTPS request
    poll_interval_s: float = Field(default=0.5, gt=0, le=3, allow_inf_nan=False)
    # the preprocessing `--check` warms the cache with: the run config's default (image-size,
    # normalisation); set it to what the coordinator's runs use so the first round hits the cache
    preprocess: PreprocessConfig = Field(default_factory=lambda: Recipe().preprocess)
    # the coordinator's model-signing public key: the final model it sends at the end of a run
    # is kept (in models_dir, for `fl-client predict`) only if its signature verifies with it;
    # without one the site stores no model
    model_verify_key: Path | None = None
    models_dir: Path = Path("models")

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.coordinator.rpartition(":")
        return host.strip("[]"), int(port)

    def resolved(self, base: Path) -> SiteConfig:
        """Paths made absolute against ``base`` (the config file's folder)."""

        def absolute(p: Path | None) -> Path | None:
            return None if p is None else (p if p.is_absolute() else (base / p).resolve())

        return self.model_copy(
            update={
                "ca_certificate": absolute(self.ca_certificate),
                "private_key": absolute(self.private_key),
                "data_dir": absolute(self.data_dir),
                "cache_dir": absolute(self.cache_dir),
                "log_file": absolute(self.log_file),
                "flwr_home": absolute(self.flwr_home),
                "audit_log": absolute(self.audit_log),
                "model_verify_key": absolute(self.model_verify_key),
                "models_dir": absolute(self.models_dir),
            }
        )

    @property
    def spec(self) -> SiteSpec:
        return SiteSpec(
            name=self.site,
            format=self.format,
            root=self.data_dir,
            labelled=self.labelled,
            options=self.loader_options,
        )

    @property
    def runtime_address(self) -> str:
        """The SuperNode's Runtime API, where the site worker takes its tasks (loopback)."""
        return f"127.0.0.1:{self.runtime_port}"

    @property
    def superexec_secret_file(self) -> Path:
        """The shared secret between this site's SuperNode and its worker (new every start)."""
        return self.flwr_home / f"superexec-{self.site}.secret"

    def node_config(self) -> str:
        """The SuperNode's ``--node-config`` (TOML values): what the ClientApp reads."""
        values = {
            "site": self.site,
            "format": self.format,
            "data-dir": str(self.data_dir),
            "cache-dir": str(self.cache_dir),
            "labelled": ",".join(s.name for s in sorted(self.labelled)) if self.labelled else "",
            "loader-options": json.dumps(self.loader_options),
            "log-file": str(self.log_file or ""),
            "model-verify-key": str(self.model_verify_key or ""),
            "models-dir": str(self.models_dir),
        }
        return " ".join(f"{k}={json.dumps(v)}" for k, v in values.items())


def site_config_path(site: str, config: Path | None, config_dir: Path | None) -> Path:
    if config is not None:
        return config
    folder = config_dir or Path(os.environ.get("ECHOFL_SITE_DIR", "/etc/echofl/sites"))
    return folder / f"{site}.toml"


def load_site_config(site: str, path: Path) -> SiteConfig:
    config = load_config(SiteConfig, path).resolved(path.parent.resolve())
    if config.site != site:
        raise ConfigError(path, f"this file configures site {config.site!r}, not {site!r}")
    return config


def check_files(config: SiteConfig, source: Path) -> None:
    """Certificate and key present, parseable, valid; the key not readable by others."""
    check_ca_certificate(config.ca_certificate)
    check_site_key(config.private_key)
    mode = stat.S_IMODE(config.private_key.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            config.private_key,
            f"private key is readable by others (mode "
            f"{mode:o}); run: chmod 600 {config.private_key}",
        )
    if config.model_verify_key is not None:
        load_verify_key(config.model_verify_key)  # names the file when missing or not a key
    if not config.data_dir.is_dir():
        raise ConfigError(source, f"data_dir {config.data_dir} does not exist or is not a folder")


def labelled_names(labelled: LabelledSet) -> str:
    return ", ".join(s.name for s in sorted(labelled))


__all__ = [
    "SiteConfig",
    "check_files",
    "load_site_config",
    "parse_labelled_set",
    "site_config_path",
]
