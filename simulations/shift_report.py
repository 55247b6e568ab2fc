"""The report of a study across the shift-strength axis (``[shift]`` in an experiment config).

Where does the shortcut appear, and does label dropout remove it? Per level s and condition,
per seed:

- **U**: mean Dice over the *unannotated cells* (a structure a training site never annotates,
  scored on that site's own test split against the full ground truth): where adaptive CE can
  learn "this domain never has structure X";
- **N**: the same over the annotated cells;
- the **gap**: the fully labelled bound's U minus a condition's U (paired by seed), tested for
  the conditions without label dropout (family "shortcut"): it is there even without any domain
  shift, from having fewer labels;
- the **domain-dependent gap**: that deficit on U minus the same deficit on N (family "domain
  gap"), per condition: the part of the gap that the unannotated cells alone pay, the shortcut
  the paper describes;
- the **structure-matched gap** (family "matched gap"): each unannotated cell's Dice minus the
  same structure's where it is annotated, averaged, against the bound's. U - N mixes
  structures (LA is half of U but a fifth of N when one site annotates it), so a structure that
  is poor everywhere shows up as a "domain gap"; the matched gap does not count it.

Tests, paired by seed, on U: the shortcut (the fully labelled bound against each condition
without label dropout), and every other condition against its *twin* (the same condition
without label dropout; a variant without label dropout against the plain baseline of its kind),
each with the mean difference and its Student t 95% interval, Cohen's d_z, and a two-sided
Wilcoxon signed-rank p; each claim's p-values are Holm-adjusted over its levels. A verdict per
claim: reproduced (Holm p < 0.05 and the interval on the claimed side), not reproduced,
reproduced only from s* on, or underpowered (too few seeds for any p to pass).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.data.formats import format_module
from common.labels import Structure
from simulations.clinical import clinical_markdown
from simulations.experiment import Condition, ExperimentConfig, level_tag
from simulations.study import STRUCTURES, Cell, cohen_dz, holm, paired, per_seed, wilcoxon_p

ALPHA = 0.05


def labelled_sets(config: ExperimentConfig) -> dict[str, set[str]]:
    """What each training site annotates, from its config (folder: ``labelled``, default all;
    other formats: the format's own set)."""
    out = {}
    for site in config.train_sites:
        if site.labelled is not None:
            out[site.name] = {s.name for s in site.labelled}
        elif site.format == "folder":
            out[site.name] = {s.name for s in Structure}
        else:
            out[site.name] = {s.name for s in format_module(site.format).LABELLED}
    return out


def cells(config: ExperimentConfig) -> tuple[list[Cell], list[Cell]]:
    """(unannotated, annotated) cells of the training sites."""
    labelled = labelled_sets(config)
    sites = [s.name for s in config.train_sites]
    unannotated = [Cell(s, x) for s in sites for x in STRUCTURES if x not in labelled[s]]
    annotated = [Cell(s, x) for s in sites for x in STRUCTURES if x in labelled[s]]
    return unannotated, annotated


def _without_dropout(recipe: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in recipe.items() if k != "label_dropout"}


def twin_of(condition: Condition, conditions: Sequence[Condition]) -> Condition | None:
    """What ``condition`` is compared with: the same kind and recipe without label dropout, or,
    for a condition without label dropout, the plain baseline of its kind (empty recipe)."""
    if condition.labels != "partial":
        return None
    own = _without_dropout(condition.recipe)
    target = own if own != condition.recipe else {}
    if condition.recipe == {}:
        return None  # the baseline itself
    for other in conditions:
        if (
            other is not condition
            and other.kind == condition.kind
            and other.labels == "partial"
            and other.recipe == target
        ):
            return other
    return None


def bound_of(condition: Condition, conditions: Sequence[Condition]) -> Condition | None:
    """The fully labelled condition of the same kind with the same recipe, else the plain one."""
    full = [c for c in conditions if c.kind == condition.kind and c.labels == "full"]
    same = [c for c in full if c.recipe == _without_dropout(condition.recipe)]
    plain = [c for c in full if c.recipe == {}]
    return (same or plain or [None])[0]


@dataclass
class Test:
    family: str  # "shortcut", "domain gap", "matched gap" or "improvement"
    level: float
    a: str  # the reference condition
    b: str  # the condition tested against it
    seeds: int
    mean_a: float
    mean_b: float
    diff: float  # mean of b - a
    ci_low: float
    ci_high: float
    dz: float
    p: float
    p_holm: float = math.nan
    family_size: int = 1  # the tests the Holm adjustment ran over

    @property
    def significant(self) -> bool:
        return self.p_holm < ALPHA and (self.ci_low > 0 or self.ci_high < 0)

    @property
    def smallest_adjusted_p(self) -> float:
        """The smallest Holm p this test could reach: every seed one way (exact Wilcoxon p
        2 / 2^n), times the family's size."""
        return min(1.0, self.family_size * 2.0 / 2.0**self.seeds)

    @property
    def verdict(self) -> str:
        if self.seeds < 2:
            return "n/a"
        if not self.significant:
            return "underpowered" if self.smallest_adjusted_p >= ALPHA else "tie"
        return "higher" if self.diff > 0 else "lower"


def _test(
    family: str, level: float, a: dict[int, float], b: dict[int, float], names: tuple[str, str]
) -> Test | None:
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    x, y = [a[s] for s in seeds], [b[s] for s in seeds]
    p = paired(x, y)
    return Test(
        family,
        level,
        names[0],
        names[1],
        len(seeds),
        p.mean_a,
        p.mean_b,
        p.mean_diff,
        p.ci_low,
        p.ci_high,
        cohen_dz(x, y),
        wilcoxon_p(x, y),
    )


def _u_minus_n(cellv: Mapping[str, dict[int, float]]) -> dict[int, float]:
    """Per seed: U - N (a seed missing either is left out)."""
    return {s: cellv["U"][s] - cellv["N"][s] for s in cellv["U"] if s in cellv["N"]}


def _matched(
    results: Sequence[dict], name: str, unannotated: Sequence[Cell], annotated: Sequence[Cell]
) -> dict[int, float]:
    """Per seed: the mean over the unannotated cells of (Dice there - mean Dice of the same
    structure where it is annotated). Unlike U - N, a structure that is poor everywhere (not
    learnt, not a domain effect) does not count, whatever its share of U and N."""
    diffs: dict[int, list[float]] = {}
    for cell in unannotated:
        twins = [c for c in annotated if c.structure == cell.structure]
        if not twins:
            continue
        own, there = per_seed(results, name, [cell]), per_seed(results, name, twins)
        for seed in own:
            if seed in there:
                diffs.setdefault(seed, []).append(own[seed] - there[seed])
    return {seed: float(np.mean(v)) for seed, v in diffs.items()}


def analyse(config: ExperimentConfig, per_level: Mapping[float, Sequence[dict]]) -> dict:
    """Every number of the report (JSON-able)."""
    unannotated, annotated = cells(config)
    conditions = config.conditions
    levels = sorted(per_level)
    table: dict[str, dict[str, dict[str, dict[int, float]]]] = {}
    tests: list[Test] = []
    for level in levels:
        results = per_level[level]
        row: dict[str, dict[str, dict[int, float]]] = {}
        for c in conditions:
            row[c.name] = {
                "U": per_seed(results, c.name, unannotated),
                "N": per_seed(results, c.name, annotated),
                **{f"{x.site}/{x.structure}": per_seed(results, c.name, [x]) for x in unannotated},
            }
        table[f"{level:g}"] = row
        for c in conditions:
            if c.labels != "partial":
                continue
            bound = bound_of(c, conditions)
            if bound is not None and _without_dropout(c.recipe) == c.recipe:  # no label dropout
                pair = (c.name, bound.name)
                t = _test("shortcut", level, row[c.name]["U"], row[bound.name]["U"], pair)
                tests += [t] if t else []
            if bound is not None:
                # the domain-dependent part: the deficit to the bound on U beyond the one on N
                own, full = _u_minus_n(row[c.name]), _u_minus_n(row[bound.name])
                t = _test("domain gap", level, own, full, (c.name, bound.name))
                tests += [t] if t else []
                # the same, structure by structure: each unannotated cell against the same
                # structure where it is annotated
                own = _matched(results, c.name, unannotated, annotated)
                full = _matched(results, bound.name, unannotated, annotated)
                t = _test("matched gap", level, own, full, (c.name, bound.name))
                tests += [t] if t else []
            twin = twin_of(c, conditions)
            if twin is not None:
                t = _test(
                    "improvement", level, row[twin.name]["U"], row[c.name]["U"], (twin.name, c.name)
                )
                tests += [t] if t else []
    # Holm within each claim (one comparison over every level): its verdict across levels
    # controls the family-wise error of that claim
    for claim in {(t.family, t.a, t.b) for t in tests}:
        members = [t for t in tests if (t.family, t.a, t.b) == claim]
        for t, adjusted in zip(members, holm([t.p for t in members]), strict=True):
            t.p_holm, t.family_size = adjusted, len(members)
    return {
        "levels": levels,
        "levels_in_study": sorted(config.shift.levels) if config.shift else levels,
        "unannotated": [f"{c.site}/{c.structure}" for c in unannotated],
        "annotated": [f"{c.site}/{c.structure}" for c in annotated],
        "table": table,
        "tests": [asdict(t) | {"verdict": t.verdict} for t in tests],
    }


def claim_verdict(tests: Sequence[Test], want: str, levels: Sequence[float] = ()) -> str:
    """Over the levels of one comparison: reproduced everywhere, nowhere, only from s* on, only
    up to s*, or at scattered levels; ``levels`` (the study's) names those without a test yet."""
    by_level = sorted(tests, key=lambda t: t.level)
    missing = sorted(set(levels) - {t.level for t in by_level})
    note = (
        f" (no finished runs yet at s = {', '.join(f'{s:g}' for s in missing)})" if missing else ""
    )
    if not by_level:
        return "not tested" + note
    if all(t.verdict == "underpowered" for t in by_level):
        return "cannot be decided with this many seeds (underpowered at every level)" + note
    hits = [t.verdict == want for t in by_level]
    on = ", ".join(f"{t.level:g}" for t, h in zip(by_level, hits, strict=True) if h)
    if all(hits):
        return "reproduced at every level tested" + note
    if not any(hits):
        return "not reproduced at any level" + note
    first, last = hits.index(True), len(hits) - 1 - hits[::-1].index(True)
    if all(hits[first:]):
        return f"reproduced only from s* = {by_level[first].level:g} on" + note
    if all(hits[: last + 1]):
        return f"reproduced only up to s = {by_level[last].level:g}" + note
    return f"reproduced at s = {on} only" + note


def _fmt(values: dict[int, float]) -> str:
    if not values:
        return "-"
    v = np.array(list(values.values()))
    return f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}"


