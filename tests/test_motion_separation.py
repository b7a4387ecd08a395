"""The motion study's measures: pixel energy follows what moves in a video; the separation counts what a floor removes."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import write_video

from stages.lib.video import iterate_video_frames
from stages.tools.motion_separation import pixel_energy, separation


def test_pixel_energy_is_zero_while_the_frame_is_still_and_grows_when_a_square_moves(tmp_path):
    frames = np.zeros((12, 64, 64, 3), np.uint8)
    for index in range(6, 12):                                  # still for 6 frames, then a square runs right
        frames[index, 20:40, 4 * index:4 * index + 16] = 255
    path = write_video(tmp_path / "square.avi", frames, fps=8.0)
    times = np.array([time for time, _ in iterate_video_frames(path)])
    energy = pixel_energy(path, times)                           # (12,)
    assert energy.shape == (12,) and energy[0] == 0.0
    assert energy[1:6].max() < 0.5                              # codec noise at most
    assert energy[6] > 10 and energy[7:].min() > 2              # the square appears, then moves


def test_separation_counts_the_false_signs_under_a_floor_that_keeps_most_true_ones():
    true = np.arange(1.0, 21.0)                                 # 20 true signs moving 1 .. 20
    false = np.array([0.5, 1.5, 2.5, 10.0])
    figures = separation(true, false)
    assert figures["true_median"] == pytest.approx(10.5) and figures["false_median"] == pytest.approx(2.0)
    # The 5 % quantile of 1..20 is 1.95: 0.5 and 1.5 are under it; the 10 % one (2.9) adds 2.5.
    assert figures["false_removed_keeping_95pct_of_true"] == 0.5
    assert figures["false_removed_keeping_90pct_of_true"] == 0.75
