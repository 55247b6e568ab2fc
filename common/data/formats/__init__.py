"""Dataset formats: one module per native on-disk layout, and a registry over them.

Every format module offers the same two functions:

- ``load(root, *, site, **options) -> list[Sample]``: the annotated frames of a site tree, each
  built through :func:`common.data.sample.make_sample`, with the full ground truth attached when the
  site has an ``echofl-full-ground-truth.npz`` (synthetic sites);
- ``write(root, recordings, *, labelled=None, **options) -> Path``: the native tree of some
  :class:`common.data.formats.recording.Recording` objects (used by the synthetic generator).

=================  ===========================  =====================
name               module                       labelled set
=================  ===========================  =====================
camus-nifti        :mod:`.camus_nifti`          {LV, MYO, LA}
camus-mhd          :mod:`.camus_legacy`         {LV, MYO, LA}
echonet-dynamic    :mod:`.echonet_dynamic`      {LV}
hmc-qu             :mod:`.hmc_qu`               {MYO}
folder             :mod:`.folder`               declared by the site
=================  ===========================  =====================
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from common.errors import ConfigError, DataError
from common.labels import Structure, parse_labelled_set

if TYPE_CHECKING:
    from common.data.formats.recording import Recording
    from common.data.sample import Sample

_MODULES: dict[str, str] = {
    "camus-nifti": "camus_nifti",
    "camus-mhd": "camus_legacy",
    "echonet-dynamic": "echonet_dynamic",
    "hmc-qu": "hmc_qu",
    "folder": "folder",
}


class _FormatRegistry(Mapping[str, ModuleType]):
    """Format name -> module, imported on first use.

    Lazy so that importing a light submodule (``common.data.formats.recording``) does not pull in
    nibabel, SimpleITK, OpenCV, openpyxl and scikit-image.
    """

    def __getitem__(self, name: str) -> ModuleType:
        return importlib.import_module(f"{__name__}.{_MODULES[name]}")

    def __iter__(self) -> Iterator[str]:
        return iter(_MODULES)

    def __len__(self) -> int:
        return len(_MODULES)


FORMATS: Mapping[str, ModuleType] = _FormatRegistry()


def format_module(format: str) -> ModuleType:
    """The module of a format name; an unknown name raises ``ValueError`` listing the known."""
    try:
        return FORMATS[format]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown dataset format {format!r}: expected one of {', '.join(FORMATS)}"
        ) from None


def load_site(format: str, root: str | Path, *, site: str, **options: Any) -> list[Sample]:
    """All annotated samples of the site at ``root`` stored in ``format``.

    ``options`` go to the format's ``load`` (e.g. ``views``, ``use_half_sequence`` for
    camus-nifti, ``fold`` for camus-mhd, ``frame_stride`` for hmc-qu). A missing root or a site
    without any annotated frame raises :class:`DataError`.
    """
    module = format_module(format)
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "site root does not exist or is not a folder")
    known = [n for n in inspect.signature(module.load).parameters if n not in ("root", "site")]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(
            f"{format} loader",
            f"unknown loader option(s) {', '.join(unknown)}; known: {', '.join(known) or 'none'}",
        )
    samples = module.load(root, site=site, **options)
    if not samples:
        raise DataError(root, f"empty site: no annotated frames found under {root}")
    return samples


def write_site(
    format: str,
    root: str | Path,
    recordings: Sequence[Recording],
    *,
    labelled: Iterable[str | int | Structure] | None = None,
    **options: Any,
) -> Path:
    """Write ``recordings`` at ``root`` in ``format``; returns the site root.

    ``labelled`` (structure names or labels) is the site's labelled set: required to match the
    format's own set for the public formats, free for ``folder`` (default: all structures).
    """
    module = format_module(format)
    parsed = None if labelled is None else parse_labelled_set(labelled)
    return module.write(Path(root), recordings, labelled=parsed, **options)
