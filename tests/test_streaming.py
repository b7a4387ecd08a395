"""Sign spotting on hand-made probability streams, and scoring spotted signs against a stream's truth."""
from __future__ import annotations

import numpy as np
import pytest

from stages.lib.stream_scoring import TrueSign, align, poisson_rate_interval, score_stream, summarise_streams
from stages.lib.streaming import SignSpotter, SpottingSettings, spot_signs, window_motion

LABELS = ["_none", "wave", "clap"]
STEP = 0.1   # seconds between model steps (10 steps/s)
WINDOW = 2.4


def steps(*segments: tuple[str, float, int]) -> tuple[np.ndarray, np.ndarray]:
    """Segments of (label, its probability, steps); the rest of each step's mass goes to `_none`."""
    rows = []
    for label, probability, count in segments:
        row = np.zeros(len(LABELS))
        row[LABELS.index(label)] = probability
        row[0] += 1.0 - row.sum()
        rows += [row] * count
    return np.arange(len(rows)) * STEP, np.array(rows)


def spotted(settings: SpottingSettings, *segments) -> list:
    times, probabilities = steps(*segments)
    return spot_signs(times, probabilities, LABELS, "_none", settings, WINDOW)


SETTINGS = SpottingSettings(threshold=0.6, min_hold_seconds=0.3, smoothing_steps=1, release_seconds=0.3)


def test_a_sign_is_emitted_once_when_it_has_held_long_enough():
    signs = spotted(SETTINGS, ("_none", 1.0, 10), ("wave", 0.9, 10), ("_none", 1.0, 10))
    assert [sign.sign for sign in signs] == ["wave"]
    assert signs[0].emitted_at == pytest.approx(1.3)             # first at 1.0 s, held 0.3 s
    assert signs[0].confidence == pytest.approx(0.9)


def test_a_blip_shorter_than_the_hold_is_never_emitted():
    assert spotted(SETTINGS, ("_none", 1.0, 5), ("wave", 0.9, 3), ("_none", 1.0, 5)) == []


def test_below_the_threshold_is_no_sign():
    assert spotted(SETTINGS, ("wave", 0.55, 20)) == []


def test_the_no_sign_class_is_never_emitted():
    assert spotted(SETTINGS, ("_none", 1.0, 40)) == []


def test_the_same_sign_again_needs_a_return_to_no_sign_first():
    flicker = spotted(SETTINGS, ("wave", 0.9, 6), ("_none", 1.0, 2), ("wave", 0.9, 6))   # 0.2 s < release
    assert [sign.sign for sign in flicker] == ["wave"]
    again = spotted(SETTINGS, ("wave", 0.9, 6), ("_none", 1.0, 5), ("wave", 0.9, 6))     # 0.5 s >= release
    assert [sign.sign for sign in again] == ["wave", "wave"]


def test_another_sign_taking_over_is_emitted_and_frees_the_first_again():
    signs = spotted(SETTINGS, ("wave", 0.9, 6), ("clap", 0.9, 6), ("wave", 0.9, 6))
    assert [sign.sign for sign in signs] == ["wave", "clap", "wave"]


def test_smoothing_averages_the_last_steps():
    spotter = SignSpotter(LABELS, "_none", SpottingSettings(0.6, 0.0, 3, 0.3), WINDOW)
    for time, probability in zip((0.0, 0.1, 0.2), (0.3, 0.6, 0.9)):
        spotter.update(np.array([1 - probability, probability, 0.0]), time)
    np.testing.assert_allclose(spotter.smoothed, [0.4, 0.6, 0.0])
    assert spotter.current == ("wave", pytest.approx(0.6))


def test_start_and_end_are_where_the_run_windows_overlap():
    (sign,) = spotted(SETTINGS, ("_none", 1.0, 30), ("wave", 0.9, 10), ("_none", 1.0, 30))
    # Steps at 3.0 .. 3.9 s saw windows ending there: the sign lies between 3.9 - 2.4 and 3.0.
    assert sign.start == pytest.approx(1.5) and sign.end == pytest.approx(3.0)
    assert sign.as_json() == {"sign": "wave", "start": 1.5, "end": 3.0, "confidence": 0.9}


def test_a_model_without_a_no_sign_class_uses_the_threshold_alone():
    labels = ["wave", "clap"]
    times = np.arange(20) * STEP
    probabilities = np.array([[0.5, 0.5]] * 5 + [[0.95, 0.05]] * 10 + [[0.5, 0.5]] * 5)
    signs = spot_signs(times, probabilities, labels, None, SETTINGS, WINDOW)
    assert [sign.sign for sign in signs] == ["wave"]


