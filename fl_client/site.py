"""Which site a ClientApp process serves, and its data.

Deployment: the hospital's ``fl-client`` starts its SuperNode with a node config naming the
site (``site``, ``format``, ``data-dir``, optional ``labelled``, ``cache-dir``,
``loader-options`` as a JSON object). Simulation: Flower gives ``partition-id`` /
``num-partitions``; the run config's ``sim-sites`` names a JSON file that maps partition ids to
site specs explicitly (written by ``simulations/run.py``); without it (``flwr run .`` on Flower's
default simulation) partition i is hospital i of a small built-in synthetic federation
(:mod:`fl_client.builtin_federation`).

Data are read through the preprocessing cache; within one process (a Ray actor in simulation)
they are also kept in memory, keyed by the spec and the preprocessing settings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.config import SiteSpec, validate_config
from common.data.cache import load_site_cached
from common.data.preprocess import PreprocessConfig
from common.data.site_data import SiteData
from common.errors import ConfigError
from common.federation.run_settings import RunSettings

_DATA: dict[tuple[str, str], SiteData] = {}


def read_sim_sites(path: str | Path) -> list[SiteSpec]:
    """The partition -> site mapping of a simulation (a JSON list of site specs)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(path, "simulation site map (run config 'sim-sites') not found") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(path, f"simulation site map is not valid JSON ({exc})") from None
    if not isinstance(raw, list) or not raw:
        raise ConfigError(path, "simulation site map must be a non-empty JSON list of sites")
    return [validate_config(SiteSpec, item, f"{path}[{i}]") for i, item in enumerate(raw)]


def resolve_site(node_config: Mapping[str, Any], settings: RunSettings) -> SiteSpec:
    """The :class:`SiteSpec` this node serves (see the module docstring)."""
    if "partition-id" in node_config:
        pid, n = int(node_config["partition-id"]), int(node_config["num-partitions"])
        if not settings.sim_sites:  # `flwr run .` on Flower's default simulation
            from fl_client.builtin_federation import builtin_site

            return builtin_site(pid, cache_dir_for(node_config, settings))
        sites = read_sim_sites(settings.sim_sites)
        if n != len(sites):
            raise ConfigError(
                settings.sim_sites,
                f"{n} simulated SuperNodes but {len(sites)} sites in the map: they must match",
            )
        return sites[pid]
    missing = [k for k in ("site", "format", "data-dir") if k not in node_config]
    if missing:
        raise ConfigError("node config", f"missing key(s) {', '.join(missing)}")
    options = node_config.get("loader-options", "{}")
    try:
        options = json.loads(options) if isinstance(options, str) else dict(options)
    except json.JSONDecodeError as exc:
        raise ConfigError("node config", f"loader-options is not a JSON object ({exc})") from None
    labelled = node_config.get("labelled") or None
    data = {
        "name": node_config["site"],
        "format": node_config["format"],
        "root": node_config["data-dir"],
        "labelled": labelled.split(",") if isinstance(labelled, str) else labelled,
        "options": options,
    }
    return validate_config(SiteSpec, data, "node config")


def cache_dir_for(node_config: Mapping[str, Any], settings: RunSettings) -> Path:
    """A node's own cache folder wins over the run's (a hospital decides where data live)."""
    return Path(str(node_config.get("cache-dir") or settings.cache_dir))


def site_data(spec: SiteSpec, preprocess: PreprocessConfig, cache_dir: Path) -> SiteData:
    """The site's preprocessed data, from memory, the disk cache, or built on first use."""
    key = (spec.model_dump_json(), preprocess.model_dump_json())
    if key not in _DATA:
        _DATA[key] = load_site_cached(spec, preprocess, cache_dir)
    return _DATA[key]
