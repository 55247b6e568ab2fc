"""Re-keying finished runs across a recipe layout change: only runs whose stored key is today's
settings taken back through the known changes are carried over."""

import json
from pathlib import Path

from simulations.experiment import payload_key
from simulations.rekey import CHANGES, earlier_keys, rekey
from simulations.runs import RESULT, finished
from tests.study.test_recipes_report import config


def write(path: Path, key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"slug": path.parent.parent.name, "seed": 0, "key": key}))


def test_runs_of_the_old_layout_with_todays_settings_are_carried_over(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    fedavg, full = cfg.conditions[1], cfg.conditions[2]
    old = cfg.run_payload(fedavg, 0)  # what the key hashed before the two layout changes
    del old["recipe"]["model"]["head"]
    old["recipe"]["aggregation"]["update_norm_factor"] = 10.0
    assert [name for name, _ in CHANGES] == [
        "update_norm_factor moved to the run options",
        "model.head added",
    ]
    assert earlier_keys(cfg.run_payload(fedavg, 0))[-1][1] == payload_key(old)
    runs = cfg.run_dir / "runs"
    write(runs / fedavg.slug / "seed-0" / RESULT, payload_key(old))
    write(runs / full.slug / "seed-0" / RESULT, "0123456789abcdef")  # other settings
    assert finished(cfg, fedavg, 0) is None  # before: the study would run it again
    counts = rekey(cfg, say=lambda _: None)
    assert counts == {"current": 0, "rekeyed": 1, "stale": 1}
    done = finished(cfg, fedavg, 0)
    assert done is not None and done["rekeyed"]["changes"] == (
        "update_norm_factor moved to the run options + model.head added"
    )
    assert finished(cfg, full, 0) is None  # not carried over: computed with other settings
    assert rekey(cfg, say=lambda _: None) == {"current": 1, "rekeyed": 0, "stale": 1}
