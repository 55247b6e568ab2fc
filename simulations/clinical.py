"""The clinical scores of a run's model: contour distances in mm and the EF error, per site.

Dice on the model's grid is what training optimises; a cardiologist reads contours and volumes
at the image's own resolution. So every centralised and federated run's final model is also
applied the way ``echofl-predict`` applies it (each site's test recordings at their native size
and spacing, :func:`common.predict.segment`) and scored against the full ground truth:

* ``hd95-X`` / ``msd-X``: HD95 and mean symmetric surface distance of structure X in mm (mean
  over the frames where both masks have X; :mod:`common.measure.agreement`);
* ``ef-mae``: mean absolute difference between the EF measured (single-plane method of disks,
  ED and ES as annotated) on the predicted masks and on the reference masks, in EF points, over
  the ``ef-n`` recordings where both have an LV at ED and ES.

A site without spacing (or without ED/ES pairs) has no EF entry. The recordings are read once
per study (:class:`ClinicalScorer`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from common.config import SiteSpec
from common.labels import Structure
from common.measure.agreement import agreement
from common.measure.recording import measure
from common.model_card import ModelCard, card_meta
from common.predict import Recording, segment, site_recordings
from common.recipe import Recipe

KEYS = ("hd95", "msd")


def clinical_scores(
    model: torch.nn.Module, card: ModelCard, recordings: Sequence[Recording]
) -> dict[str, float]:
    """One site's row (see the module docstring) from its test ``recordings``."""
    sums: dict[str, list[float]] = {}
    errors = []
    model.eval()
    for rec in recordings:
        assert rec.truth is not None
        labels = segment(model, card, rec.frames)
        for t in range(len(labels)):
            for key, value in agreement(
                labels[t], rec.truth[t], rec.spacing_mm, rec.truth_structures
            ).items():
                if key.split("-")[0] in KEYS and np.isfinite(value):
                    sums.setdefault(key, []).append(float(value))
        if rec.ed is None or rec.es is None or rec.spacing_mm is None:
            continue
        if Structure.LV not in rec.truth_structures:
            continue
        predicted = measure(rec.name, labels, rec.spacing_mm, rec.ed, rec.es)["ef_percent"]
        reference = measure(rec.name, rec.truth, rec.spacing_mm, rec.ed, rec.es)["ef_percent"]
        if predicted != "" and reference != "":
            errors.append(abs(float(predicted) - float(reference)))
    row = {key: round(float(np.mean(values)), 3) for key, values in sorted(sums.items())}
    if errors:
        row["ef-mae"] = round(float(np.mean(errors)), 3)
        row["ef-n"] = float(len(errors))
    return row


class ClinicalScorer:
    """Scores models on the test recordings of ``sites``, read from their native files once."""

    def __init__(self, sites: Sequence[SiteSpec]) -> None:
        self.sites = list(sites)
        self._recordings: dict[str, list[Recording]] = {}

    def recordings(self, site: SiteSpec) -> list[Recording]:
        if site.name not in self._recordings:
            self._recordings[site.name] = site_recordings(
                site.format,
                site.root,
                split="test",
                max_cases=site.max_cases,
                **site.options,
            )
        return self._recordings[site.name]

    def score(self, model: torch.nn.Module, recipe: Recipe) -> dict[str, dict[str, float]]:
        card = ModelCard.model_validate(
            {k: v for k, v in card_meta(recipe).items() if k in ModelCard.model_fields}
        )
        with torch.no_grad():
            return {
                site.name: clinical_scores(model, card, self.recordings(site))
                for site in self.sites
            }


def clinical_markdown(results: Sequence[dict], conditions: Sequence[str]) -> str:
    """A report section: per condition and site, mean over seeds of HD95 and MSD (mm) per
    structure and of the EF error; empty when no run has clinical scores."""
    lines = []
    for name in conditions:
        runs = [r for r in results if r["condition"] == name and "clinical" in r]
        for site in sorted({s for r in runs for s in r["clinical"]}):
            rows = [r["clinical"][site] for r in runs if site in r["clinical"]]

            def mean(key: str, rows: list[dict] = rows) -> str:
                values = [row[key] for row in rows if key in row]
                return f"{np.mean(values):.2f}" if values else "-"

            cells = [mean(f"{m}-{s.name}") for m in KEYS for s in Structure]
            lines.append(
                f"| {name} | {site} | {len(rows)} | " + " | ".join(cells) + f" | {mean('ef-mae')} |"
            )
    if not lines:
        return ""
    head = " | ".join(f"{m.upper()} {s.name}" for m in KEYS for s in Structure)
    return (
        "\n## Contours (mm) and EF error, native resolution\n\n"
        "The final model applied as `echofl-predict` applies it, on each site's test recordings "
        "at their own size and spacing, against the full ground truth (`simulations/clinical.py`):"
        " HD95 and mean surface distance in mm (pixels where a format has no spacing), mean "
        "absolute EF error in EF points (single-plane method of disks, against the EF of the "
        "reference masks; `-` without spacing). Mean over seeds.\n\n"
        f"| condition | site | seeds | {head} | EF error |\n"
        + "|---" * (4 + 2 * len(Structure))
        + "|\n"
        + "\n".join(lines)
        + "\n"
    )
