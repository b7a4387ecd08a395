"""Keypoint window augmentation: one linear map of every (x, y) point a window, scores untouched, zeros kept;
the mirror, arm rotations, dropped frames and lost hands each keep the layout's meaning."""
from __future__ import annotations

import numpy as np
import pytest

from stages.lib.keypoint_augment import (
    ARMS,
    MIRROR_PAIRS,
    XY_COLUMNS,
    KeypointAugment,
    augment_keypoint_window,
    body_xy,
    drop_frames,
    drop_hands,
    mirror_window,
    perspective_window,
    random_linear_map,
    rotate_arms,
)
from stages.lib.keypoints import HAND_POINTS, HAND_PRESENCE, HAND_XY, KEYPOINT_FEATURES, UPPER_BODY, frame_features


def keypoint_window(seq_len: int = 6, seed: int = 0) -> np.ndarray:
    window = np.random.default_rng(seed).normal(size=(seq_len, KEYPOINT_FEATURES)).astype(np.float32)
    window[2] = 0.0                                           # a frame without a person: all zeros
    return window


def test_the_layout_covers_every_point_once_and_no_score():
    assert XY_COLUMNS.shape == (len(UPPER_BODY) + 2 * HAND_POINTS, 2)
    columns = set(XY_COLUMNS.ravel().tolist())
    assert len(columns) == XY_COLUMNS.size
    scores = set(range(2 * len(UPPER_BODY), 3 * len(UPPER_BODY))) | {KEYPOINT_FEATURES - 2, KEYPOINT_FEATURES - 1}
    assert not columns & scores and columns | scores == set(range(KEYPOINT_FEATURES))


def test_one_linear_map_moves_every_point_of_the_window_and_leaves_scores_and_empty_frames():
    window = keypoint_window()
    rng = np.random.default_rng(3)
    augmented = augment_keypoint_window(window, rng, strength=0.3)
    matrix = random_linear_map(np.random.default_rng(3), 0.3)         # the same draw
    np.testing.assert_allclose(augmented[:, XY_COLUMNS], window[:, XY_COLUMNS] @ matrix.T, rtol=1e-5, atol=1e-6)
    others = np.setdiff1d(np.arange(KEYPOINT_FEATURES), XY_COLUMNS.ravel())
    np.testing.assert_array_equal(augmented[:, others], window[:, others])
    assert not augmented[2].any()
    assert not np.allclose(augmented, window)


def test_draws_differ_between_windows_and_strength_zero_is_the_identity():
    window = keypoint_window()
    rng = np.random.default_rng(0)
    first, second = (augment_keypoint_window(window, rng, 0.2) for _ in range(2))
    assert not np.allclose(first, second)
    assert augment_keypoint_window(window, rng, 0.0) is window
    with pytest.raises(ValueError, match="155 features a frame, got 1280"):
        augment_keypoint_window(np.zeros((4, 1280), np.float32), rng, 0.2)


def pixel_scene(seed: int = 0, width: float = 640.0):
    """A signer in frame pixels: 33 body points, visibilities, two hands (the left one missing in half the cases)."""
    rng = np.random.default_rng(seed)
    body = rng.uniform(100, width - 100, size=(33, 2))
    visibility = rng.uniform(0, 1, size=33)
    hands = [rng.uniform(100, 500, size=(HAND_POINTS, 2)), rng.uniform(100, 500, size=(HAND_POINTS, 2))]
    return body, visibility, hands, [0.9, 0.8]


def test_the_mirror_is_what_the_models_would_give_on_the_mirrored_frame():
    width = 640.0
    for seed in range(3):
        body, visibility, hands, presence = pixel_scene(seed, width)
        flipped_body, flipped_visibility = body.copy(), visibility.copy()
        flipped_body[:, 0] = width - flipped_body[:, 0]
        for left, right in MIRROR_PAIRS:        # the person's left arm is now where a right arm is
            flipped_body[[left, right]] = flipped_body[[right, left]]
            flipped_visibility[[left, right]] = flipped_visibility[[right, left]]
        flipped_hands = [np.column_stack([width - hand[:, 0], hand[:, 1]]) for hand in hands[::-1]]
        original = frame_features(body, visibility, hands, presence)[None]
        flipped = frame_features(flipped_body, flipped_visibility, flipped_hands, presence[::-1])[None]
        np.testing.assert_allclose(mirror_window(original), flipped, atol=1e-5)
        np.testing.assert_allclose(mirror_window(mirror_window(original)), original)


