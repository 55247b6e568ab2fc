"""Sites that vanish, for real: a hospital's client killed mid-round (the round completes
with the others), the same hospital back later (it takes part again), then too few sites left
(the run stops at the deadline with a clear message and keeps its checkpoints)."""

from __future__ import annotations

import subprocess

import pytest

from fl_server.loopback import Cluster, done_rounds, stop
from tests.helpers import ProcessWatch

SITES = {"A": ("A", "camus-nifti"), "B": ("B", "echonet-dynamic"), "D": ("D", "folder")}
DATA = [
    {"name": "A", "vendor": "A", "format": "camus-nifti", "cases": 6},
    {"name": "B", "vendor": "B", "format": "echonet-dynamic", "cases": 6},
    {"name": "D", "vendor": "D", "format": "folder", "cases": 6, "labelled": ["LV", "LA"]},
]
# more rounds than the story needs: the run must still be going when the killed hospital is
# back (its fl-client re-checks its data first: tens of seconds) while a round takes 2-3 s
ROUNDS = 60


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("vanish")
    Cluster.generate(base, DATA)
    watch = ProcessWatch(str(base)).__enter__()  # this test's processes: they mention base
    cluster = Cluster(base, SITES, min_sites=2)
    out: dict = {"home": cluster.home}
    run: subprocess.Popen | None = None
    try:
        cluster.start()
        cluster.register("A", "B", "D")
        for site in SITES:
            cluster.start_client(site)
        run_out = base / "run.out"
        with run_out.open("w") as sink:
            run = subprocess.Popen(
                cluster.run_command(
                    "vanish",
                    ROUNDS,
                    'image-size=32 model-channels="4,8,16" client-threads=1 sites-timeout=20 '
                    "federated-evaluation=false",  # one message per site and round
                ),
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        out["run_out"] = run_out
        cluster.wait_for("vanish", lambda rows: 1 in done_rounds(rows), run=run)
        cluster.kill_client("D")  # mid-round 2: training messages are out
        out["killed_after"] = 1
        rows = cluster.wait_for(
            "vanish",
            lambda rows: any("D" not in sites for sites in done_rounds(rows).values()),
            run=run,
        )
        gone = max(r for r, sites in done_rounds(rows).items() if "D" not in sites)
        out["gone_round"] = gone
        cluster.start_client("D")  # the hospital comes back
        rows = cluster.wait_for(
            "vanish",
            lambda rows: any(r > gone and "D" in sites for r, sites in done_rounds(rows).items()),
            run=run,
        )
        out["back_round"] = min(r for r, s in done_rounds(rows).items() if r > gone and "D" in s)
        cluster.kill_client("A")
        cluster.kill_client("B")  # one site left, two needed
        out["returncode"] = run.wait(timeout=600)
        out["stdout"] = run_out.read_text()
        out["rows"] = cluster.rows("vanish")
    finally:
        if run is not None:
            stop(run)
        cluster.close()
        watch.__exit__()
        out["leftovers"] = watch.leftovers()
        out["watched"] = len(watch.seen)
    return out


def test_round_completes_without_the_vanished_site(story: dict) -> None:
    rounds = done_rounds(story["rows"])
    assert rounds[story["gone_round"]] == ["A", "B"]
    assert all(sites == ["A", "B", "D"] for r, sites in rounds.items() if r == 1)


def test_the_site_takes_part_again_after_reconnecting(story: dict) -> None:
    rounds = done_rounds(story["rows"])
    assert rounds[story["back_round"]] == ["A", "B", "D"]


def test_run_stops_at_the_deadline_and_keeps_its_checkpoints(story: dict) -> None:
    assert story["returncode"] != 0
    assert "STOPPED: only 1 site(s) connected after 20s; at least 2 needed" in story["stdout"]
    stopped = [r for r in story["rows"] if r.get("event") == "stopped"]
    assert stopped and "at least 2 needed" in stopped[0]["reason"]
    completed = max(done_rounds(story["rows"]))
    assert completed < ROUNDS
    checkpoints = story["home"] / "runs" / "vanish" / "checkpoints"
    for r in range(completed + 1):
        assert (checkpoints / f"round-{r:04d}.pt").is_file()
        assert (checkpoints / f"round-{r:04d}.pt.json").is_file()


def test_no_process_left_behind(story: dict) -> None:
    assert story["watched"] >= 5  # coordinator, SuperLink, three clients and their SuperNodes
    assert story["leftovers"] == {}
