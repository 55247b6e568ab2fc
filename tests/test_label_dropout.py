"""Label dropout: drop rates, structures never dropped, pixels untouched outside a drop."""

import math

import pytest
import torch

from common.labels import Structure, partially_labelled
from common.training.label_dropout import LabelDropout


def full_batch(n: int, size: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """n masks of size x size (size >= 4) in which every class appears; all labelled."""
    gen = torch.Generator().manual_seed(11)
    mask = torch.randint(0, 4, (n, size, size), generator=gen, dtype=torch.uint8)
    mask[:, 0, :4] = torch.tensor([0, 1, 2, 3], dtype=torch.uint8)  # every class present
    labelled = torch.ones(n, 4, dtype=torch.bool)
    return mask, labelled


def test_partial_structures_from_labelled_sets() -> None:
    fed_echo = [{Structure.LV, Structure.MYO, Structure.LA}, {Structure.LV}, {Structure.MYO}]
    assert partially_labelled(fed_echo) == {Structure.LV, Structure.MYO, Structure.LA}
    sets = [
        {Structure.LV, Structure.MYO, Structure.LA},
        {Structure.LV},
        {Structure.LV, Structure.LA},
    ]
    assert partially_labelled(sets) == {Structure.MYO, Structure.LA}
    assert partially_labelled([{Structure.LV}, {Structure.LV}]) == set()


@pytest.mark.parametrize("p", [0.25, 0.5, 0.75])
def test_empirical_drop_rate_within_three_sd(p: float) -> None:
    n = 20_000
    mask, labelled = full_batch(n, size=4)
    dropout = LabelDropout.for_partial([Structure.MYO, Structure.LA], p)
    _, new_labelled = dropout(mask, labelled, torch.Generator().manual_seed(1))
    sd = math.sqrt(p * (1 - p) / n)
    for s in (Structure.MYO, Structure.LA):
        rate = 1 - new_labelled[:, int(s)].float().mean().item()
        assert abs(rate - p) < 3 * sd, (s, rate)
    # LV is labelled by every site: never dropped; background never dropped.
    assert new_labelled[:, int(Structure.LV)].all()
    assert new_labelled[:, 0].all()


def test_only_pixels_of_dropped_structures_change() -> None:
    mask, labelled = full_batch(400)
    dropout = LabelDropout.for_partial([Structure.MYO, Structure.LA], 0.5)
    new_mask, new_labelled = dropout(mask, labelled, torch.Generator().manual_seed(5))
    changed = new_mask != mask
    for b in range(mask.shape[0]):
        dropped = [c for c in (1, 2, 3) if labelled[b, c] and not new_labelled[b, c]]
        expected_changed = torch.zeros_like(changed[b])
        for c in dropped:
            expected_changed |= mask[b] == c
        assert torch.equal(changed[b], expected_changed)
        assert (new_mask[b][changed[b]] == 0).all()
    # inputs untouched
    assert labelled.all()


def test_unlabelled_structure_is_not_dropped_again_and_draws_are_fresh() -> None:
    mask, labelled = full_batch(64)
    labelled[:, int(Structure.LA)] = False
    mask[mask == 3] = 0
    dropout = LabelDropout.for_partial([Structure.MYO, Structure.LA], 1.0)
    gen = torch.Generator().manual_seed(0)
    new_mask, new_labelled = dropout(mask, labelled, gen)
    assert not new_labelled[:, 2:].any() and new_labelled[:, 1].all()
    assert not (new_mask == 2).any() and torch.equal(new_mask == 1, mask == 1)
    half = LabelDropout.for_partial([Structure.MYO], 0.5)
    first = half(mask, labelled, gen)[1]
    second = half(mask, labelled, gen)[1]
    assert not torch.equal(first, second)  # a new draw each use of the samples


def test_same_seed_same_draws() -> None:
    mask, labelled = full_batch(32)
    dropout = LabelDropout.for_partial([Structure.LA], 0.5)
    a = dropout(mask, labelled, torch.Generator().manual_seed(9))
    b = dropout(mask, labelled, torch.Generator().manual_seed(9))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_p_zero_changes_nothing_and_bad_p_is_refused() -> None:
    mask, labelled = full_batch(8)
    out_mask, out_labelled = LabelDropout.for_partial([Structure.LA], 0.0)(mask, labelled, None)
    assert torch.equal(out_mask, mask) and torch.equal(out_labelled, labelled)
    with pytest.raises(ValueError, match=r"LA must be in \[0, 1\]"):
        LabelDropout.for_partial([Structure.LA], 1.5)


def _sets(*rows: str) -> torch.Tensor:
    """Labelled vectors from strings of structure initials: "LMA" = {LV, MYO, LA}."""
    return torch.tensor([[True, "L" in r, "M" in r, "A" in r] for r in rows], dtype=torch.bool)


def test_site_set_dropout_imitates_the_other_sites_sets() -> None:
    """FedEcho's sets {LV, MYO, LA} / {LV} / {MYO}: a fully labelled sample becomes "LV only"
    or "MYO only" (each about p / 2 of the time), never a set no site has ({LV, LA} ...); the
    partially labelled samples have no smaller set to become and stay as they are."""
    from common.training.label_dropout import SiteSetDropout

    pooled = _sets("LMA", "LMA", "L", "L", "L", "M")
    dropout = SiteSetDropout.from_labelled(pooled, 0.6)
    assert sorted(map(tuple, dropout.patterns.int().tolist())) == [
        (1, 0, 1, 0),
        (1, 1, 0, 0),
        (1, 1, 1, 1),
    ]
    n = 4000
    mask, labelled = full_batch(n)
    labelled = torch.cat([_sets("LMA").repeat(n // 2, 1), _sets("L").repeat(n // 2, 1)])
    new_mask, new_labelled = dropout(mask, labelled, torch.Generator().manual_seed(3))
    full_half, lv_half = new_labelled[: n // 2], new_labelled[n // 2 :]
    seen = {tuple(r) for r in full_half.int().tolist()}
    assert seen == {(1, 1, 1, 1), (1, 1, 0, 0), (1, 0, 1, 0)}
    as_lv = (full_half == _sets("L")).all(1).float().mean().item()
    as_myo = (full_half == _sets("M")).all(1).float().mean().item()
    assert as_lv == pytest.approx(0.3, abs=0.03) and as_myo == pytest.approx(0.3, abs=0.03)
    assert torch.equal(lv_half, labelled[n // 2 :])
    assert torch.equal(new_mask[n // 2 :], mask[n // 2 :])
    # the pixels of what was dropped became background; the kept structure is untouched
    became_lv = (full_half == _sets("L")).all(1)
    sample = new_mask[: n // 2][became_lv][0]
    original = mask[: n // 2][became_lv][0]
    assert set(sample.unique().tolist()) <= {0, 1}
    assert torch.equal(sample == 1, original == 1)


def test_site_set_dropout_needs_two_sets_and_a_valid_rate() -> None:
    from common.training.label_dropout import SiteSetDropout

    with pytest.raises(ValueError, match="at least two different labelled sets"):
        SiteSetDropout.from_labelled(_sets("L", "L"), 0.5)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        SiteSetDropout.from_labelled(_sets("L", "LMA"), 1.5)


def test_the_new_mode_leaves_the_keys_of_finished_runs_alone() -> None:
    from common.recipe import Recipe
    from simulations.experiment import recipe_dump

    plain = recipe_dump(Recipe())
    assert "mode" not in plain["label_dropout"]
    sets = recipe_dump(Recipe.model_validate({"label_dropout": {"p": 0.5, "mode": "site-sets"}}))
    assert sets["label_dropout"]["mode"] == "site-sets"
