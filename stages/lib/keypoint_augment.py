"""Augmentation of keypoint windows, drawn anew for every training window: the same sign from another
camera angle, distance, body shape and arm, seen by a camera that drops frames and a hand model that
misses hands.

Usage:
    from stages.lib.keypoint_augment import KeypointAugment, augment_keypoint_window
    augment = KeypointAugment(strength=0.2, arm_degrees=10, frame_drop=0.1, hand_drop=0.1, mirror=True)
    window = augment.window(window, rng)                        # (seq_len, 155) -> (seq_len, 155)
    window = augment_keypoint_window(window, rng, strength=0.2)   # the linear map alone

The layout of a keypoint frame is stages/lib/keypoints.py's: body points about the shoulders' midpoint,
hand points about their wrist, all in shoulder widths, then visibilities and presence scores. Each
augmentation keeps that meaning (a missing hand's zeros stay zeros, a frame without a person stays all
zeros), in this order:

    mirror       (opt-in per dataset: it turns a right-handed sign left-handed) half the windows swap the
                 signer's left and right: x negated, left and right body points and hands exchanged
    arm_degrees  each arm's elbow turned about its shoulder, and its forearm about its elbow, by up to this
                 many degrees either way (the hand turns with its forearm): the same sign by longer or
                 shorter arms, held a little higher or lower (SPOTER's joint rotation)
    strength     every (x, y) point through one random linear map per window: a rotation, a scale and an
                 aspect change, and a shear; s sets the ranges: rotation up to 45 s degrees, scale 1 +- s,
                 aspect 1 +- s/2, shear up to s/2
    perspective  every point through one random homography per window, (x, y) / (1 + g x + h y) with g and
                 h up to this either way (shoulder widths^-1): a camera above or beside the signer, turned
                 towards them; each hand's points are mapped where they are (about its wrist) and made
                 wrist-relative again
    frame_drop   each frame, with this chance, shows the frame before it again (a camera or decoder that
                 dropped it); the window's length stays seq_len
    hand_drop    each hand of each frame, with this chance, is lost (points and presence zeroed), as the
                 hand model loses a blurred or turned hand

Where a window starts and how fast it runs is varied by the window sampling (stages/lib/windows.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.lib.keypoints import (
    BODY_VISIBILITY,
    BODY_XY,
    HAND_ANCHORS,
    HAND_PRESENCE,
    HAND_XY,
    KEYPOINT_FEATURES,
    LEFT_SHOULDER,
    RIGHT_SHOULDER,
    WRISTS,
)

# The signer's left and right body points that a mirror exchanges (MediaPipe's pose indices): eyes (inner,
# centre, outer), ears, mouth corners, shoulders, elbows, wrists, pinky, index and thumb knuckles.
MIRROR_PAIRS = ((1, 4), (2, 5), (3, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16), (17, 18), (19, 20), (21, 22))
# Each arm: its shoulder, elbow, and the points that move with the forearm (wrist first, then the pinky, index
# and thumb knuckles), body indices; the signer's left, then right, as HAND_XY orders the hands.
ARMS = {"left": (LEFT_SHOULDER, 13, (*HAND_ANCHORS["left"], 21)),
        "right": (RIGHT_SHOULDER, 14, (*HAND_ANCHORS["right"], 22))}


def keypoint_xy_columns() -> np.ndarray:
    """(points, 2) column indices of each point's x and y in a keypoint frame: the body's, then both hands'."""
    return np.concatenate([np.arange(part.start, part.stop).reshape(-1, 2) for part in (BODY_XY, *HAND_XY)])


XY_COLUMNS = keypoint_xy_columns()


def body_xy(point: int) -> list[int]:
    """The columns of body point `point`'s x and y."""
    return [BODY_XY.start + 2 * point, BODY_XY.start + 2 * point + 1]