def test_alignment_counts_substitutions_insertions_and_deletions():
    assert align(["a", "b", "c"], ["a", "b", "c"]) == (0, [(0, 0), (1, 1), (2, 2)])
    assert align(["a", "x", "c"], ["a", "b", "c"])[0] == 1
    assert align(["a", "c"], ["a", "b", "c"]) == (1, [(0, 0), (1, 2)])
    assert align(["a", "b", "b", "c"], ["a", "b", "c"])[0] == 1
    assert align([], ["a", "b"]) == (2, [])


class Emitted:
    def __init__(self, sign, emitted_at):
        self.sign, self.emitted_at = sign, emitted_at


def test_stream_scores_give_error_rate_false_signs_and_latency():
    truth = [TrueSign("a", 1.0, 2.0), TrueSign("b", 3.0, 4.0)]
    sentence = score_stream([Emitted("a", 2.5), Emitted("c", 4.1)], truth, duration_seconds=10, idle=False)
    idle = score_stream([Emitted("a", 10.0)], [], duration_seconds=60, idle=True)
    summary = summarise_streams([sentence, idle])
    assert summary["stream_sign_error_rate"] == 0.5                    # one substitution over two true signs
    assert summary["stream_false_signs_per_minute"] == 1.0
    assert summary["stream_latency_seconds_median"] == pytest.approx(0.5)
    low, high = summary["stream_false_signs_per_minute_ci95"]
    assert low < 1.0 < high                                            # one false sign in one minute: a wide interval


def test_the_false_sign_interval_narrows_with_idle_minutes_and_matches_the_poisson_table():
    # Garwood's exact 95 % limits for a count of 0 are (0, 3.689), for 5 (1.623, 11.668): standard tables.
    assert poisson_rate_interval(0, 1.0) == [0.0, 3.689]
    assert poisson_rate_interval(5, 1.0) == pytest.approx([1.623, 11.668], abs=1e-3)
    two_minutes, ten_minutes = poisson_rate_interval(1, 2.0), poisson_rate_interval(5, 10.0)
    assert ten_minutes[1] - ten_minutes[0] < (two_minutes[1] - two_minutes[0]) / 2   # same 0.5 a minute, surer


def test_kept_stream_frames_are_keyed_to_the_code_that_took_them(tmp_path):
    """Editing any file of the take path (here the frame reduction in video.py) changes the key evaluate
    keeps a stream's taken frames under, so a code change re-records streams; an unrelated file does not."""
    import shutil

    from stages.lib.streaming import LIB_DIR, TAKE_PATH_SOURCES, take_path_code_digest
    lib = tmp_path / "lib"
    shutil.copytree(LIB_DIR, lib, ignore=shutil.ignore_patterns("__pycache__"))
    before = take_path_code_digest(lib)
    assert before == take_path_code_digest(LIB_DIR)
    (lib / "splits.py").write_text((lib / "splits.py").read_text() + "\n# not on the take path\n")
    assert take_path_code_digest(lib) == before
    assert "video.py" in TAKE_PATH_SOURCES
    (lib / "video.py").write_text((lib / "video.py").read_text() + "\n# a changed frame reduction\n")
    assert take_path_code_digest(lib) != before


def test_window_motion_is_the_mean_step_to_step_change():
    window = np.array([[0.0, 0.0], [3.0, 4.0], [3.0, 4.0], [3.0, 4.0]])             # one step of 5, two still
    assert window_motion(window) == pytest.approx(5.0 / 3)
    assert window_motion(np.zeros((20, 8))) == 0.0 and window_motion(np.ones((1, 8))) == 0.0


def test_a_window_that_moved_less_than_the_floor_names_no_sign():
    floored = SpottingSettings(threshold=0.6, min_hold_seconds=0.3, smoothing_steps=1, release_seconds=0.3,
                               motion_floor=2.0)
    times, probabilities = steps(("_none", 1.0, 10), ("wave", 0.9, 10), ("_none", 1.0, 10))
    motions = np.full(len(times), 1.0)
    assert spot_signs(times, probabilities, LABELS, "_none", floored, WINDOW, motions) == []   # still: no sign
    motions[12:] = 3.0                                                                         # it moved
    (sign,) = spot_signs(times, probabilities, LABELS, "_none", floored, WINDOW, motions)
    assert sign.sign == "wave" and sign.emitted_at == pytest.approx(1.5)                       # from 1.2 s, held 0.3
    # Motion not known (None): no floor, as before.
    assert [sign.sign for sign in spot_signs(times, probabilities, LABELS, "_none", floored, WINDOW)] == ["wave"]
