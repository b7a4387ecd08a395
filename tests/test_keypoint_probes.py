"""The keypoint probes that devset --folds cross-validates: each transform does what its row says."""
from __future__ import annotations

import numpy as np

from stages.lib.embeddings import SplitClips
from stages.lib.keypoints import HAND_PRESENCE, HAND_XY, KEYPOINT_FEATURES
from stages.tools.keypoint_probes import (
    ACTIVE_MARGIN,
    LONGEST_GAP_FILLED,
    PROBES,
    active_span,
    fill_lost_hands,
    fingertip_distances,
    hand_shape,
    prepare_for_probe,
)


def clip_with_hands(frames: int, seed: int = 0) -> np.ndarray:
    """(frames, KEYPOINT_FEATURES) with both hands found in every frame, points moving smoothly."""
    rng = np.random.default_rng(seed)
    clip = rng.normal(size=(frames, KEYPOINT_FEATURES)).astype(np.float32) * 0.1
    for hand, presence in zip(HAND_XY, HAND_PRESENCE):
        points = rng.normal(size=(21, 2)) * 0.2
        points[0] = 0.0                                                  # wrist-relative: the wrist at 0
        clip[:, hand] = (points[None] * np.linspace(1, 2, frames)[:, None, None]).reshape(frames, -1)
        clip[:, presence] = 0.9
    return clip


def test_the_hand_shape_ignores_how_big_the_hand_is_and_keeps_a_lost_hand_at_zero():
    clip = clip_with_hands(6)
    left = clip[:, HAND_XY[0]]
    np.testing.assert_allclose(hand_shape(left), hand_shape(3 * left), atol=1e-6)
    np.testing.assert_allclose(fingertip_distances(left), fingertip_distances(0.5 * left), atol=1e-6)
    assert np.abs(hand_shape(left)).max() <= 1.0 + 1e-6
    assert not np.any(hand_shape(np.zeros_like(left)))


def test_a_short_gap_is_interpolated_and_a_long_one_left_lost():
    clip = clip_with_hands(30)
    short, long = slice(5, 7), slice(10, 10 + LONGEST_GAP_FILLED + 1)
    lost = clip.copy()
    for gap in (short, long):
        lost[gap, HAND_XY[1]] = 0.0
        lost[gap, HAND_PRESENCE[1]] = 0.1
    filled = fill_lost_hands(lost)
    np.testing.assert_allclose(filled[short, HAND_XY[1]], clip[short, HAND_XY[1]], atol=1e-5)   # linear motion back
    assert not np.any(filled[long, HAND_XY[1]])
    np.testing.assert_array_equal(filled[:, HAND_XY[0]], lost[:, HAND_XY[0]])                  # the other hand as it was


def test_every_probe_keeps_the_frames_and_standardising_sees_only_training_clips():
    clips = SplitClips([clip_with_hands(12, seed) for seed in range(4)], np.array([0, 0, 1, 1]),
                       np.array([f"c{index}" for index in range(4)]))
    for name in PROBES:
        prepared = prepare_for_probe(name, clips, np.array([0, 2]))
        assert [len(clip) for clip in prepared.clips] == [12] * 4 and prepared.clips[0].shape[1] >= KEYPOINT_FEATURES
    standardised = prepare_for_probe("standardise", clips, np.array([0, 2]))
    training = np.concatenate([standardised.clips[0], standardised.clips[2]])
    np.testing.assert_allclose(training.mean(axis=0), 0.0, atol=1e-3)        # float32 over a 1e-3 floor
    assert not np.allclose(np.concatenate([standardised.clips[1], standardised.clips[3]]).mean(axis=0), 0.0, atol=1e-3)


def test_the_active_span_keeps_the_raise_to_the_lowering_and_a_margin():
    clip = clip_with_hands(30)
    clip[:8, list(HAND_PRESENCE)] = 0.0                       # hands down, out of the frame, at both ends
    clip[25:, list(HAND_PRESENCE)] = 0.0
    clip[:, 2 * 15 + 1] = clip[:, 2 * 16 + 1] = 2.0             # both wrists low (at the hips) throughout
    np.testing.assert_array_equal(active_span(clip), clip[8 - ACTIVE_MARGIN:25 + ACTIVE_MARGIN])
    resting = clip.copy()
    resting[:, list(HAND_PRESENCE)] = 0.0
    np.testing.assert_array_equal(active_span(resting), resting)         # nothing active: the clip kept whole