def mirror_permutation() -> np.ndarray:
    """(KEYPOINT_FEATURES,) column order that exchanges the signer's left and right (points, visibilities,
    hands, presence scores); x is negated apart from it (`mirror_window`)."""
    order = np.arange(KEYPOINT_FEATURES)
    for left, right in MIRROR_PAIRS:
        sides = [body_xy(point) + [BODY_VISIBILITY.start + point] for point in (left, right)]
        for a, b in zip(*sides):
            order[a], order[b] = b, a
    left_hand, right_hand = (np.arange(part.start, part.stop) for part in HAND_XY)
    order[left_hand], order[right_hand] = right_hand, left_hand
    order[HAND_PRESENCE[0]], order[HAND_PRESENCE[1]] = HAND_PRESENCE[1], HAND_PRESENCE[0]
    return order


MIRROR_ORDER = mirror_permutation()
X_COLUMNS = XY_COLUMNS[:, 0]


def mirror_window(window: np.ndarray) -> np.ndarray:
    """(seq_len, KEYPOINT_FEATURES): the same window signed with the other hand (x negated, sides exchanged)."""
    mirrored = window.copy()
    mirrored[:, X_COLUMNS] = -mirrored[:, X_COLUMNS]
    return mirrored[:, MIRROR_ORDER]


def rotation(degrees: float) -> np.ndarray:
    angle = np.deg2rad(degrees)
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def rotate_arms(window: np.ndarray, rng: np.random.Generator, max_degrees: float) -> np.ndarray:
    """Each arm's elbow and forearm turned about its shoulder, then its forearm about its elbow, by angles
    drawn once per window; the hand's wrist-relative points turn with the forearm. A frame without a person
    (all zeros) stays all zeros: every turn is about a point that is itself zero there."""
    rotated = window.copy()
    for side, hand in zip(ARMS, HAND_XY):
        shoulder, elbow, forearm = ARMS[side]
        at_shoulder, at_elbow = (rotation(rng.uniform(-max_degrees, max_degrees)) for _ in range(2))
        shoulder_xy = rotated[:, body_xy(shoulder)]                                  # (seq_len, 2)
        moving = [body_xy(point) for point in (elbow, *forearm)]
        for columns in moving:                                                     # about the shoulder
            rotated[:, columns] = shoulder_xy + (rotated[:, columns] - shoulder_xy) @ at_shoulder.T
        elbow_xy = rotated[:, body_xy(elbow)]
        for columns in moving[1:]:                                                 # the forearm about the elbow
            rotated[:, columns] = elbow_xy + (rotated[:, columns] - elbow_xy) @ at_elbow.T
        points = rotated[:, hand].reshape(len(window), -1, 2)                      # wrist-relative: turn only
        rotated[:, hand] = (points @ (at_elbow @ at_shoulder).T).reshape(len(window), -1)
    return rotated


def drop_frames(window: np.ndarray, rng: np.random.Generator, chance: float) -> np.ndarray:
    """Each frame after the first, with `chance`, replaced by the frame shown before it (held)."""
    shown = np.arange(len(window))
    for index in range(1, len(window)):
        if rng.random() < chance:
            shown[index] = shown[index - 1]
    return window[shown]


def drop_hands(window: np.ndarray, rng: np.random.Generator, chance: float) -> np.ndarray:
    """Each hand of each frame, with `chance`, lost: its points and presence score zeroed."""
    dropped = window.copy()
    for hand, presence in zip(HAND_XY, HAND_PRESENCE):
        lost = rng.random(len(window)) < chance
        dropped[np.ix_(lost, np.arange(hand.start, hand.stop))] = 0.0
        dropped[lost, presence] = 0.0
    return dropped


def random_linear_map(rng: np.random.Generator, strength: float) -> np.ndarray:
    """(2, 2): rotation @ shear @ scale, each drawn within the ranges `strength` sets."""
    scale = rng.uniform(1.0 - strength, 1.0 + strength)
    aspect = rng.uniform(1.0 - strength / 2, 1.0 + strength / 2)
    shear = rng.uniform(-strength / 2, strength / 2)
    return (rotation(rng.uniform(-45.0, 45.0) * strength) @ np.array([[1.0, shear], [0.0, 1.0]])
            @ np.diag([scale * aspect, scale / aspect]))


