"""The wire protocol: weights in every encoding, metric keys, message contents."""

import math

import numpy as np
import pytest
import torch

from common.federation import protocol
from common.federation.protocol import (
    EvaluateInstruction,
    ProtocolError,
    SiteDescription,
    TrainInstruction,
)
from common.labels import Structure
from common.training.metrics import SegmentationScores
from common.training.model import ModelConfig, build_unet

LV, MYO, LA = Structure.LV, Structure.MYO, Structure.LA


def model_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_unet(ModelConfig(channels=(4, 8, 16))).state_dict()


@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_weights_round_trip_in_every_encoding(packed: bool, dtype: str) -> None:
    state = model_state()
    reference = protocol.reference_of(state)
    wire = protocol.encode_weights(state, packed=packed, dtype=dtype)
    if packed:
        assert set(wire) == {"packed-float", "packed-int"}
        assert wire["packed-float"].dtype == np.dtype(dtype)
    else:
        assert set(wire) == set(state)
    back = protocol.decode_weights(wire, reference, dtype=dtype)
    assert list(back) == list(reference)
    for name, ref in reference.items():
        assert back[name].dtype == ref.dtype and back[name].shape == ref.shape
        if dtype == "float32" or ref.dtype.kind != "f":
            np.testing.assert_array_equal(back[name], ref)  # exact
        else:
            np.testing.assert_allclose(back[name], ref, rtol=1e-3, atol=1e-4)
    counter = next(k for k in reference if k.endswith("num_batches_tracked"))
    assert back[counter].dtype == np.int64


def test_packed_weights_that_do_not_fit_are_refused() -> None:
    reference = protocol.reference_of(model_state())
    wire = protocol.encode_weights(reference, packed=True, dtype="float32")
    short = {**wire, "packed-float": wire["packed-float"][:-1]}
    with pytest.raises(ProtocolError, match="floating values, expected"):
        protocol.decode_weights(short, reference)
    with pytest.raises(ProtocolError, match="the run transfers float32"):
        protocol.decode_weights(
            protocol.encode_weights(reference, dtype="float16"), reference, dtype="float32"
        )
    with pytest.raises(ProtocolError, match="unexpected arrays"):
        protocol.decode_weights({**wire, "extra": np.zeros(1)}, reference)


def test_score_keys_and_zeros_for_what_was_not_scored() -> None:
    scores = SegmentationScores(
        dice={LV: 0.9, MYO: math.nan, LA: 0.5},
        count={LV: 4, MYO: 0, LA: 2},
        area_ratio={LV: 1.1, MYO: math.nan, LA: 0.8},
    )
    metrics = protocol.scores_to_metrics(scores, prefix="full-")
    assert metrics == {
        "full-dice-LV": 0.9,
        "full-n-LV": 4.0,
        "full-area-LV": 1.1,
        "full-dice-MYO": 0.0,
        "full-n-MYO": 0.0,
        "full-area-MYO": 0.0,
        "full-dice-LA": 0.5,
        "full-n-LA": 2.0,
        "full-area-LA": 0.8,
    }
    assert set(protocol.scores_to_metrics(None)) == protocol.score_keys()
    assert protocol.scored_dice(metrics) == {LV: 0.9, LA: 0.5}
    assert protocol.mean_dice(metrics, "full-") == pytest.approx(0.7)
    assert math.isnan(protocol.mean_dice(metrics))  # no labelled-structure scores


def test_aggregate_weights_dice_by_images_that_scored_it() -> None:
    a = {"num-examples": 10.0, "loss": 1.0} | protocol.scores_to_metrics(
        SegmentationScores({LV: 0.8, MYO: 0.6, LA: 0.4}, {LV: 10, MYO: 10, LA: 10}, {})
    )
    b = {"num-examples": 30.0, "loss": 2.0} | protocol.scores_to_metrics(
        SegmentationScores({LV: 0.4, MYO: math.nan, LA: math.nan}, {LV: 30, MYO: 0, LA: 0}, {})
    )
    agg = protocol.aggregate_metrics([a, b])
    assert agg["dice-LV"] == pytest.approx((0.8 * 10 + 0.4 * 30) / 40)
    assert agg["dice-MYO"] == pytest.approx(0.6)  # B scored no MYO: it does not dilute A's
    assert agg["n-LA"] == 10.0 and agg["num-examples"] == 40.0
    assert agg["loss"] == pytest.approx((1.0 * 10 + 2.0 * 30) / 40)
    row = protocol.metrics_to_row(agg)
    assert row["n"] == 40.0 and row["full"] == 0.0 and row["MYO"] == pytest.approx(0.6)


def test_message_contents_round_trip_and_refuse_nonsense() -> None:
    versions = {"flwr": "1.42.0", "torch": "2.13.0"}
    site = SiteDescription("A", frozenset({LV, LA}), {"train": 5, "val": 2, "test": 1}, versions)
    records = site.to_records()
    assert records["site"] == {
        "name": "A",
        "labelled": "LA,LV",
        "software": '{"flwr": "1.42.0", "torch": "2.13.0"}',
    }
    assert records["counts"] == {"num-train": 5.0, "num-val": 2.0, "num-test": 1.0}
    assert SiteDescription.from_records(records["site"], records["counts"]) == site
    with pytest.raises(ProtocolError, match="without a site name"):
        SiteDescription.from_records({}, {})
    with pytest.raises(ProtocolError, match="'A'"):
        SiteDescription.from_records({"name": "A", "labelled": "RV"}, {})
    older = SiteDescription.from_records({"name": "A", "labelled": "LV"}, {})  # no software
    assert older.software == {}
    for bad in ("{not json", '["flwr"]', '{"flwr": 1}', '{"flwr": "' + "9" * 80 + '"}'):
        with pytest.raises(ProtocolError, match="software"):
            SiteDescription.from_records({"name": "A", "labelled": "LV", "software": bad}, {})

    train = TrainInstruction(7, frozenset({MYO, LA}))
    assert train.to_config() == {"server-round": 7, "partial-structures": "MYO,LA"}
    assert TrainInstruction.from_config(train.to_config()) == train
    assert TrainInstruction.from_config({"server-round": 1}).partial == frozenset()
    with pytest.raises(ProtocolError, match="server-round"):
        TrainInstruction.from_config({})

    evaluate = EvaluateInstruction("test", 3)
    assert EvaluateInstruction.from_config(evaluate.to_config()) == evaluate
    with pytest.raises(ProtocolError, match="unknown split 'x'"):
        EvaluateInstruction.from_config({"split": "x"})
