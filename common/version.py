"""echofl's version (the installed distribution's), for ``--version`` on every command."""

from __future__ import annotations

import argparse
from importlib.metadata import PackageNotFoundError, version


def echofl_version() -> str:
    try:
        return version("echofl")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def add_version(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--version``: print ``<prog> <echofl version>`` and exit 0."""
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s (echofl {echofl_version()})"
    )
    return parser
