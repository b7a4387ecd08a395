"""Keypoint feature transforms probed by cross-validation before any becomes a pipeline option.

Usage:
    from stages.tools.keypoint_probes import PROBES, prepare_for_probe
    description, _ = PROBES["hand-shape"]
    clips = prepare_for_probe("hand-shape", clips, train_indices)   # SplitClips of (T, 155) -> (T, F)
    python -m stages.tools.devset /path/to/wlasl50 --folds 5 --rows keypoints,keypoints-hand-shape

Issue 33's levers that change what each keypoint frame says (normalising each hand by its own
size, fingertip distances, frame-to-frame differences, filling a hand lost for a few frames,
standardising every channel) are cheap to try on the cached keypoints: each is a function of
a clip's (frames, KEYPOINT_FEATURES) array, applied to every clip of the folder before the
folds' heads train (`stages.tools.crossval.cross_validate_head(prepare=...)`). Only a probe
that beats the spread of the folds earns a place in the head, where the live path runs it
too; until then none is in the served model, so the tools and the pipeline cannot disagree.
The layout of a frame's features is `stages.lib.keypoints.frame_features`'.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from stages.lib.embeddings import SplitClips
from stages.lib.keypoints import (
    BODY_VISIBILITY,
    BODY_XY,
    HAND_POINTS,
    HAND_PRESENCE,
    HAND_XY,
    PRESENCE_THRESHOLD,
    WRISTS,
)

FINGERTIPS = (4, 8, 12, 16, 20)                                            # thumb, index, middle, ring, little
WRIST_UP_LEVEL = 1.0         # shoulder widths below the shoulders' midpoint: about the bottom of the chest
ACTIVE_MARGIN = 2            # frames kept either side of the active span (a quarter second at 8 frames/s)
LONGEST_GAP_FILLED = 6       # frames: 0.75 s at 8 frames/s, about a hand's fast pass through a blur


def hand_size(points: np.ndarray) -> np.ndarray:
    """(T, 21, 2) wrist-relative points -> (T, 1, 1): the farthest point from the wrist (0 where no hand)."""
    return np.linalg.norm(points, axis=-1).max(axis=1)[:, None, None]


def hand_shape(hand: np.ndarray) -> np.ndarray:
    """(T, 42) wrist-relative hand points in shoulder widths -> (T, 42) in units of the hand's own size:
    the shape without how near the camera the hand is (SPOTER's hand normalisation, from the wrist)."""
    points = hand.reshape(len(hand), HAND_POINTS, 2)
    size = hand_size(points)
    return np.where(size > 1e-6, points / np.maximum(size, 1e-6), 0.0).reshape(len(hand), -1)


def fingertip_distances(hand: np.ndarray) -> np.ndarray:
    """(T, 42) hand points -> (T, 10): each pair of fingertips' distance, in the hand's own size."""
    points = hand.reshape(len(hand), HAND_POINTS, 2)
    size = np.maximum(hand_size(points)[:, 0, 0], 1e-6)
    pairs = [(a, b) for index, a in enumerate(FINGERTIPS) for b in FINGERTIPS[index + 1:]]
    return np.stack([np.linalg.norm(points[:, a] - points[:, b], axis=-1) / size for a, b in pairs], axis=1)


# Each finger's chain from the wrist: the joints whose bend is measured are the middle three of each chain.
FINGER_CHAINS = ((0, 1, 2, 3, 4), (0, 5, 6, 7, 8), (0, 9, 10, 11, 12), (0, 13, 14, 15, 16), (0, 17, 18, 19, 20))


def finger_angles(hand: np.ndarray) -> np.ndarray:
    """(T, 42) hand points -> (T, 15): the cosine of the bend at each finger's three joints (1: straight, -1:
    folded back); zeros where no hand was found. Whatever the hand's size, place and turn in the picture."""
    points = hand.reshape(len(hand), HAND_POINTS, 2)
    cosines = []
    for chain in FINGER_CHAINS:
        bones = np.diff(points[:, list(chain)], axis=1)                              # (T, 4, 2)
        before, after = bones[:, :-1], bones[:, 1:]                                  # (T, 3, 2) each
        lengths = np.linalg.norm(before, axis=-1) * np.linalg.norm(after, axis=-1)
        cosines.append(np.where(lengths > 1e-9, (before * after).sum(-1) / np.maximum(lengths, 1e-9), 0.0))
    return np.concatenate(cosines, axis=1)


def frame_differences(values: np.ndarray) -> np.ndarray:
    """(T, F) -> (T, F): each frame minus the one before (the first frame: zeros)."""
    return np.concatenate([np.zeros_like(values[:1]), np.diff(values, axis=0)])


def fill_lost_hands(clip: np.ndarray) -> np.ndarray:
    """A hand missing for at most LONGEST_GAP_FILLED frames between two detections: its points
    interpolated linearly in time (its presence score stays as the model gave it)."""
    clip = clip.copy()
    for hand, presence in zip(HAND_XY, HAND_PRESENCE):
        found = np.flatnonzero(clip[:, presence] >= PRESENCE_THRESHOLD)
        for before, after in zip(found[:-1], found[1:]):
            if 1 < after - before <= LONGEST_GAP_FILLED + 1:
                weights = (np.arange(before + 1, after) - before)[:, None] / (after - before)
                clip[before + 1:after, hand] = (1 - weights) * clip[before, hand] + weights * clip[after, hand]
    return clip


def active_span(clip: np.ndarray) -> np.ndarray:
    """The clip cut to where the hands are up (the raise to the lowering), ACTIVE_MARGIN frames either side:
    a frame is active when a hand is found or a visible wrist is above WRIST_UP_LEVEL. A clip with no active
    frame is kept whole. Training windows and the scored centred window then sit on the sign, not the rest."""
    wrists_y = clip[:, [BODY_XY.start + 2 * wrist + 1 for wrist in WRISTS]]        # (T, 2), down is positive
    wrists_seen = clip[:, [BODY_VISIBILITY.start + wrist for wrist in WRISTS]] >= 0.5
    hands_found = clip[:, list(HAND_PRESENCE)] >= PRESENCE_THRESHOLD
    active = np.flatnonzero((hands_found | (wrists_seen & (wrists_y < WRIST_UP_LEVEL))).any(axis=1))
    if len(active) == 0:
        return clip
    return clip[max(active[0] - ACTIVE_MARGIN, 0):active[-1] + ACTIVE_MARGIN + 1]


def with_hand_shapes(clip: np.ndarray) -> np.ndarray:
    return np.concatenate([clip, *[hand_shape(clip[:, hand]) for hand in HAND_XY]], axis=1)


def with_fingertip_distances(clip: np.ndarray) -> np.ndarray:
    return np.concatenate([clip, *[fingertip_distances(clip[:, hand]) for hand in HAND_XY]], axis=1)


def with_finger_angles(clip: np.ndarray) -> np.ndarray:
    return np.concatenate([clip, *[finger_angles(clip[:, hand]) for hand in HAND_XY]], axis=1)


def with_motion(clip: np.ndarray) -> np.ndarray:
    moving = np.concatenate([clip[:, BODY_XY], *[clip[:, hand] for hand in HAND_XY]], axis=1)
    return np.concatenate([clip, frame_differences(moving)], axis=1)


def with_everything(clip: np.ndarray) -> np.ndarray:
    return with_motion(with_fingertip_distances(with_hand_shapes(fill_lost_hands(clip))))


# name -> (what the row says, a clip's (T, 155) -> (T, F)); "standardise" and "hand-crops" are fitted per fold, below.
PROBES: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray] | None]] = {
    "hand-shape": ("each hand also in its own size (shape without distance)", with_hand_shapes),
    "fingertips": ("the 10 fingertip distances of each hand, in its own size", with_fingertip_distances),
    "finger-angles": ("the bend of each finger's three joints (15 cosines a hand)", with_finger_angles),
    "motion": ("frame-to-frame differences of the body and hand points as extra channels", with_motion),
    "fill-hands": ("a hand lost for up to 6 frames interpolated between its detections", fill_lost_hands),
    "standardise": ("every channel standardised by the training fold's mean and sd", None),
    "all": ("hands filled, hand shapes, fingertip distances and motion together", with_everything),
    "active-span": ("each clip cut to where the hands are up (a hand found, or a wrist above the chest)",
                    active_span),
    "hand-crops": ("MobileNetV2 on each hand's crop (448 px frames), 16 principal components a hand on the "
                   "keypoints' scale, beside the keypoints (stages/tools/hand_crops.py)", None),
}


