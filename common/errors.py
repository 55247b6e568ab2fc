"""Errors raised for bad input. Each names the offending file (or config key) and the problem."""

from __future__ import annotations

from pathlib import Path


class EchoflError(Exception):
    """Base class of the errors raised for bad input: expected, reported without a traceback."""


class DataError(EchoflError):
    """A data file or folder that cannot be used: unreadable, malformed or inconsistent.

    ``str(err)`` is ``"<path>: <problem>"`` so that a log line alone says what to fix and where.
    """

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)


class ConfigError(EchoflError):
    """A configuration file or value that fails validation."""

    def __init__(self, source: str | Path | None, problem: str) -> None:
        self.source = None if source is None else str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}" if self.source is not None else problem)


class OptionError(ConfigError, ValueError):
    """A format loader's option (``loader_options`` of a site) with an impossible value."""

    def __init__(self, option: str, problem: str) -> None:
        super().__init__(f"loader option {option!r}", problem)
