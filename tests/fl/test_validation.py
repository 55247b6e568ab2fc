"""Update validation before aggregation, on hand-made weights."""

import numpy as np

from fl_server.validation import update_norm, validate_updates

REF = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32), "n": np.array(5, np.int64)}


def site(delta: float, **changes: np.ndarray) -> dict[str, np.ndarray]:
    arrays = {"w": REF["w"] + delta, "b": REF["b"] + delta, "n": REF["n"] + 1}
    arrays.update(changes)
    return arrays


def test_well_formed_updates_pass_and_norms_are_exact() -> None:
    accepted, rejected, norms = validate_updates([("A", site(1.0)), ("B", site(2.0))], REF, 10)
    assert accepted == [0, 1] and rejected == []
    assert norms["A"] == np.sqrt(9.0) and norms["B"] == np.sqrt(36.0)  # integers ignored
    assert update_norm(site(0.5), REF) == np.sqrt(9 * 0.25)


def test_each_malformed_update_is_rejected_with_its_reason() -> None:
    nan = site(1.0, w=np.full((2, 3), np.nan, np.float32))
    shape = site(1.0, w=np.zeros(6, np.float32))
    dtype = site(1.0, b=np.zeros(3, np.float64))
    missing = {k: v for k, v in site(1.0).items() if k != "b"}
    extra = site(1.0, z=np.zeros(1, np.float32))
    updates = [
        ("ok", site(1.0)),
        ("nan", nan),
        ("shape", shape),
        ("dtype", dtype),
        ("missing", missing),
        ("extra", extra),
    ]
    accepted, rejected, _ = validate_updates(updates, REF, 10)
    assert accepted == [0]
    reasons = {r.site: r.reason for r in rejected}
    assert reasons["nan"] == "tensor w contains NaN or infinite values"
    assert reasons["shape"] == "tensor w has shape (6,), expected (2, 3)"
    assert reasons["dtype"] == "tensor b has dtype float64, expected float32"
    assert reasons["missing"] == "missing tensor(s) b"
    assert reasons["extra"] == "unexpected tensor(s) z"


def test_norm_outlier_is_rejected_even_with_two_sites() -> None:
    accepted, rejected, _ = validate_updates([("A", site(1.0)), ("B", site(50.0))], REF, 10)
    assert accepted == [0]
    assert rejected[0].site == "B"
    assert rejected[0].reason == (
        "update norm 150 exceeds update-norm-factor 10 x the reference 3 (median of the "
        "other sites' norms and of recent rounds')"
    )
    # within the factor: kept; factor 0: the test is off
    assert validate_updates([("A", site(1.0)), ("B", site(9.0))], REF, 10)[0] == [0, 1]
    assert validate_updates([("A", site(1.0)), ("B", site(50.0))], REF, 0)[0] == [0, 1]


BASE = {"w": np.ones((2, 3), np.float32), "b": np.ones(3, np.float32), "n": np.array(5, np.int64)}


def moved(delta: float) -> dict[str, np.ndarray]:
    return {"w": BASE["w"] + delta, "b": BASE["b"] + delta, "n": BASE["n"]}


def test_scaled_and_stale_updates_are_rejected_and_the_honest_site_kept_with_two_sites() -> None:
    # ||BASE|| = 3; an honest update moves every weight by 0.1 (norm 0.3, 10 % of the model)
    honest, scaled = moved(0.1), moved(0.9)  # the attacker sends 9x the honest change
    accepted, rejected, _ = validate_updates([("A", honest), ("B", scaled)], BASE, 4.0)
    assert accepted == [0] and [r.site for r in rejected] == ["B"]
    assert "exceeds update-norm-factor 4 x the reference 0.3 " in rejected[0].reason
    # a stale site (the global model sent back, up to float16 rounding) is dropped first, so it
    # cannot make the honest update look too large (with the old rule the honest one was cut)
    stale = moved(1e-4)
    accepted, rejected, _ = validate_updates(
        [("A", honest), ("B", stale)], BASE, 3.0, min_change=1e-3
    )
    assert accepted == [0]
    assert rejected[0].reason == (
        "update changes the model by 0.0001 of its norm, less than update-min-change 0.001: "
        "a stale or unchanged model"
    )


def test_recent_rounds_are_the_yardstick_when_a_site_is_alone() -> None:
    # one site left this round: its norm is compared with the last rounds' accepted norms
    history = [0.3, 0.28, 0.33]
    assert validate_updates([("A", moved(0.1))], BASE, 3.0, history=history)[0] == [0]
    accepted, rejected, _ = validate_updates([("A", moved(0.5))], BASE, 3.0, history=history)
    assert accepted == [] and "the reference 0.3 " in rejected[0].reason
    # the others' norms and the history together: the median of [0.3 (B), 0.3, 0.28, 0.33]
    accepted, _, _ = validate_updates(
        [("A", moved(0.1)), ("B", moved(0.1)), ("C", moved(0.35))], BASE, 3.0, history=history
    )
    assert accepted == [0, 1]