def test_arm_rotations_keep_each_bone_length_the_shoulders_and_the_hand_shape():
    window = keypoint_window()
    rotated = rotate_arms(window, np.random.default_rng(1), max_degrees=20.0)
    def point(values, index):
        return values[:, body_xy(index)]
    for shoulder, elbow, forearm in ARMS.values():
        np.testing.assert_allclose(point(rotated, shoulder), point(window, shoulder))
        for start, end in ((shoulder, elbow), (elbow, forearm[0])):
            np.testing.assert_allclose(np.linalg.norm(point(rotated, end) - point(rotated, start), axis=1),
                                       np.linalg.norm(point(window, end) - point(window, start), axis=1), rtol=1e-5)
        assert not np.allclose(point(rotated, forearm[0]), point(window, forearm[0]))
    for hand in HAND_XY:                       # wrist-relative points turn, never stretch
        np.testing.assert_allclose(np.linalg.norm(rotated[:, hand].reshape(6, -1, 2), axis=2),
                                   np.linalg.norm(window[:, hand].reshape(6, -1, 2), axis=2), rtol=1e-5)
    moved = {column for _, elbow, forearm in ARMS.values() for index in (elbow, *forearm) for column in body_xy(index)}
    others = sorted(set(range(2 * len(UPPER_BODY))) - moved)
    np.testing.assert_array_equal(rotated[:, others], window[:, others])
    assert not rotated[2].any()                # a frame without a person stays all zeros


def test_dropped_frames_repeat_the_frame_before_and_lost_hands_are_zeros():
    window = keypoint_window(seq_len=40)
    held = drop_frames(window, np.random.default_rng(0), chance=0.3)
    shown = [int(np.flatnonzero((window == frame).all(axis=1))[0]) for frame in held]
    assert shown[0] == 0
    assert all(shown[index] in (index, shown[index - 1]) for index in range(1, len(shown)))   # itself, or held
    assert len(set(shown)) < len(window)
    lost = drop_hands(window, np.random.default_rng(0), chance=0.5)
    for hand, presence in zip(HAND_XY, HAND_PRESENCE):
        gone = lost[:, presence] == 0
        assert 0 < gone.sum() < len(window)
        assert not lost[gone][:, hand].any()
        np.testing.assert_array_equal(lost[~gone][:, hand], window[~gone][:, hand])


def test_the_augment_from_params_is_off_by_default_and_names_each_setting():
    assert not KeypointAugment.from_params({}).active
    augment = KeypointAugment.from_params({"keypoint_augment": 0.2, "keypoint_perspective": 0.05,
                                           "keypoint_arm_degrees": 10, "keypoint_frame_drop": 0.1,
                                           "keypoint_hand_drop": 0.1, "keypoint_mirror": True})
    assert augment == KeypointAugment(strength=0.2, perspective=0.05, arm_degrees=10.0, frame_drop=0.1,
                                      hand_drop=0.1, mirror=True) and augment.active
    window = keypoint_window()
    first, second = (augment.window(window, np.random.default_rng(seed)) for seed in (0, 1))
    assert first.shape == window.shape and not np.allclose(first, second)


def test_perspective_maps_body_and_hands_through_one_homography_and_keeps_zeros():
    window = keypoint_window(seed=4) * 0.5
    window[3, HAND_XY[0]] = 0.0                                      # a missing left hand
    warped = perspective_window(window, np.random.default_rng(7), strength=0.1)
    tilt = np.random.default_rng(7).uniform(-0.1, 0.1, size=2)       # the same draw
    def homography(points):
        return points / (1.0 + points @ tilt)[..., None]
    body = window[:, XY_COLUMNS[:len(UPPER_BODY)]]                   # (6, 23, 2)
    seen = [0, 1, 3, 4, 5]                                           # frame 2 has no person
    np.testing.assert_allclose(warped[:, XY_COLUMNS[:len(UPPER_BODY)]][seen], homography(body[seen]), rtol=1e-5)
    for hand, wrist in zip(HAND_XY, (15, 16)):                       # each hand about where its wrist went
        points = window[seen][:, hand].reshape(len(seen), -1, 2)
        absolute = body[seen][:, wrist:wrist + 1] + points
        expected = homography(absolute) - homography(body[seen][:, wrist:wrist + 1])
        got = warped[seen][:, hand].reshape(len(seen), -1, 2)
        found = points.any(axis=(1, 2))
        np.testing.assert_allclose(got[found], expected[found], rtol=1e-4, atol=1e-6)
    assert not warped[2].any() and not warped[3, HAND_XY[0]].any()
    np.testing.assert_array_equal(warped[:, 2 * len(UPPER_BODY):3 * len(UPPER_BODY)],
                                  window[:, 2 * len(UPPER_BODY):3 * len(UPPER_BODY)])   # visibilities untouched
