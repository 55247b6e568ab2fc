"""Names that become file names: sites and runs.

A site's name is part of paths on both sides (``pki/sites/<name>.key``, ``<name>.toml``, the
cache and run folders) and travels in the query reply, so it is checked in one place, the same
way for every command, config file and message: 1 to 64 characters, letters, digits, ``_``,
``-`` and ``.``, starting with a letter or a digit (so no ``.``/``..``, no hidden names, no path
separators, no spaces, quotes or control characters). Run names follow the same rule.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)
RULE = "1-64 letters, digits, '_', '-' or '.', starting with a letter or digit"


def check_name(value: str, what: str = "site name") -> str:
    """``value`` when it is a valid name, else ValueError naming the rule."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(f"invalid {what} {value!r}: use {RULE}")
    return value


def site_name_arg(value: str) -> str:
    """``argparse`` type for ``--site``."""
    try:
        return check_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_name_arg(value: str) -> str:
    """``argparse`` type for ``--name`` / ``--resume``."""
    try:
        return check_name(value, "run name")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def child(parent: Path, name: str, what: str = "name") -> Path:
    """``parent / name``, refused unless it stays directly under ``parent``."""
    path = (parent / name).resolve()
    if path.parent != parent.resolve():
        raise ValueError(f"{what} {name!r} would leave {parent}")
    return parent / name
