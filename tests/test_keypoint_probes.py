"""The keypoint probes that devset --folds cross-validates: each transform does what its row says."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from stages.lib.embeddings import SplitClips
from stages.lib.keypoints import HAND_PRESENCE, HAND_XY, KEYPOINT_FEATURES
from stages.tools.keypoint_probes import (
    ACTIVE_MARGIN,
    LONGEST_GAP_FILLED,
    PROBES,
    active_span,
    fill_lost_hands,
    finger_angles,
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
    for name in set(PROBES) - {"hand-crops"}:                 # hand-crops: its own test below
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



def write_hand_crops(path, lengths: list[int], seed: int = 0) -> list[np.ndarray]:
    """A crops file as embed_hand_crops writes it, each clip's embeddings random, frame 0 of each without a person."""
    rng = np.random.default_rng(seed)
    per_clip = [rng.normal(size=(length, 2, 1280)).astype(np.float16) for length in lengths]
    for embeddings in per_clip:
        embeddings[0] = 0.0
    with h5py.File(path, "w") as crops:
        crops["embeddings"] = np.concatenate(per_clip)
        crops["offsets"] = np.concatenate([[0], np.cumsum(lengths)])
        crops["paths"] = np.array([f"c{index}".encode() for index in range(len(lengths))])
    return per_clip


def test_hand_crops_join_the_keypoints_reduced_on_the_training_clips_and_zero_without_a_person(tmp_path):
    from stages.tools.hand_crops import HAND_CROP_COMPONENTS
    clips = SplitClips([clip_with_hands(12, seed) for seed in range(4)], np.array([0, 0, 1, 1]),
                       np.array([f"c{index}" for index in (2, 0, 3, 1)]))             # another order than the file's
    write_hand_crops(tmp_path / "crops.h5", [12] * 4)
    prepared = prepare_for_probe("hand-crops", clips, np.array([0, 2]), tmp_path / "crops.h5")
    for clip, before in zip(prepared.clips, clips.clips):
        assert clip.shape == (12, KEYPOINT_FEATURES + 2 * HAND_CROP_COMPONENTS)
        np.testing.assert_array_equal(clip[:, :KEYPOINT_FEATURES], before)
        assert not clip[0, KEYPOINT_FEATURES:].any() and clip[1:, KEYPOINT_FEATURES:].any()
    # Whitened on the training clips' frames with a person, then on the keypoints' scale: every component spreads
    # as the keypoints' median channel does there.
    keypoints = np.concatenate([clips.clips[i] for i in (0, 2)])
    scale = np.median(keypoints.std(axis=0))
    training = np.concatenate([prepared.clips[i][1:, KEYPOINT_FEATURES:] for i in (0, 2)])
    np.testing.assert_allclose(training.reshape(-1, HAND_CROP_COMPONENTS).std(axis=0), scale, rtol=0.1)
    write_hand_crops(tmp_path / "short.h5", [11] * 4)
    with pytest.raises(ValueError, match="another sampling"):
        prepare_for_probe("hand-crops", clips, np.array([0, 2]), tmp_path / "short.h5")
    with pytest.raises(ValueError, match="needs the crops"):
        prepare_for_probe("hand-crops", clips, np.array([0, 2]))


def test_a_built_in_signers_hands_are_cropped_where_the_pose_model_puts_the_wrists():
    from stages.lib.keypoints import HAND_INPUT, KeypointLane, fetch_keypoint_models
    from stages.lib.synthetic import SIGNS, make_signer, render_clip
    from stages.lib.video import prepare_frame
    from stages.tools.hand_crops import hand_crops
    lane = KeypointLane({name: path.read_bytes() for name, path in fetch_keypoint_models().items()})
    assert hand_crops(lane, np.full((224, 224, 3), 128, np.uint8)) is None               # no person: no crops
    clip = render_clip(SIGNS[0], make_signer(signer_index=0, seed=42, width=320, height=240),
                       repetition=0, seed=42, fps=25, seconds=1.5)
    crops = [hand_crops(lane, prepare_frame(frame, 224)) for frame in clip[::6]]
    found = [crop for crop in crops if crop is not None]
    assert len(found) >= len(crops) // 2
    assert all(crop.shape == (2, HAND_INPUT, HAND_INPUT, 3) and crop.dtype == np.uint8 for crop in found)
    assert np.mean([crop.std() for crop in found]) > 5                   # pixels of the frame, not the border


def test_finger_angles_are_one_for_a_straight_hand_and_fall_as_a_finger_folds():
    straight = np.zeros((2, 21, 2))
    for finger in range(5):                                          # five straight fingers fanned out
        direction = np.array([np.cos(0.3 * finger - 0.6), -np.sin(1.2 + 0.3 * finger)])
        for joint in range(4):
            straight[:, 1 + 4 * finger + joint] = (joint + 1) * direction
    folded = straight.copy()
    folded[1, 8] = straight[1, 6]                                    # the index fingertip turned back to its base
    cosines = finger_angles(folded.reshape(2, 42))                    # (2, 15)
    np.testing.assert_allclose(cosines[0], 1.0, atol=1e-9)
    # The index finger (columns 3-5): its first two joints still straight, its last folded back.
    np.testing.assert_allclose(cosines[1, 3:5], 1.0)
    assert cosines[1, 5] == pytest.approx(-1.0)
    assert not finger_angles(np.zeros((3, 42))).any()                 # no hand: zeros
    scaled = finger_angles((3.0 * folded).reshape(2, 42))
    np.testing.assert_allclose(scaled, cosines)                        # size does not matter
