"""Keypoint window augmentation: one linear map of every (x, y) point a window, scores untouched, zeros kept."""
from __future__ import annotations

import numpy as np
import pytest

from stages.lib.keypoint_augment import XY_COLUMNS, augment_keypoint_window, random_linear_map
from stages.lib.keypoints import HAND_POINTS, KEYPOINT_FEATURES, UPPER_BODY


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
