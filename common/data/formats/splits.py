"""Case-level train/val/test splits shared by the format modules.

Two sources: split list files (one case id per line, as CAMUS ships them) and, for datasets that
ship no split, a deterministic hash of the case id. The hash split depends on the case id alone,
so a case keeps its split whatever else the site holds and whichever machine loads it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

from common.data.sample import SPLITS, Split
from common.errors import DataError, OptionError

DEFAULT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)


def hash_split(case_id: str, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> Split:
    """Deterministic split of ``case_id`` from its SHA-256 hash.

    ``u`` = the first 8 bytes of ``sha256(case_id.encode("utf-8"))`` read as a big-endian
    integer divided by 2**64 (uniform in [0, 1)); the case is ``train`` when
    ``u < fractions[0]``, ``val`` when ``u < fractions[0] + fractions[1]``, else ``test``.
    """
    train, val, _ = check_fractions(fractions)
    digest = hashlib.sha256(case_id.encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    if u < train:
        return "train"
    if u < train + val:
        return "val"
    return "test"


def check_fractions(fractions: Iterable[float]) -> tuple[float, float, float]:
    """Validate (train, val, test) fractions: three non-negative numbers summing to 1."""
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or any(f < 0 for f in values) or abs(sum(values) - 1.0) > 1e-6:
        raise OptionError(
            "split_fractions",
            "split fractions must be three non-negative numbers (train, val, test) summing to "
            f"1, got {fractions!r}",
        )
    return values  # type: ignore[return-value]


def read_split_lists(files: Mapping[Split, Path], case_ids: Iterable[str]) -> dict[str, Split]:
    """Split of each case from list files (one case id per line, blank lines ignored).

    Every file in ``files`` must exist. A case listed in two files, or a case of ``case_ids``
    listed in none, raises :class:`DataError` naming the case and the file(s). Ids listed but
    absent from ``case_ids`` are ignored (a site may hold part of a dataset).
    """
    listed: dict[str, tuple[Split, Path]] = {}
    for split, path in files.items():
        for case_id in _read_id_list(path):
            if case_id in listed and listed[case_id][0] != split:
                other = listed[case_id][1]
                raise DataError(path, f"case {case_id!r} is also listed in {other.name}")
            listed[case_id] = (split, path)
    result: dict[str, Split] = {}
    for case_id in case_ids:
        if case_id not in listed:
            names = ", ".join(p.name for p in files.values())
            folder = next(iter(files.values())).parent
            raise DataError(folder, f"case {case_id!r} is in no split file ({names})")
        result[case_id] = listed[case_id][0]
    return result


def write_split_lists(files: Mapping[Split, Path], splits: Mapping[str, Split]) -> None:
    """Write one list file per split (sorted case ids, one per line; possibly empty)."""
    for split, path in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        ids = sorted(c for c, s in splits.items() if s == split)
        path.write_text("".join(f"{c}\n" for c in ids), encoding="utf-8")


def parse_split(value: str, where: Path, context: str) -> Split:
    """``train``/``val``/``test`` (any case) -> :data:`Split`; anything else raises DataError."""
    key = value.strip().lower()
    if key not in SPLITS:
        raise DataError(where, f"{context}: unknown split {value!r} (expected train, val or test)")
    return key  # type: ignore[return-value]


def _read_id_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(path, "missing split list file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"unreadable split list file ({exc})") from exc
    return [line.strip() for line in text.splitlines() if line.strip()]
