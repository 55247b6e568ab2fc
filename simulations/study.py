"""The label-dropout study's statistics: where the shortcut can show, paired effects, verdicts.

Conditions are recognised by what they are (kind, loss, label-dropout p, labels, strategy),
not by their names. Every comparison is paired by seed (same seed = same initial weights,
data order and augmentation draws), and a difference is called better/worse only when its
95% confidence interval over seeds (Student t) excludes zero; otherwise it is a tie.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from common.recipe import Recipe, merge
from simulations.experiment import Condition

STRUCTURES = ("LV", "MYO", "LA")


@dataclass(frozen=True)
class Cell:
    """One structure on one domain (site)."""

    site: str
    structure: str


@dataclass(frozen=True)
class Paired:
    """Paired comparison of condition ``b`` against ``a`` on one quantity, over seeds."""

    seeds: int
    mean_a: float
    mean_b: float
    mean_diff: float
    ci_low: float
    ci_high: float

    @property
    def relative(self) -> float:
        return self.mean_b / self.mean_a - 1 if self.mean_a > 0 else math.nan

    @property
    def verdict(self) -> str:
        if self.seeds < 2 or math.isnan(self.ci_low):
            return "n/a (1 seed)"
        if self.ci_low > 0:
            return "better"
        if self.ci_high < 0:
            return "worse"
        return "tie"


def paired(a: Sequence[float], b: Sequence[float]) -> Paired:
    """Compare ``b`` against ``a`` (same seeds, same order)."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    d = y - x
    n = len(d)
    if n >= 2:
        half = stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n)
        low, high = d.mean() - half, d.mean() + half
    else:
        low = high = math.nan
    return Paired(n, float(x.mean()), float(y.mean()), float(d.mean()), float(low), float(high))


EXACT_MAX_N = 16  # Wilcoxon: every sign assignment enumerated up to here (2 ** 16 of them)


