"""Windows: the centred one, random training ones, spread ones; short clips padded with their own edge frames."""
from __future__ import annotations

import numpy as np
import pytest

from stages.lib.windows import WindowJitter, centred_window, random_window, spread_windows, window_indices


def test_a_clip_of_exactly_the_window_is_itself():
    assert centred_window(24, 24).tolist() == list(range(24))


def test_a_short_clip_is_padded_with_its_own_first_and_last_frames_never_invented_ones():
    indices = centred_window(5, 11)
    assert indices.tolist() == [0, 0, 0, 0, 1, 2, 3, 4, 4, 4, 4]
    assert indices.tolist() == sorted(indices.tolist())


def test_a_long_clip_gives_its_middle():
    assert centred_window(10, 4).tolist() == [3, 4, 5, 6]
    assert centred_window(11, 5).tolist() == [3, 4, 5, 6, 7]


def test_speed_stretches_the_window_over_more_or_fewer_frames():
    fast = window_indices(100, 10, centre=50, speed=2.0)
    assert fast[-1] - fast[0] == 18 and np.all(np.diff(fast) == 2)


@pytest.mark.parametrize("length", [1, 3, 24, 80])
def test_random_windows_stay_inside_the_clip_and_vary(length):
    rng = np.random.default_rng(0)
    jitter = WindowJitter(position=0.2, speed=0.15)
    windows = [random_window(length, 24, rng, jitter) for _ in range(50)]
    assert all(w.min() >= 0 and w.max() <= length - 1 and len(w) == 24 for w in windows)
    if length > 1:
        assert len({tuple(w) for w in windows}) > 10


def test_random_windows_stay_around_the_middle_unless_anywhere():
    rng = np.random.default_rng(1)
    jitter = WindowJitter(position=0.2, speed=0.0)
    centres = [random_window(200, 10, rng, jitter).mean() for _ in range(300)]
    assert 99.5 - 0.2 * 200 - 1 <= min(centres) and max(centres) <= 99.5 + 0.2 * 200 + 1
    anywhere = [random_window(200, 10, rng, jitter, anywhere=True).mean() for _ in range(300)]
    assert min(anywhere) < 30 and max(anywhere) > 170


def test_spread_windows_are_centred_on_average_and_one_is_the_centred_window():
    assert [w.tolist() for w in spread_windows(40, 10, 1, 0.2)] == [centred_window(40, 10).tolist()]
    windows = spread_windows(40, 10, 3, 0.2)
    assert len(windows) == 3 and windows[1].tolist() == centred_window(40, 10).tolist()
    assert windows[0][0] < windows[1][0] < windows[2][0]
