"""A deployed run's report for the coordinator: ``fl-server report --home H RUN``.

Reads the run folder the ServerApp wrote (``metrics.jsonl``, ``summary.json``) and writes
``report/report.md`` and ``report/curves.png`` beside them: who took part and what they annotate,
the recipe's main settings, validation Dice per structure after every round (the aggregate and
each site, one panel per structure so that a structure that is not learnt shows as such), the
final model on each site's test split, and which sites kept the final model. Nothing is
contacted; it can be run during the run (on the rounds logged so far) or long after it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from common.federation import protocol
from common.training.metrics import STRUCTURES
from fl_server.metrics_log import read_metrics_log

SETTINGS = ("strategy", "label-dropout-p", "lr", "local-epochs", "batch-size", "image-size")


def _dice(row: dict[str, Any]) -> dict[str, float]:
    return {s.name: d for s, d in protocol.scored_dice(row).items() if math.isfinite(d)}


def rounds_table(rows: list[dict[str, Any]]) -> dict[int, dict[str, dict[str, float]]]:
    """round -> site (``*`` the aggregate) -> structure -> validation Dice."""
    table: dict[int, dict[str, dict[str, float]]] = {}
    for row in rows:
        if row.get("phase") == "val" and "event" not in row:
            table.setdefault(int(row["round"]), {})[str(row["site"])] = _dice(row)
    return dict(sorted(table.items()))


def report_markdown(run: Path) -> str:
    rows = read_metrics_log(run / "metrics.jsonl")
    if not rows:
        raise ConfigError(run, "no metrics.jsonl here: not a run folder, or the run never started")
    summary_path = run / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    negotiated = next((r for r in rows if r.get("event") == "negotiated"), {})
    config = next((r for r in rows if r.get("event") == "train-config"), {})
    lines = [f"# Run {run.name}", ""]
    if not summary:
        lines += ["**Unfinished**: no summary.json yet; the rounds logged so far.", ""]
    lines += ["| site | annotates | train / val / test images |", "|---|---|---|"]
    for site, labelled in sorted(negotiated.get("sites", {}).items()):
        counts = negotiated.get("counts", {}).get(site, {})
        sizes = " / ".join(str(counts.get(k, "?")) for k in ("train", "val", "test"))
        lines.append(f"| {site} | {', '.join(labelled)} | {sizes} |")
    settings = ", ".join(f"{k} {config[k]}" for k in SETTINGS if k in config)
    lines += [
        "",
        f"Partially labelled across the federation: {', '.join(negotiated.get('partial', []))}"
        f"; {settings}.",
        "",
        "## Validation Dice after each round (all sites)",
        "",
        "| round | " + " | ".join(s.name for s in STRUCTURES) + " | seconds |",
        "|---" * (len(STRUCTURES) + 2) + "|",
    ]
    seconds = {int(r["round"]): r.get("seconds") for r in rows if r.get("event") == "round-done"}
    for server_round, sites in rounds_table(rows).items():
        dice = sites.get("*", {})
        cells = [f"{dice[s.name]:.3f}" if s.name in dice else "-" for s in STRUCTURES]
        took = seconds.get(server_round)
        lines.append(
            f"| {server_round} | "
            + " | ".join(cells)
            + f" | {'-' if took is None else f'{took:.1f}'} |"
        )
    test = summary.get("test", {})
    if test:
        lines += [
            "",
            f"## Final model on each site's test split (round {summary.get('rounds')}; "
            f"best validation round {summary.get('best_round')})",
            "",
            "| site | " + " | ".join(s.name for s in STRUCTURES) + " | images |",
            "|---" * (len(STRUCTURES) + 2) + "|",
        ]
        for site, row in sorted(test.items()):
            dice = _dice(row)
            cells = [f"{dice[s.name]:.3f}" if s.name in dice else "-" for s in STRUCTURES]
            lines.append(f"| {site} | " + " | ".join(cells) + f" | {int(row['num-examples'])} |")
        lines += [
            "",
            "Scored on each site's own annotations (`-`: a structure it does not annotate); on "
            "synthetic research data, on the full ground truth.",
        ]
    delivered = summary.get("final_model_delivered")
    if delivered:
        kept = sorted(s for s, r in delivered.items() if r == "stored")
        lines += ["", f"Final model kept by: {', '.join(kept) or 'no site'}."]
        lines += [f"- {s}: {r}" for s, r in sorted(delivered.items()) if r != "stored"]
    if summary:
        lines += ["", f"Wall time: {summary.get('seconds', '?')} s."]
    return "\n".join([*lines, "", "![validation Dice per structure](curves.png)", ""])


def plot_curves(run: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = rounds_table(read_metrics_log(run / "metrics.jsonl"))
    sites = sorted({s for r in table.values() for s in r if s != "*"})
    colours = {site: f"C{i}" for i, site in enumerate(sites)}
    fig, axes = plt.subplots(1, len(STRUCTURES), figsize=(9.6, 3.0), dpi=100, sharey=True)
    for ax, structure in zip(axes, STRUCTURES, strict=True):
        for site in [*sites, "*"]:
            points = [
                (r, d[site][structure.name])
                for r, d in table.items()
                if structure.name in d.get(site, {})
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                style = (
                    {"color": "black", "linewidth": 2}
                    if site == "*"
                    else {"color": colours[site], "linewidth": 1, "alpha": 0.8}
                )
                ax.plot(xs, ys, label="all sites" if site == "*" else site, **style)
        ax.set_title(structure.name)
        ax.set_xlabel("round")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation Dice")
    axes[0].legend(fontsize=8, loc="lower right")  # a learnt LV leaves that corner free
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_run_report(run: Path) -> Path:
    """``run/report/report.md`` and ``curves.png``; returns the markdown's path."""
    text = report_markdown(run)
    folder = run / "report"
    folder.mkdir(exist_ok=True)
    plot_curves(run, folder / "curves.png")
    (folder / "report.md").write_text(text)
    return folder / "report.md"