def standardised(clips: SplitClips, train_indices: np.ndarray) -> SplitClips:
    """Every channel minus the training clips' frame mean, over their sd (nothing of the held-out fold)."""
    frames = np.concatenate([clips.clips[index] for index in train_indices])     # (training frames, F)
    mean, sd = frames.mean(axis=0), frames.std(axis=0) + 1e-3
    return SplitClips([(clip - mean) / sd for clip in clips.clips], clips.labels, clips.paths)


def prepare_for_probe(name: str, clips: SplitClips, train_indices: np.ndarray,
                      hand_crops_path: Path | None = None) -> SplitClips:
    """`clips` as the probe `name` gives them to a fold whose training clips are `train_indices`
    ("hand-crops" reads the crops' embeddings from `hand_crops_path`: stages/tools/hand_crops.py)."""
    if name == "standardise":
        return standardised(clips, train_indices)
    if name == "hand-crops":
        from stages.tools.hand_crops import with_hand_crops
        if hand_crops_path is None:
            raise ValueError("the hand-crops probe needs the crops' embeddings (stages/tools/hand_crops.py)")
        return with_hand_crops(clips, train_indices, hand_crops_path)
    transform = PROBES[name][1]
    return SplitClips([transform(clip).astype(np.float32) for clip in clips.clips], clips.labels, clips.paths)
