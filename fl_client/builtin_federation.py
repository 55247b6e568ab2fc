"""The small synthetic federation ``flwr run .`` trains on when no site map is given.

Flower's default local simulation gives each simulated SuperNode only ``partition-id`` and
``num-partitions``; without the run config's ``sim-sites`` (which the research harness writes),
partition i is built-in synthetic hospital i: vendors A, B, C, D in turn, each in its natural
native format and with that format's labelled set (A: CAMUS-like, LV/MYO/LA; B: EchoNet-like,
LV; C: HMC-QU-like, MYO; D: a folder with LV and LA), 12 cases each. Each partition generates
only its own site, once, under the run's cache folder (``<cache-dir>/builtin-federation``), so
the first run takes a few seconds more and later ones reuse it.
"""

from __future__ import annotations

from pathlib import Path

from common.config import SiteSpec
from common.data.synthetic.federation import (
    FederationConfig,
    SyntheticSiteConfig,
    generate_federation,
)

SITES = (
    {"name": "A", "vendor": "A", "format": "camus-nifti"},
    {"name": "B", "vendor": "B", "format": "echonet-dynamic"},
    {"name": "C", "vendor": "C", "format": "hmc-qu"},
    {"name": "D", "vendor": "D", "format": "folder", "labelled": ["LV", "LA"]},
)
CASES = 12
SEED = 0


def builtin_site(partition: int, cache_dir: Path) -> SiteSpec:
    """Site ``partition`` of the built-in federation, generated on first use."""
    template = SITES[partition % len(SITES)]
    name = template["name"] if partition < len(SITES) else f"{template['name']}{partition}"
    site = SyntheticSiteConfig.model_validate({**template, "name": name, "cases": CASES})
    config = FederationConfig(
        seed=SEED + partition // len(SITES),  # a fifth hospital is another A, with other hearts
        output_dir=cache_dir / "builtin-federation",
        workers=1,
        sites=[site],
    )
    (generated,) = generate_federation(config, progress=lambda _: None)
    return generated.spec