def markdown(config: ExperimentConfig, analysis: dict, command: str = "") -> str:
    assert config.shift is not None
    tests = [Test(**{k: v for k, v in t.items() if k != "verdict"}) for t in analysis["tests"]]
    names = [c.name for c in config.conditions]
    seeds = config.seeds
    lines = [
        f"# Shift-strength study: {config.name}",
        "",
        f"Shifted sites {', '.join(config.shift.sites)} move from vendor "
        f"{config.shift.reference}'s domain (s = 0) to their own vendor with the structure "
        "shift (s = 1); levels "
        f"{', '.join(f'{s:g}' for s in analysis['levels'])}; seeds {', '.join(map(str, seeds))}.",
        f"Unannotated cells (U): {', '.join(analysis['unannotated'])}; annotated (N): "
        f"{', '.join(analysis['annotated'])}. Dice on each site's own test split, full ground "
        "truth, final models.",
    ]
    if command:
        lines += ["", f"Reproduce: `{command}`"]
    lines += ["", "## Mean Dice (± sd over seeds)", ""]
    lines += [
        "| s | condition | U (unannotated) | N (annotated) | "
        + " | ".join(analysis["unannotated"])
        + " |"
    ]
    lines += ["|---" * (4 + len(analysis["unannotated"])) + "|"]
    for level, row in analysis["table"].items():
        for name in names:
            cellv = row[name]
            lines.append(
                f"| {level} | {name} | {_fmt(cellv['U'])} | {_fmt(cellv['N'])} | "
                + " | ".join(_fmt(cellv[c]) for c in analysis["unannotated"])
                + " |"
            )
    lines += ["", "## Per seed: U (mean Dice over the unannotated cells)", ""]
    lines += ["| s | condition | " + " | ".join(f"seed {s}" for s in seeds) + " |"]
    lines += ["|---" * (2 + len(seeds)) + "|"]
    for level, row in analysis["table"].items():
        for name in names:
            u = row[name]["U"]
            lines.append(
                f"| {level} | {name} | "
                + " | ".join(f"{u[s]:.3f}" if s in u else "-" for s in seeds)
                + " |"
            )
    lines += [
        "",
        "## Paired tests (by seed) on U",
        "",
        "diff = b - a, its Student t 95% interval, Cohen's d_z, two-sided Wilcoxon signed-rank "
        f"p (exact up to 16 seeds) and the Holm-adjusted p over the claim's levels (alpha "
        f"{ALPHA}); a difference counts when that p is below alpha and the interval excludes 0. "
        "*underpowered*: even every seed one way could not reach it (n seeds give an exact "
        "Wilcoxon p of at least 2 / 2^n).",
        "",
        "| family | s | a | b | seeds | a | b | diff [95% CI] | d_z | Wilcoxon p | Holm p | "
        "verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in tests:
        lines.append(
            f"| {t.family} | {t.level:g} | {t.a} | {t.b} | {t.seeds} | {t.mean_a:.3f} | "
            f"{t.mean_b:.3f} | {t.diff:+.3f} [{t.ci_low:+.3f}, {t.ci_high:+.3f}] | {t.dz:+.2f} | "
            f"{t.p:.4f} | {t.p_holm:.4f} | {t.verdict} |"
        )
    lines += ["", "## Verdicts", ""]
    order = {"shortcut": 0, "domain gap": 1, "matched gap": 2, "improvement": 3}
    pairs = sorted({(t.family, t.a, t.b) for t in tests}, key=lambda k: (order[k[0]], k))
    for family, a, b in pairs:
        members = [t for t in tests if (t.family, t.a, t.b) == (family, a, b)]
        if family == "shortcut":
            claim = f"the gap ({a} below {b} on U)"
        elif family == "domain gap":
            claim = f"a domain-dependent gap for {a} (its deficit to {b} larger on U than on N)"
        elif family == "matched gap":
            claim = (
                f"a structure-matched domain gap for {a} (each unannotated cell below the same "
                f"structure where annotated, by more than for {b})"
            )
        else:
            claim = f"{b} improves on {a} on U"
        verdict = claim_verdict(members, "higher", analysis["levels_in_study"])
        lines.append(f"- {claim}: **{verdict}**")
    lines += ["", "![U against shift strength](curves.png)", ""]
    return "\n".join(lines) + "\n"


def plot(config: ExperimentConfig, analysis: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = analysis["levels"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, c in enumerate(config.conditions):
        for ax, key in zip(axes, ("U", "N"), strict=True):
            means, xs, ys = [], [], []
            for level in levels:
                v = analysis["table"][f"{level:g}"][c.name][key]
                means.append(np.mean(list(v.values())) if len(v) >= 2 else math.nan)
                xs += [level + 0.01 * (i - 2)] * len(v)
                ys += list(v.values())
            (line,) = ax.plot(levels, means, "o-", label=c.name, lw=1.5)
            ax.scatter(xs, ys, s=8, color=line.get_color(), alpha=0.45)
    axes[0].set(xlabel="shift strength s", ylabel="Dice, unannotated cells (U)")
    axes[1].set(xlabel="shift strength s", ylabel="Dice, annotated cells (N)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_shift_report(
    config: ExperimentConfig,
    per_level: Mapping[float, Sequence[dict]],
    folder: Path,
    *,
    command: str = "",
    progress: tuple[int, int] | None = None,
) -> dict[str, Path]:
    """Write results.md, analysis.json, curves.png (and the overlays) into ``folder``;
    ``progress`` = (runs finished, runs in the study) when the study is not complete."""
    folder.mkdir(parents=True, exist_ok=True)
    analysis = analyse(config, per_level)
    paths = {
        "json": folder / "analysis.json",
        "markdown": folder / "results.md",
        "curves": folder / "curves.png",
    }
    paths["json"].write_text(json.dumps(analysis, indent=1))
    overlays = copy_overlays(config, analysis["levels"], folder)
    text = markdown(config, analysis, command)
    if progress is not None and progress[0] < progress[1]:
        head, _, body = text.partition("\n\n")
        text = (
            f"{head}\n\n**In progress: {progress[0]} of {progress[1]} runs finished**; the "
            "tables and tests below use those only.\n\n" + body
        )
    names = [c.name for c in config.conditions]
    for level in sorted(per_level):
        section = clinical_markdown(per_level[level], names)
        if section:
            text += section.replace("native resolution\n", f"native resolution, s = {level:g}\n")
    if overlays:
        text += (
            "\n## Overlays (each level's report, the shifted sites)\n\n"
            + "\n".join(f"![{name}]({name})" for name in overlays)
            + "\n"
        )
    paths["markdown"].write_text(text)
    plot(config, analysis, paths["curves"])
    return paths


def copy_overlays(config: ExperimentConfig, levels: Sequence[float], folder: Path) -> list[str]:
    """The shifted sites' overlay sheets of every level's own report, side by side here."""
    assert config.shift is not None
    names = []
    for level in levels:
        report = config.at_level(level).run_dir / "report"
        for site in config.shift.sites:
            source = report / f"overlays-{site}.png"
            if source.is_file():
                name = f"overlays-{level_tag(level)}-{site}.png"
                shutil.copyfile(source, folder / name)
                names.append(name)
    return names
