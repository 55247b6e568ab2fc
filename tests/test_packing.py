"""Weights packed into two flat arrays round-trip exactly; bad packs are refused."""

import numpy as np
import pytest
import torch

from common.federation.packing import PACKED_FLOAT, PACKED_INT, pack, unpack
from common.training.model import build_unet


def test_round_trip_exact_and_float16_comes_back_as_float32() -> None:
    state = build_unet().state_dict()
    reference = {k: v.numpy() for k, v in state.items()}
    packed = pack(state)
    assert packed[PACKED_FLOAT].dtype == np.float32 and packed[PACKED_INT].dtype == np.int64
    assert packed[PACKED_FLOAT].size + packed[PACKED_INT].size == sum(
        v.size for v in reference.values()
    )
    back = unpack(packed, reference)
    assert list(back) == list(reference)
    for k, v in reference.items():
        np.testing.assert_array_equal(back[k], v)
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
    half = unpack(pack(state, "float16"), reference)
    w = "model.0.conv.unit0.conv.weight"
    assert half[w].dtype == np.float32
    np.testing.assert_allclose(half[w], reference[w], atol=1e-3)


def test_wrong_lengths_are_refused_with_the_numbers() -> None:
    state = build_unet().state_dict()
    reference = {k: v.numpy() for k, v in state.items()}
    short = dict(state)
    del short["model.0.conv.unit0.conv.bias"]
    with pytest.raises(ValueError, match=r"hold 212156 floating values, expected 212164"):
        unpack(pack(short), reference)
    extra = dict(state) | {"x": torch.zeros(2, dtype=torch.int64)}
    with pytest.raises(ValueError, match=r"hold 14 integer values, expected 12"):
        unpack(pack(extra), reference)
