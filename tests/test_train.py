"""The train stage's windows: plain, edge, neighbour and pose-hold windows, each labelled as the stage says."""
from __future__ import annotations

import numpy as np

from stages.lib.embeddings import SplitClips
from stages.lib.windows import WindowJitter
from stages.train import (
    EDGE,
    NEIGHBOURS,
    PLAIN,
    POSE_HOLD,
    TrainingWindows,
    neighbour_candidates,
    neighbour_window,
    pose_hold_window,
    training_windows,
)

SEQ_LEN = 8
JITTER = WindowJitter(position=0.1, speed=0.15)
NO_SIGN = 2


def marked_split() -> SplitClips:
    """Clips whose every frame holds the clip's own index, so a window tells which clips it came from:
    signs 0 and 1 by two signers, and an idle clip (class 2) by each."""
    labels = np.array([0, 1, 0, 1, NO_SIGN, NO_SIGN])
    signers = np.array(["ana", "ana", "ben", "ben", "ana", "ben"])
    clips = [np.full((SEQ_LEN + 2, 3), index, np.float32) for index in range(len(labels))]
    return SplitClips(clips, labels, np.array([f"clip{index}" for index in range(len(labels))]), signers)


def test_neighbours_are_other_signs_by_the_same_signer_never_idle_clips():
    assert neighbour_candidates(marked_split(), NO_SIGN) == {0: [1], 1: [0], 2: [3], 3: [2]}
    unknown = marked_split()
    unknown = SplitClips(unknown.clips, unknown.labels, unknown.paths)          # no signers read: any other sign
    assert neighbour_candidates(unknown, NO_SIGN)[0] == [1, 3]


def test_a_neighbour_window_holds_the_clip_in_its_middle_and_the_neighbour_at_its_ends():
    split = marked_split()
    seen_neighbour = False
    for seed in range(20):
        window = neighbour_window(split, 0, [1], SEQ_LEN, np.random.default_rng(seed), JITTER)   # (8, 3)
        frames = window[:, 0].astype(int)
        assert window.shape == (SEQ_LEN, 3) and set(frames) <= {0, 1}
        assert frames[SEQ_LEN // 2] == 0                                   # the window is on the clip's sign
        seen_neighbour |= bool(frames[0] == 1 or frames[-1] == 1)
    assert seen_neighbour


def test_an_epoch_plans_neighbour_windows_per_sign_clip_labelled_with_the_clip_sign():
    split = marked_split()
    windows = TrainingWindows(split, SEQ_LEN, batch_size=64, windows_per_clip=1, jitter=JITTER, seed=0,
                              no_sign_index=NO_SIGN, edge_windows=1, neighbour_windows=2)
    kinds = windows.order[:, 1]
    assert (kinds == PLAIN).sum() == 6 and (kinds == EDGE).sum() == 4 and (kinds == NEIGHBOURS).sum() == 8
    batch, labels = windows[0]
    for (clip_index, kind), window, label in zip(windows.order, batch, labels):
        if kind == NEIGHBOURS:
            assert label == split.labels[clip_index] and window[SEQ_LEN // 2, 0] == clip_index
        if kind == EDGE:
            assert label == NO_SIGN
    plain = TrainingWindows(split, SEQ_LEN, batch_size=64, windows_per_clip=1, jitter=JITTER, seed=0,
                            no_sign_index=NO_SIGN, edge_windows=1)
    assert not (plain.order[:, 1] == NEIGHBOURS).any()                  # off by default


def ramp_clip(frames: int = 12) -> np.ndarray:
    """A clip whose feature is the frame's index: its step-to-step change is the same everywhere, so the
    pose (a share of the clip's motion) is a share of its frames."""
    return np.arange(frames, dtype=np.float32)[:, None]


def test_a_pose_hold_window_rises_to_a_pose_waits_and_drops_the_same_way():
    clip = ramp_clip()
    for seed in range(30):
        window = pose_hold_window(clip, SEQ_LEN, np.random.default_rng(seed), JITTER)
        frames = clip[window, 0]                                                   # (8,)
        pose = frames.max() if frames.max() < 11 else frames.min()
        assert len(window) == SEQ_LEN
        # One pose, never the sign's middle: within POSE_MOTION_SHARE of the start or of the end.
        assert pose <= 0.35 * 11 + 1 or pose >= 0.65 * 11 - 1
        steps = np.diff(frames)
        # Up (or down from the clip's end), then still, then back: never past the pose.
        assert np.all(np.abs(steps) <= 2) and (steps == 0).any()
        assert len(set(np.sign(steps[steps != 0]))) <= 2


def test_an_epoch_plans_pose_hold_windows_per_sign_clip_labelled_no_sign():
    split = marked_split()
    windows = TrainingWindows(split, SEQ_LEN, batch_size=64, windows_per_clip=1, jitter=JITTER, seed=0,
                              no_sign_index=NO_SIGN, edge_windows=0, pose_hold_windows=3)
    kinds = windows.order[:, 1]
    assert (kinds == POSE_HOLD).sum() == 12                                      # 4 sign clips x 3
    _, labels = windows[0]
    assert np.all(labels[kinds == POSE_HOLD] == NO_SIGN)
    assert np.all(windows.split.labels[windows.order[kinds == POSE_HOLD, 0]] != NO_SIGN)   # never idle clips
    unlabelled = TrainingWindows(split, SEQ_LEN, batch_size=64, windows_per_clip=1, jitter=JITTER, seed=0,
                                 no_sign_index=None, pose_hold_windows=3)
    assert not (unlabelled.order[:, 1] == POSE_HOLD).any()                      # no no-sign class to teach


def test_the_train_settings_are_read_once_for_the_stage_and_cross_validation():
    settings = {"batch_size": 64, "windows_per_clip": 2, "position_jitter": 0.1, "speed_jitter": 0.15,
                "edge_windows": 1, "neighbour_windows": 1, "pose_hold_windows": 2, "no_sign_windows_per_clip": 3}
    windows = training_windows(marked_split(), settings, SEQ_LEN, seed=0, no_sign_index=NO_SIGN,
                               embedding_attributes={"backbone": "MobileNetV2"})
    kinds = windows.order[:, 1]
    # 4 sign clips x 2 + 2 idle clips x 3 plain; per sign clip 1 edge, 1 neighbour, 2 pose holds.
    assert [(kinds == kind).sum() for kind in (PLAIN, EDGE, NEIGHBOURS, POSE_HOLD)] == [14, 4, 4, 8]
    assert windows.jitter == JITTER and windows.keypoint_augment is None     # no points to move in embeddings
