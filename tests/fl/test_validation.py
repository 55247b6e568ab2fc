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
    assert rejected[0].site == "B" and "exceeds 10 x the median" in rejected[0].reason
    # within the factor: kept; factor 0: the test is off
    assert validate_updates([("A", site(1.0)), ("B", site(9.0))], REF, 10)[0] == [0, 1]
    assert validate_updates([("A", site(1.0)), ("B", site(50.0))], REF, 0)[0] == [0, 1]
