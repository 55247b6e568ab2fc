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
