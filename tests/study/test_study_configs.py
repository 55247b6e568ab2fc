"""The study configs in simulations/configs/: they load, mirror the federations the issue names,
and fedecho-real runs on tiny files in the real datasets' native formats."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from common.config import load_config
from common.data.cache import load_site_cached
from common.labels import Structure
from fl_server.loopback import Cluster
from simulations.experiment import ExperimentConfig

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "simulations" / "configs"
LV, MYO, LA = Structure.LV, Structure.MYO, Structure.LA


def labelled_sets(config: ExperimentConfig, tmp: Path) -> dict[str, frozenset[Structure]]:
    out = {}
    for site in config.train_sites:
        data = load_site_cached(config.site_spec(site), config.recipe.preprocess, tmp / "c")
        out[site.name] = frozenset(data.labelled_set)
    return out


@pytest.mark.parametrize("name", ["fedecho", "extended", "fedecho-real"])
def test_study_configs_and_their_quick_variants_load(name: str) -> None:
    config = load_config(ExperimentConfig, CONFIGS / f"{name}.toml")
    quick = config.quick_variant()
    assert quick.budget.rounds < config.budget.rounds
    assert len(config.seeds) >= 3 and len(quick.seeds) >= 2
    assert {s.name for s in quick.sites} == {s.name for s in config.sites}


def test_federations_mirror_the_issue() -> None:
    fedecho = load_config(ExperimentConfig, CONFIGS / "fedecho.toml")
    assert [(s.name, s.vendor, s.format, s.role) for s in fedecho.sites] == [
        ("A", "A", "camus-nifti", "train"),
        ("B", "B", "echonet-dynamic", "train"),
        ("C", "C", "hmc-qu", "train"),
        ("U", "U", "folder", "test"),
    ]
    extended = load_config(ExperimentConfig, CONFIGS / "extended.toml")
    d, e = (next(s for s in extended.sites if s.name == n) for n in "DE")
    assert (d.vendor, d.format, d.labelled) == ("D", "folder", frozenset({LV, LA}))
    assert (e.vendor, e.format) == ("E", "echonet-dynamic")  # LV only, by its format
    assert len(extended.train_sites) == 5
    real = load_config(ExperimentConfig, CONFIGS / "fedecho-real.toml")
    assert all(not s.synthetic for s in real.sites)
    assert [s.format for s in real.sites] == ["camus-nifti", "echonet-dynamic", "hmc-qu"]
    assert real.quick_variant().sites[1].max_cases == 300  # a real site reads fewer cases


@pytest.fixture(scope="module")
def real_on_tiny_files(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """fedecho-real.toml with its roots pointed at tiny generated CAMUS / EchoNet / HMC-QU trees,
    a tiny budget, and its non-federated conditions (the federated ones are the same code as
    fedecho's, tested in tests/study/test_quick_study.py)."""
    work = tmp_path_factory.mktemp("real")
    Cluster.generate(
        work,
        [
            {"name": "camus", "vendor": "A", "format": "camus-nifti", "cases": 6},
            {"name": "echonet", "vendor": "B", "format": "echonet-dynamic", "cases": 6},
            {"name": "hmcqu", "vendor": "C", "format": "hmc-qu", "cases": 5, "frames": 3},
        ],
    )
    # each tree under the folder name the docs give it (docs/hospital-quickstart.md, docs/data.md);
    # only the shipped roots' /data/ prefix changes, so a root that points inside a dataset (as
    # database_nifti/ once did) fails here as it would for a user
    for generated, dataset in (
        ("camus", "CAMUS_public"),
        ("echonet", "EchoNet-Dynamic"),
        ("hmcqu", "HMC-QU"),
    ):
        (work / "data" / generated).rename(work / "data" / dataset)
    text = (CONFIGS / "fedecho-real.toml").read_text()
    roots = re.findall(r'^root = "([^"]+)"', text, flags=re.M)
    assert roots == ["/data/CAMUS_public", "/data/EchoNet-Dynamic", "/data/HMC-QU"], roots
    text = text.replace('root = "/data/', 'root = "data/')
    text = re.sub(r"rounds = \d+", "rounds = 1", text)
    text = re.sub(r"image_size = \d+", "image_size = 32", text)
    text = text[: text.index('[[conditions]]\nname = "FedAvg')] + text[text.index("# --quick") :]
    path = work / "fedecho-real-tiny.toml"
    path.write_text(text)
    # an attempt interrupted earlier left outputs behind: they must not mix with the new run's
    stale = work / "runs" / "fedecho-real-quick" / "runs" / "local-only" / "seed-0"
    stale.mkdir(parents=True)
    (stale / "metrics.jsonl").write_text('{"event": "negotiated"}\n')
    proc = subprocess.run(
        [sys.executable, str(REPO / "simulations" / "run.py"), "--config", str(path), "--quick"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    config = load_config(ExperimentConfig, path)
    results = sorted((work / "runs").glob("*/runs/*/seed-*/result.json"))
    return {
        "work": work,
        "stale_left": (stale / "metrics.jsonl").exists(),
        "stdout": proc.stdout,
        "config": config,
        "results": [json.loads(p.read_text()) for p in results],
    }


def test_real_sites_are_read_by_their_native_loaders(real_on_tiny_files: dict) -> None:
    config, work = real_on_tiny_files["config"], real_on_tiny_files["work"]
    # the roots are relative to the folder the harness runs in
    sites = [s.model_copy(update={"root": work / str(s.root)}) for s in config.sites]
    sets = labelled_sets(config.model_copy(update={"sites": sites}), work)
    assert sets == {"A": frozenset({LV, MYO, LA}), "B": frozenset({LV}), "C": frozenset({MYO})}


def test_real_study_runs_its_conditions_and_seeds(real_on_tiny_files: dict) -> None:
    results = real_on_tiny_files["results"]
    assert {(r["condition"], r["seed"]) for r in results} == {
        (c, s)
        for c in (
            "local only",
            "centralised, adaptive CE",
            "centralised, adaptive CE + LD 0.5",
        )
        for s in (0, 1)
    }


def test_an_interrupted_attempt_is_discarded(real_on_tiny_files: dict) -> None:
    assert not real_on_tiny_files["stale_left"]
    assert (
        "local only / seed 0: discarding an interrupted attempt's outputs"
        in (real_on_tiny_files["stdout"])
    )
