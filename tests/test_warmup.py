"""Imports done ahead of a process's first training step (common/training/warmup.py): the fact
they rest on (torch's first optimiser imports torch._dynamo, hundreds of modules), that after
the site worker's preload a first optimiser imports nothing, and the background import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from common.training.warmup import import_in_background

FIRST_OPTIMISER = """
import json, sys
import torch
from common.training.warmup import import_now
if sys.argv[1] == "preloaded":  # what the site worker imports before it forks any task
    from fl_client.worker import PRELOAD
    import_now(PRELOAD)
before = set(sys.modules)
torch.optim.Adam(torch.nn.Linear(2, 2).parameters(), lr=1e-3)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def first_optimiser_imports(mode: str) -> list[str]:
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", FIRST_OPTIMISER, mode],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_first_optimiser_imports_nothing_after_the_site_workers_preload() -> None:
    cold = first_optimiser_imports("cold")
    assert "torch._dynamo" in cold and len(cold) > 100  # what every forked task would pay
    assert first_optimiser_imports("preloaded") == []


def test_a_background_import_lands_and_a_repeat_is_a_no_op(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "echofl_probe_module.py").write_text("VALUE = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    thread = import_in_background(["echofl_probe_module"])
    assert thread is not None and thread.daemon
    thread.join(timeout=30)
    assert sys.modules["echofl_probe_module"].VALUE == 7
    assert import_in_background(["echofl_probe_module"]) is None  # already imported
    failing = import_in_background(["echofl_no_such_module"])  # logged, never raised here
    assert failing is not None
    failing.join(timeout=30)
    assert "echofl_no_such_module" not in sys.modules
    del sys.modules["echofl_probe_module"]
