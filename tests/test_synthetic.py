"""The built-in dataset is a real recognition problem: order matters, signers differ, runs repeat."""
from __future__ import annotations

import numpy as np

from stages.generate import plan_clips
from stages.lib.synthetic import SIGNS, TIME_REVERSED_PAIRS, make_signer, render_clip

SETTINGS = {"classes": 12, "signers": 10, "repetitions": 3, "val_signers": 2, "test_signers": 2}


def sign_named(name: str):
    return next(sign for sign in SIGNS if sign.name == name)


def test_vocabulary_has_ten_or_more_signs_and_two_or_more_reversed_pairs():
    assert len(SIGNS) >= 10
    assert len(TIME_REVERSED_PAIRS) >= 2


def test_reversed_pairs_are_the_same_motion_in_opposite_time_order():
    for forward_name, backward_name in TIME_REVERSED_PAIRS:
        forward, backward = sign_named(forward_name), sign_named(backward_name)
        for t in np.linspace(0, 1, 11):
            (hand_f, shape_f), _ = forward.pose_at(float(t))
            (hand_b, shape_b), _ = backward.pose_at(float(1 - t))
            assert np.allclose(hand_f, hand_b) and shape_f == shape_b
        # ... and not the same motion forwards: otherwise order would not matter.
        assert not np.allclose(forward.pose_at(0.1)[0][0], backward.pose_at(0.1)[0][0])


def test_rendering_is_deterministic_for_a_seed():
    signer = make_signer(2, seed=5, width=96, height=72)
    first = render_clip(SIGNS[3], signer, repetition=1, seed=5, fps=10, seconds=0.8)
    second = render_clip(SIGNS[3], signer, repetition=1, seed=5, fps=10, seconds=0.8)
    other_seed = render_clip(SIGNS[3], make_signer(2, seed=6, width=96, height=72), 1, seed=6, fps=10, seconds=0.8)
    assert np.array_equal(first, second)
    assert not np.array_equal(first[: len(other_seed)], other_seed[: len(first)])


def test_signers_differ_in_looks_size_place_and_speed():
    signers = [make_signer(index, seed=42, width=320, height=240) for index in range(SETTINGS["signers"])]
    assert len({s.skin_bgr for s in signers}) >= 6
    assert len({s.shirt_bgr for s in signers}) == len(signers)
    assert len({s.background_pattern for s in signers}) >= 3
    speeds = [s.speed for s in signers]
    assert min(speeds) >= 0.7 and max(speeds) <= 1.3 and max(speeds) - min(speeds) > 0.2
    assert max(s.scale for s in signers) / min(s.scale for s in signers) > 1.1
    assert max(s.centre_x for s in signers) - min(s.centre_x for s in signers) > 10


def test_split_holds_out_whole_signers():
    rows = plan_clips(SETTINGS, seed=42)
    signers_by_split = {split: {r["signer"] for r in rows if r["split"] == split} for split in ("train", "val", "test")}
    assert len(signers_by_split["test"]) == 2 and len(signers_by_split["val"]) == 2
    assert not signers_by_split["train"] & signers_by_split["val"]
    assert not signers_by_split["train"] & signers_by_split["test"]
    assert not signers_by_split["val"] & signers_by_split["test"]
    assert len(rows) == 12 * 10 * 3
