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


@pytest.mark.parametrize("length", [1, 2, 5, 19, 20, 21, 22, 33, 34, 101])
@pytest.mark.parametrize("seq_len", [4, 5, 20, 25])
def test_the_centred_window_takes_every_frame_in_order_for_odd_and_even_differences(length, seq_len):
    """At the clip's own speed a window is consecutive frames, padded only by repeating the clip's edges.

    Rounding .5 to the even neighbour gave centred_window(21, 20) = [0, 2, 2, 4, 4, ...] and
    centred_window(5, 20) without frames 1 and 3: every odd `length - seq_len` halved the clip's rate.
    """
    indices = centred_window(length, seq_len).tolist()
    assert len(indices) == seq_len
    steps = np.diff(indices)
    assert set(steps.tolist()) <= {0, 1}
    if length >= seq_len:
        assert indices == list(range(indices[0], indices[0] + seq_len))     # no frame repeated, none dropped
        left, right = indices[0], length - 1 - indices[-1]
        assert abs(left - right) <= 1                                         # and the middle of the clip
    else:
        assert sorted(set(indices)) == list(range(length))                     # a short clip: every frame seen
        before, after = indices.count(0) - 1, indices.count(length - 1) - 1
        assert abs(before - after) <= 1 or length == 1


def test_the_examples_of_the_defect_are_consecutive():
    assert centred_window(21, 20).tolist() == list(range(1, 21))
    assert centred_window(33, 20).tolist() == list(range(7, 27))
    assert centred_window(5, 20).tolist() == [0] * 8 + [1, 2, 3] + [4] * 9


def test_spread_windows_take_consecutive_frames_too():
    for window in spread_windows(41, 20, 5, 0.2):
        assert np.diff(window).tolist() == [1] * 19
