"""Augmentation of keypoint windows, drawn anew for every training window: the same sign from another
camera angle, distance and body shape.

Usage:
    from stages.lib.keypoint_augment import augment_keypoint_window
    window = augment_keypoint_window(window, rng, strength=0.2)   # (seq_len, 155) -> (seq_len, 155)

Every (x, y) point of a keypoint frame (stages/lib/keypoints.py: body points about the shoulders'
midpoint, hand points about their wrist, all in shoulder widths) goes through one random linear map
per window: a rotation, a scale and an aspect change, and a shear. A linear map keeps the layout's
meaning (differences stay differences, a missing hand's zeros stay zeros, a frame without a person
stays all zeros); visibilities and presence scores are left alone. `strength` s sets the ranges:
rotation up to 45 s degrees, scale 1 +- s, aspect 1 +- s/2, shear up to s/2. Time (where the window
starts, how fast) is varied by the window sampling (stages/lib/windows.py), not here.
"""
from __future__ import annotations

import numpy as np

from stages.lib.keypoints import BODY_XY, HAND_XY, KEYPOINT_FEATURES


def keypoint_xy_columns() -> np.ndarray:
    """(points, 2) column indices of each point's x and y in a keypoint frame: the body's, then both hands'."""
    return np.concatenate([np.arange(part.start, part.stop).reshape(-1, 2) for part in (BODY_XY, *HAND_XY)])


XY_COLUMNS = keypoint_xy_columns()


def random_linear_map(rng: np.random.Generator, strength: float) -> np.ndarray:
    """(2, 2): rotation @ shear @ scale, each drawn within the ranges `strength` sets."""
    angle = np.deg2rad(rng.uniform(-45.0, 45.0) * strength)
    scale = rng.uniform(1.0 - strength, 1.0 + strength)
    aspect = rng.uniform(1.0 - strength / 2, 1.0 + strength / 2)
    shear = rng.uniform(-strength / 2, strength / 2)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return rotation @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([scale * aspect, scale / aspect])


def augment_keypoint_window(window: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """(seq_len, KEYPOINT_FEATURES) -> the same window, every (x, y) point through one random linear map."""
    if window.shape[-1] != KEYPOINT_FEATURES:
        raise ValueError(f"a keypoint window has {KEYPOINT_FEATURES} features a frame, got {window.shape[-1]}")
    if strength <= 0:
        return window
    augmented = window.copy()
    points = window[:, XY_COLUMNS]                          # (seq_len, points, 2)
    augmented[:, XY_COLUMNS] = points @ random_linear_map(rng, strength).T
    return augmented
