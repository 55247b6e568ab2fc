"""Configuration validated once, at the edge: TOML files -> pydantic models (``extra="forbid"``).

Errors name the file, the key path and the problem, e.g.
``experiment.toml: sites.1.fromat: unknown key (allowed: name, format, root, ...)``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)

from common.errors import ConfigError
from common.labels import LabelledSet, parse_labelled_set
from common.names import check_name

M = TypeVar("M", bound=BaseModel)

FORMAT_NAMES = ("camus-nifti", "camus-mhd", "echonet-dynamic", "hmc-qu", "folder")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _known_format(value: str) -> str:
    if value not in FORMAT_NAMES:
        raise ValueError(f"unknown format {value!r}; known formats: {', '.join(FORMAT_NAMES)}")
    return value


def _optional_labelled(value: Any) -> LabelledSet | None:
    if value is None:
        return None
    return parse_labelled_set([value] if isinstance(value, str) else value)


# Field types shared by every config that names a dataset format or a labelled set.
FormatName = Annotated[str, AfterValidator(_known_format)]
OptionalLabelledSet = Annotated[LabelledSet | None, BeforeValidator(_optional_labelled)]
SiteName = Annotated[str, AfterValidator(check_name)]  # common.names: one rule everywhere


class SiteSpec(StrictModel):
    """Where a site's data live and what it annotates.

    ``labelled`` restricts the site's masks to a subset of what its format provides (to emulate
    a site that annotates fewer structures); None keeps the format's own labelled set.
    ``max_cases`` keeps the first N cases of each split (sorted case ids), None keeps all.
    ``options`` are passed to the format's loader (e.g. ``{"fold": 3}`` for CAMUS legacy).
    """

    name: SiteName
    format: FormatName
    root: Path
    labelled: OptionalLabelledSet = None
    max_cases: int | None = Field(default=None, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)


def format_validation_error(
    source: str | Path,
    error: ValidationError,
    names: Mapping[tuple[str, ...], str] | None = None,
) -> ConfigError:
    """One readable message per problem: ``key.path: message``. ``names`` renames key paths
    (a nested setting reported by its flat run-config key)."""
    lines = []
    for item in error.errors():
        loc = tuple(str(p) for p in item["loc"])
        where = (names or {}).get(loc) or ".".join(loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            msg = "unknown key (typo?)"
        else:
            msg = item["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {msg}")
    return ConfigError(source, "; ".join(lines))


def validate_config(model: type[M], data: dict[str, Any], source: str | Path) -> M:
    """``model.model_validate(data)`` with errors turned into :class:`ConfigError`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise format_validation_error(source, exc) from None


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; a missing file or a syntax error raises :class:`ConfigError`."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(path, "config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, f"not valid TOML ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, f"not valid TOML: not UTF-8 text (byte {exc.start})") from None
    except RecursionError:
        raise ConfigError(path, "not valid TOML: nested too deeply") from None
    except OSError as exc:
        raise ConfigError(path, f"cannot read config file ({exc.strerror})") from None


def load_config(model: type[M], path: str | Path) -> M:
    """Read and validate a TOML config file; relative paths inside it stay as written."""
    return validate_config(model, read_toml(path), path)
