"""echofl's version (the installed distribution's), for ``--version`` on every command."""

from __future__ import annotations

import argparse
from importlib.metadata import PackageNotFoundError, version


def echofl_version() -> str:
    try:
        return version("echofl")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


SOFTWARE = ("echofl", "flwr", "torch", "monai")  # what a site reports in its query reply


def software() -> dict[str, str]:
    """The installed versions of what a site's training depends on."""
    out = {}
    for name in SOFTWARE:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def _minor(text: str) -> tuple[str, ...]:
    return tuple(text.split("+")[0].split(".")[:2])


def software_refusal(mine: dict[str, str], theirs: dict[str, str]) -> str | None:
    """Why a site with ``theirs`` cannot take part in a run coordinated with ``mine``: Flower's
    major.minor must match (its messages and runtime change between minor releases); None when
    it does (other differences are reported, not refused: :func:`software_differences`)."""
    if "flwr" in theirs and _minor(theirs["flwr"]) != _minor(mine.get("flwr", "")):
        return (
            f"the site runs Flower {theirs['flwr']}, the coordinator {mine.get('flwr')}: install "
            f"flwr=={mine.get('flwr')} on the site (see its echofl release notes)"
        )
    return None


def software_differences(mine: dict[str, str], theirs: dict[str, str]) -> dict[str, list[str]]:
    """``{package: [coordinator's, site's]}`` for every version that differs."""
    return {k: [mine.get(k, "?"), v] for k, v in sorted(theirs.items()) if mine.get(k) != v}


def add_version(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--version``: print ``<prog> <echofl version>`` and exit 0."""
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s (echofl {echofl_version()})"
    )
    return parser