def perspective_window(window: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """(seq_len, KEYPOINT_FEATURES): every point through (x, y) / (1 + g x + h y), g and h drawn once per window
    within +-`strength`. A missing hand (zeros) and a frame without a person stay zeros."""
    tilt = rng.uniform(-strength, strength, size=2)

    def mapped(points: np.ndarray) -> np.ndarray:                     # (..., 2) -> (..., 2)
        return points / np.maximum(1.0 + points @ tilt, 0.2)[..., None]

    seen = window[:, BODY_XY].any(axis=1)                              # (seq_len,) a person in the frame
    out = window.copy()
    body = window[:, BODY_XY].reshape(len(window), -1, 2)
    out[:, BODY_XY] = np.where(seen[:, None, None], mapped(body), 0.0).reshape(len(window), -1)
    for wrist_point, hand in zip(WRISTS, HAND_XY):
        wrist = body[:, wrist_point][:, None]                          # (seq_len, 1, 2)
        points = window[:, hand].reshape(len(window), -1, 2)           # (seq_len, 21, 2) about the wrist
        found = points.any(axis=(1, 2)) & seen
        moved = mapped(wrist + points) - mapped(wrist)
        out[:, hand] = np.where(found[:, None, None], moved, 0.0).reshape(len(window), -1)
    return out


def check_keypoint_window(window: np.ndarray) -> None:
    if window.shape[-1] != KEYPOINT_FEATURES:
        raise ValueError(f"a keypoint window has {KEYPOINT_FEATURES} features a frame, got {window.shape[-1]}")


def augment_keypoint_window(window: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """(seq_len, KEYPOINT_FEATURES) -> the same window, every (x, y) point through one random linear map."""
    check_keypoint_window(window)
    if strength <= 0:
        return window
    augmented = window.copy()
    points = window[:, XY_COLUMNS]                          # (seq_len, points, 2)
    augmented[:, XY_COLUMNS] = points @ random_linear_map(rng, strength).T
    return augmented


@dataclass(frozen=True)
class KeypointAugment:
    """What the train stage does to each keypoint window (train.keypoint_*; the module docstring says each)."""
    strength: float = 0.0
    perspective: float = 0.0
    arm_degrees: float = 0.0
    frame_drop: float = 0.0
    hand_drop: float = 0.0
    mirror: bool = False

    @classmethod
    def from_params(cls, train: dict) -> KeypointAugment:
        return cls(float(train.get("keypoint_augment") or 0.0), float(train.get("keypoint_perspective") or 0.0),
                   float(train.get("keypoint_arm_degrees") or 0.0),
                   float(train.get("keypoint_frame_drop") or 0.0), float(train.get("keypoint_hand_drop") or 0.0),
                   bool(train.get("keypoint_mirror") or False))

    @property
    def active(self) -> bool:
        return self.mirror or max(self.strength, self.perspective, self.arm_degrees, self.frame_drop,
                                  self.hand_drop) > 0

    def window(self, window: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(seq_len, KEYPOINT_FEATURES) -> the window through every augmentation that is on, in the docstring's
        order."""
        check_keypoint_window(window)
        if self.mirror and rng.random() < 0.5:
            window = mirror_window(window)
        if self.arm_degrees > 0:
            window = rotate_arms(window, rng, self.arm_degrees)
        window = augment_keypoint_window(window, rng, self.strength)
        if self.perspective > 0:
            window = perspective_window(window, rng, self.perspective)
        if self.frame_drop > 0:
            window = drop_frames(window, rng, self.frame_drop)
        if self.hand_drop > 0:
            window = drop_hands(window, rng, self.hand_drop)
        return window

