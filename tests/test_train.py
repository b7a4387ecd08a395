"""The train stage's windows: plain, edge and neighbour windows, each labelled as the stage says."""
from __future__ import annotations

import numpy as np

from stages.lib.embeddings import SplitClips
from stages.lib.windows import WindowJitter
from stages.train import EDGE, NEIGHBOURS, PLAIN, TrainingWindows, neighbour_candidates, neighbour_window

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
