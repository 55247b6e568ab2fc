"""TOML files that are not text or nest absurdly deep are clear errors naming the file."""

from pathlib import Path

import pytest

from common.config import read_toml
from common.errors import ConfigError


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'site = "A"\n\xff\n', "not valid TOML: not UTF-8 text (byte 11)"),
        (b"x = " + b"[" * 3000 + b"]" * 3000 + b"\n", "not valid TOML: nested too deeply"),
        (b"x = " + b"{a = " * 3000 + b"1" + b"}" * 3000 + b"\n", "nested too deeply"),
    ],
)
def test_unreadable_toml_names_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "site.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as exc:
        read_toml(path)
    assert str(path) in str(exc.value) and message in str(exc.value)


_CONFIGS = Path(__file__).resolve().parents[1] / "simulations" / "configs"
# every experiment config the docs name (echofl-centralised's and the federation generator's
# own files have other schemas)
_EXPERIMENTS = sorted(
    p
    for p in _CONFIGS.rglob("*.toml")
    if p.name != "centralised-A.toml" and p.parent.name != "federations"
)


@pytest.mark.parametrize("path", _EXPERIMENTS, ids=lambda p: str(p.relative_to(_CONFIGS)))
def test_every_shipped_experiment_config_validates(path: Path) -> None:
    from common.config import validate_config
    from simulations.experiment import ExperimentConfig

    config = validate_config(ExperimentConfig, read_toml(path), path)
    assert config.conditions and config.train_sites  # something to run, somewhere to train
