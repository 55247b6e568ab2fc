"""Progress bars: drawn with the count and an ETA where asked for, absent in logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.data.synthetic.federation import FederationConfig, generate_federation
from common.progress import ENV, progress_bar


def tiny(out: Path, workers: int = 1) -> FederationConfig:
    return FederationConfig.model_validate(
        {
            "seed": 0,
            "output_dir": str(out),
            "workers": workers,
            "sites": [
                {"name": "A", "vendor": "A", "format": "folder", "cases": 4, "size": [48, 48]}
            ],
        }
    )


@pytest.mark.parametrize("workers", [1, 2])  # in process, and a pool of two (4 cases)
def test_generation_draws_a_bar_per_site_with_its_case_count(
    workers: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(ENV, "1")
    generate_federation(tiny(tmp_path / "data", workers))
    err = capsys.readouterr().err
    assert "site A: rendering" in err
    assert "4/4" in err  # every case counted, none twice
    assert "5/4" not in err


def test_no_bar_in_a_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV, "0")
    generate_federation(tiny(tmp_path / "data"))
    captured = capsys.readouterr()
    assert "rendering" not in captured.err
    assert "site A: vendor A, folder, 4 cases" in captured.out  # the plain line stays


def test_advance_counts_what_it_is_told(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV, "1")
    with progress_bar("epochs", 5) as advance:
        advance(2)
        advance(3)
    assert "5/5" in capsys.readouterr().err
