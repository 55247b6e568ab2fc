"""Label schema shared by every dataset, loss and metric (the CAMUS convention).

Mask values: ``0`` background, ``1`` LV blood pool, ``2`` LV myocardium, ``3`` left atrium.
A *labelled set* is the set of structures that an image's mask actually annotates; pixels of a
structure outside the labelled set are unknown and appear as background in that mask.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import numpy as np

BACKGROUND = 0
NUM_CLASSES = 4  # background + the three structures


class Structure(enum.IntEnum):
    """A cardiac structure; the value is its mask label."""

    LV = 1
    MYO = 2
    LA = 3


ALL_STRUCTURES: frozenset[Structure] = frozenset(Structure)
STRUCTURE_NAMES: tuple[str, ...] = tuple(s.name for s in Structure)

LabelledSet = frozenset[Structure]


def parse_structure(name: str | int | Structure) -> Structure:
    """Return the structure named ``name`` ("LV", "myo", 2, ...); raise ``ValueError`` otherwise."""
    if isinstance(name, Structure):
        return name
    if isinstance(name, int) and not isinstance(name, bool):
        try:
            return Structure(name)
        except ValueError:
            raise ValueError(
                f"unknown structure label {name}: expected one of "
                f"{', '.join(f'{s.value} ({s.name})' for s in Structure)}"
            ) from None
    if isinstance(name, str):
        key = name.strip().upper()
        if key in Structure.__members__:
            return Structure[key]
    raise ValueError(f"unknown structure {name!r}: expected one of {', '.join(STRUCTURE_NAMES)}")


def parse_labelled_set(names: Iterable[str | int | Structure]) -> LabelledSet:
    """Parse a labelled set; an empty set is refused (such a site has nothing to train on)."""
    labelled = frozenset(parse_structure(n) for n in names)
    if not labelled:
        raise ValueError("a labelled set must name at least one structure (LV, MYO, LA)")
    return labelled


def format_labelled_set(labelled: Iterable[Structure]) -> str:
    """``{LV, LA}`` in label order, for logs and tables."""
    return "{" + ", ".join(s.name for s in sorted(labelled)) + "}"


def labelled_vector(labelled: Iterable[Structure]) -> np.ndarray:
    """Boolean vector of length ``NUM_CLASSES``: index 0 (background) is always True."""
    vec = np.zeros(NUM_CLASSES, dtype=bool)
    vec[BACKGROUND] = True
    for s in labelled:
        vec[int(s)] = True
    return vec


def labelled_from_vector(vec: np.ndarray) -> LabelledSet:
    """Inverse of :func:`labelled_vector`."""
    return frozenset(Structure(i) for i in range(1, NUM_CLASSES) if bool(vec[i]))


def partially_labelled(labelled_sets: Iterable[Iterable[Structure]]) -> LabelledSet:
    """Structures annotated by some of the given labelled sets but not by all of them.

    This is the set that label dropout acts on: a structure every site annotates carries no
    domain information in its presence, and one no site annotates cannot be dropped.
    """
    sets = [frozenset(s) for s in labelled_sets]
    if not sets:
        return frozenset()
    union = frozenset().union(*sets)
    common = frozenset.intersection(*sets)
    return union - common


def invalid_label_values(mask: np.ndarray) -> list[int]:
    """Values in ``mask`` that are not in the schema (sorted); empty when the mask is valid."""
    values = np.unique(mask)
    return [int(v) for v in values if v < 0 or v >= NUM_CLASSES or v != int(v)]