def wilcoxon_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p of ``b - a`` (Wilcoxon 1945). Zero differences are
    dropped; ties get mid-ranks. Up to :data:`EXACT_MAX_N` differences the p is exact (the
    statistic's distribution over every assignment of signs to the ranks); beyond, the normal
    approximation with the tie-corrected variance and no continuity correction. NaN with no
    non-zero difference."""
    d = np.asarray(b, float) - np.asarray(a, float)
    d = d[d != 0]
    n = len(d)
    if n == 0:
        return math.nan
    ranks = stats.rankdata(np.abs(d))
    r_plus = float(ranks[d > 0].sum())
    if n <= EXACT_MAX_N:
        signs = (np.arange(2**n)[:, None] >> np.arange(n)) & 1  # every subset of positive ranks
        dist = signs @ ranks
        eps = 1e-9 * ranks.sum()
        low, high = np.mean(dist <= r_plus + eps), np.mean(dist >= r_plus - eps)
        return float(min(1.0, 2.0 * min(low, high)))
    mean = n * (n + 1) / 4.0
    _, counts = np.unique(ranks, return_counts=True)
    var = n * (n + 1) * (2 * n + 1) / 24.0 - float((counts**3 - counts).sum()) / 48.0
    z = (r_plus - mean) / math.sqrt(var)
    return float(2.0 * stats.norm.sf(abs(z)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (Holm 1979), in the input's order: the k-th smallest of m is
    multiplied by m - k + 1, made non-decreasing, capped at 1. NaN stays NaN (not counted)."""
    p = np.asarray(pvalues, float)
    ok = np.flatnonzero(~np.isnan(p))
    out = np.full(len(p), math.nan)
    order = ok[np.argsort(p[ok], kind="stable")]
    m, running = len(order), 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return out.tolist()


def cohen_dz(a: Sequence[float], b: Sequence[float]) -> float:
    """Standardised paired effect: mean of ``b - a`` over its standard deviation."""
    d = np.asarray(b, float) - np.asarray(a, float)
    sd = d.std(ddof=1) if len(d) > 1 else math.nan
    return float(d.mean() / sd) if sd and sd > 0 else math.nan


def per_seed(
    results: Sequence[dict[str, Any]], condition: str, cells: Sequence[Cell]
) -> dict[int, float]:
    """seed -> mean Dice of ``condition`` over ``cells`` (cells it did not score are skipped;
    a seed missing any cell is left out)."""
    out = {}
    for r in results:
        if r["condition"] != condition:
            continue
        values = [r["test"].get(c.site, {}).get(c.structure) for c in cells]
        if all(v is not None for v in values):
            out[r["seed"]] = float(np.mean(values))
    return out


def compare(
    results: Sequence[dict[str, Any]], base: str, other: str, cells: Sequence[Cell]
) -> Paired | None:
    a, b = per_seed(results, base, cells), per_seed(results, other, cells)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    return paired([a[s] for s in seeds], [b[s] for s in seeds])


def unannotated_cells(
    labelled: Mapping[str, set[str]], train_sites: Sequence[str], test_sites: Sequence[str]
) -> list[Cell]:
    """Where the shortcut can exist: structures a training site never annotates, on that
    site's own domain. Evaluation-only (unseen) sites are listed separately."""
    return [
        Cell(site, s)
        for site in train_sites
        for s in STRUCTURES
        if s not in labelled.get(site, set())
    ]


def annotated_cells(labelled: Mapping[str, set[str]], train_sites: Sequence[str]) -> list[Cell]:
    return [
        Cell(site, s) for site in train_sites for s in STRUCTURES if s in labelled.get(site, set())
    ]


@dataclass(frozen=True)
class Roles:
    """The conditions of a study, by role (None when the study lacks one)."""

    adaptive: str | None
    dropout: list[tuple[float, str]]  # (p, name), federated FedAvg
    fedprox_dropout: list[tuple[float, str]]
    upper: str | None
    naive: str | None
    central: str | None
    central_dropout: list[tuple[float, str]]
    local: str | None


def roles(conditions: Sequence[Condition], base: Recipe | None = None) -> Roles:
    """Which condition plays which part in the analysis, read from each condition's recipe
    (``base`` with the condition's changes)."""
    base = base or Recipe()

    @dataclass(frozen=True)
    class View:
        name: str
        kind: str
        labels: str
        loss: str
        p: float
        strategy: str

    views = []
    for c in conditions:
        recipe = Recipe.model_validate(merge(base, c.recipe))
        views.append(
            View(
                c.name,
                c.kind,
                c.labels,
                recipe.loss.name,
                recipe.label_dropout.p,
                recipe.aggregation.strategy,
            )
        )

    def find(kind: str, **attrs: Any) -> list[View]:
        return [
            v for v in views if v.kind == kind and all(getattr(v, k) == x for k, x in attrs.items())
        ]

    def first(items: list[View]) -> str | None:
        return items[0].name if items else None

    fed_partial = find("federated", labels="partial", loss="adaptive")
    plain = base.aggregation.strategy  # the study's own aggregation (its [recipe]), not FedProx
    return Roles(
        adaptive=first([v for v in fed_partial if v.strategy == plain and v.p == 0]),
        dropout=sorted((v.p, v.name) for v in fed_partial if v.strategy == plain and v.p > 0),
        fedprox_dropout=sorted(
            (v.p, v.name) for v in fed_partial if v.strategy == "fedprox" and v.p > 0
        ),
        upper=first(find("federated", labels="full")),
        naive=first(find("federated", loss="naive")),
        central=first(find("centralised", loss="adaptive", p=0.0, labels="partial")),
        central_dropout=sorted(
            (v.p, v.name) for v in find("centralised", loss="adaptive", labels="partial") if v.p > 0
        ),
        local=first(find("local")),
    )


def fmt_paired(p: Paired | None, relative: bool = True) -> str:
    if p is None:
        return "-"
    rel = f" ({p.relative:+.0%})" if relative and not math.isnan(p.relative) else ""
    ci = "" if math.isnan(p.ci_low) else f", 95% CI [{p.ci_low:+.3f}, {p.ci_high:+.3f}]"
    return (
        f"{p.mean_a:.3f} -> {p.mean_b:.3f}{rel}, diff {p.mean_diff:+.3f}{ci}: "
        f"**{p.verdict}** ({p.seeds} seeds)"
    )


def comparisons_markdown(
    results: Sequence[dict[str, Any]],
    pairs: Sequence[tuple[str, str]],
    groups: Sequence[tuple[str, Sequence[Cell]]],
) -> list[str]:
    """One row per comparison (``base -> other`` on one kind of cell): both means, the paired
    difference, its 95% CI, the number of seeds and the verdict."""
    out = [
        "| comparison | cells | from | to | difference | 95% CI | seeds | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for base, other in pairs:
        for label, cells in groups:
            p = compare(results, base, other, cells) if cells else None
            if p is None:
                continue
            ci = "-" if math.isnan(p.ci_low) else f"[{p.ci_low:+.3f}, {p.ci_high:+.3f}]"
            out.append(
                f"| {base} -> {other} | {label} | {p.mean_a:.3f} | {p.mean_b:.3f} | "
                f"{p.mean_diff:+.3f} | {ci} | {p.seeds} | **{p.verdict}** |"
            )
    return out if len(out) > 2 else []


def per_seed_markdown(
    results: Sequence[dict[str, Any]],
    names: Sequence[str],
    groups: Sequence[tuple[str, Sequence[Cell]]],
) -> list[str]:
    """Each seed's mean Dice per kind of cell: where seeds disagree (a bimodal result), the mean
    ± sd hides it."""
    seeds = sorted({r["seed"] for r in results})
    if len(seeds) < 2:
        return []
    out = [
        "| condition | cells | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---|---|" + "---|" * len(seeds),
    ]
    for name in names:
        for label, cells in groups:
            if not cells:
                continue
            values = per_seed(results, name, cells)
            row = [f"{values[s]:.3f}" if s in values else "-" for s in seeds]
            out.append(f"| {name} | {label} | " + " | ".join(row) + " |")
    return out


def _mean_sd(values: Sequence[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def study_markdown(
    results: Sequence[dict[str, Any]],
    conditions: Sequence[Condition],
    labelled: Mapping[str, set[str]],
    train_sites: Sequence[str],
    test_sites: Sequence[str],
    base: Recipe | None = None,
) -> str:
    """The study's analysis sections (Markdown), computed from the runs' results."""
    r = roles(conditions, base)

    def scored(cells: list[Cell]) -> list[Cell]:  # a site without a test split scores nothing
        return [c for c in cells if any(c.structure in x["test"].get(c.site, {}) for x in results)]

    unannotated = scored(unannotated_cells(labelled, train_sites, test_sites))
    annotated = scored(annotated_cells(labelled, train_sites))
    unseen = scored([Cell(site, s) for site in test_sites for s in STRUCTURES])
    groups = [
        ("unannotated (shortcut) cells", unannotated),
        ("annotated cells", annotated),
        ("unseen vendor", unseen),
    ]
    names = [c.name for c in conditions if any(x["condition"] == c.name for x in results)]
    out: list[str] = []

    out.append("## Mean Dice by kind of cell\n")
    out.append(
        "Mean over the cells of each kind, then mean ± sd over seeds. Unannotated cells: "
        + ", ".join(f"{c.site}/{c.structure}" for c in unannotated)
        + ".\n"
    )
    out.append("| condition | " + " | ".join(g for g, _ in groups) + " | seeds |")
    out.append("|---|" + "---|" * (len(groups) + 1))
    for name in names:
        cells = [
            _mean_sd(list(per_seed(results, name, g).values())) if g else "-" for _, g in groups
        ]
        n = len({x["seed"] for x in results if x["condition"] == name})
        out.append(f"| {name} | " + " | ".join(cells) + f" | {n} |")
    out.append("")
    seeds_table = per_seed_markdown(results, names, groups)
    if seeds_table:
        out.append("## Per seed\n")
        out.append("Mean Dice over the cells of each kind, for every seed.\n")
        out.extend([*seeds_table, ""])
    baseline = r.adaptive or (names[0] if names else None)
    compared = [(baseline, n) for n in names if baseline and n != baseline]
    table = comparisons_markdown(results, compared, groups)
    if table:
        out.append("## Comparisons\n")
        out.append(
            f"Each condition against {baseline}, paired by seed (Student t interval of the "
            "mean difference); a CI that contains 0 is a tie.\n"
        )
        out.extend([*table, ""])

    if r.adaptive and (r.dropout or r.fedprox_dropout or r.upper):
        out.append("## Label dropout against adaptive CE, per unannotated cell (federated)\n")
        out.append(
            "Paired by seed: adaptive CE -> the other condition, relative change, "
            "difference and its 95% CI; a CI that contains 0 is a tie.\n"
        )
        others = (
            [(f"LD {p:g}", n) for p, n in r.dropout]
            + [(f"FedProx + LD {p:g}", n) for p, n in r.fedprox_dropout]
            + ([("upper bound", r.upper)] if r.upper else [])
        )
        out.append("| cell | " + " | ".join(label for label, _ in others) + " |")
        out.append("|---|" + "---|" * len(others))
        for cell in [*unannotated, *unseen]:
            row = [fmt_paired(compare(results, r.adaptive, n, [cell])) for _, n in others]
            out.append(f"| {cell.site}/{cell.structure} | " + " | ".join(row) + " |")
        for label, cells in (
            ("all unannotated cells", unannotated),
            ("all annotated cells", annotated),
        ):
            row = [fmt_paired(compare(results, r.adaptive, n, cells)) for _, n in others]
            out.append(f"| **{label}** | " + " | ".join(row) + " |")
        out.append("")

    if r.central and r.central_dropout:
        out.append("## Label dropout without federation (centralised pooled)\n")
        out.append("| cells | " + " | ".join(f"LD {p:g}" for p, _ in r.central_dropout) + " |")
        out.append("|---|" + "---|" * len(r.central_dropout))
        for label, cells in (
            ("unannotated", unannotated),
            ("annotated", annotated),
            ("unseen vendor", unseen),
        ):
            if cells:
                row = [
                    fmt_paired(compare(results, r.central, n, cells)) for _, n in r.central_dropout
                ]
                out.append(f"| {label} | " + " | ".join(row) + " |")
        out.append("")

    pairs = [(r.adaptive, r.central)] + [
        (fed, cen) for (p1, fed) in r.dropout for (p2, cen) in r.central_dropout if p1 == p2
    ]
    pairs = [(f, c) for f, c in pairs if f and c]
    if pairs:
        out.append("## Federated / centralised\n")
        out.append(
            "Ratio of mean test Dice (same losses, same budget), per structure over the "
            "training domains.\n"
        )
        out.append("| federated / centralised | " + " | ".join(STRUCTURES) + " |")
        out.append("|---|---|---|---|")
        for fed, cen in pairs:
            cells_row = []
            for s in STRUCTURES:
                cells = scored([Cell(site, s) for site in train_sites])
                a, b = per_seed(results, cen, cells), per_seed(results, fed, cells)
                seeds = sorted(set(a) & set(b))
                ratio = (
                    np.mean([b[x] for x in seeds]) / np.mean([a[x] for x in seeds])
                    if seeds
                    else math.nan
                )
                cells_row.append(f"{ratio:.3f}")
            out.append(f"| {fed} / {cen} | " + " | ".join(cells_row) + " |")
        out.append("")

    out.append("## Predicted / true area in the unannotated cells\n")
    out.append(
        "1 = right size; < 1 the structure is missed; > 1 something else (an unlabelled "
        "chamber) is called that structure. Mean over seeds.\n"
    )
    out.append("| condition | " + " | ".join(f"{c.site}/{c.structure}" for c in unannotated) + " |")
    out.append("|---|" + "---|" * len(unannotated))
    for name in names:
        row = []
        for c in unannotated:
            values = [
                x["test"].get(c.site, {}).get(f"area-{c.structure}")
                for x in results
                if x["condition"] == name
            ]
            values = [v for v in values if v is not None]
            row.append(f"{np.mean(values):.2f}" if values else "-")
        out.append(f"| {name} | " + " | ".join(row) + " |")
    out.append("")

    out.append("## Wall time per run\n")
    out.append("| condition | seconds (mean over seeds) | runs |")
    out.append("|---|---|---|")
    for name in names:
        secs = [x["seconds"] for x in results if x["condition"] == name]
        out.append(f"| {name} | {np.mean(secs):.0f} | {len(secs)} |")
    out.append("")

    out.append("## Conclusion (generated from the numbers above)\n")
    out.extend(conclusion(results, r, unannotated, annotated, unseen))
    return "\n".join(out) + "\n"


def conclusion(
    results: Sequence[dict[str, Any]],
    r: Roles,
    unannotated: Sequence[Cell],
    annotated: Sequence[Cell],
    unseen: Sequence[Cell],
) -> list[str]:
    lines = []
    if r.adaptive and r.upper and unannotated:
        gap = compare(results, r.upper, r.adaptive, unannotated)
        gap_annotated = compare(results, r.upper, r.adaptive, annotated)
        if gap is not None:
            present = gap.verdict == "worse" and gap.relative < -0.05
            lines.append(
                f"- **Shortcut.** On the structures a site never annotates, on that site's "
                f"domain, FedAvg + adaptive CE reaches {gap.mean_b:.3f} mean Dice against "
                f"{gap.mean_a:.3f} for the fully labelled upper bound ({gap.relative:+.0%}; "
                f"paired diff {gap.mean_diff:+.3f}"
                + (
                    ""
                    if math.isnan(gap.ci_low)
                    else f", 95% CI [{gap.ci_low:+.3f}, {gap.ci_high:+.3f}]"
                )
                + ")"
                + (
                    f"; on the annotated cells the gap is {gap_annotated.relative:+.0%}"
                    if gap_annotated
                    else ""
                )
                + (
                    ". The shortcut **appears**."
                    if present
                    else ". No shortcut beyond the seeds' spread."
                )
            )
            worst = sorted(
                ((compare(results, r.upper, r.adaptive, [c]), c) for c in unannotated),
                key=lambda x: x[0].relative if x[0] else 0,
            )
            if worst and worst[0][0] is not None:
                p, c = worst[0]
                lines.append(
                    f"  Largest gap: {c.site}/{c.structure}, {p.mean_b:.3f} vs "
                    f"{p.mean_a:.3f} ({p.relative:+.0%})."
                )
    if r.adaptive and r.dropout and unannotated:
        for p_value, name in r.dropout:
            effect = compare(results, r.adaptive, name, unannotated)
            on_annotated = compare(results, r.adaptive, name, annotated)
            if effect is None:
                continue
            lines.append(
                f"- **Label dropout p = {p_value:g}** (FedAvg) on the unannotated cells: "
                f"{fmt_paired(effect)}; on the annotated cells: {fmt_paired(on_annotated)}."
            )
        best = [
            (compare(results, r.adaptive, n, [c]), c, p) for p, n in r.dropout for c in unannotated
        ]
        best = [b for b in best if b[0] is not None and b[0].verdict == "better"]
        if best:
            top = sorted(best, key=lambda b: -b[0].relative)[:2]
            lines.append(
                "  Largest significant gains: "
                + "; ".join(
                    f"{c.site}/{c.structure} {b.relative:+.0%} (p = {p:g})" for b, c, p in top
                )
                + " (the paper reports +62% and +25% on two structures)."
            )
        else:
            lines.append("  No single unannotated cell improves beyond the seeds' spread.")
    if r.adaptive and r.dropout and unseen:
        for p_value, name in r.dropout:
            effect = compare(results, r.adaptive, name, unseen)
            if effect is not None:
                lines.append(f"- Unseen vendor, LD p = {p_value:g}: {fmt_paired(effect)}.")
    if not lines:
        lines.append(
            "- This study lacks the conditions needed for a conclusion "
            "(adaptive CE, label dropout and the fully labelled upper bound)."
        )
    return lines
