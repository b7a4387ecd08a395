"""The calibrate stage: each model's spotting threshold, from its own validation clips, read by every caller.

The rule's pieces on hand-made tables and probability traces; the stage itself on the tiny pipeline
trained once by `dvc repro` (the trained_workspace fixture), with the CLI reading what it wrote.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from stages.calibrate import (
    ClipSteps,
    calibrate,
    candidate_thresholds,
    choose_threshold,
    held_still,
    motion_floor,
    spotted_signs,
)
from stages.lib.served import load_bundle
from stages.lib.streaming import SpottingSettings, model_spotting

SPOTTING = {"threshold": 0.9, "min_hold_seconds": 0.1, "smoothing_steps": 1, "release_seconds": 0.3,
            "calibrate": True, "lowest_threshold": 0.5}


@pytest.fixture(scope="module")
def bundle(trained_workspace):
    return load_bundle(trained_workspace / "models/model.keras")


def table(rows: list[tuple[float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["threshold", "sign_clips_spotted_right", "idle_clips_with_a_false_sign"])


def test_candidates_run_from_the_params_threshold_down_to_the_lowest():
    assert candidate_thresholds(0.9, 0.5) == [0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5]
    assert candidate_thresholds(0.4, 0.5) == [0.4]              # params below the floor: params alone


def test_the_params_threshold_stays_when_no_lower_one_does_better():
    threshold, reason = choose_threshold(table([(0.9, 0.9, 0.1), (0.85, 0.9, 0.1), (0.8, 0.95, 0.2)]), True)
    assert threshold == 0.9 and "params.yaml's threshold" in reason


def test_an_unsure_model_gets_the_threshold_that_spots_the_most_less_false_alarms():
    threshold, reason = choose_threshold(table([(0.9, 0.4, 0.0), (0.85, 0.7, 0.0), (0.8, 0.9, 0.0),
                                                (0.75, 1.0, 0.2)]), True)
    assert threshold == 0.8 and "params.yaml's 0.9 spots 40%" in reason


def test_ties_go_to_the_highest_threshold():
    threshold, _ = choose_threshold(table([(0.9, 0.2, 0.0), (0.85, 0.6, 0.0), (0.8, 0.7, 0.1), (0.75, 0.6, 0.0)]),
                                    True)
    assert threshold == 0.85                                      # 0.6 - 0 ties 0.7 - 0.1 and 0.6 - 0


def test_calibration_off_keeps_the_params_threshold():
    threshold, reason = choose_threshold(table([(0.9, 0.0, 0.0), (0.85, 1.0, 0.0)]), False)
    assert threshold == 0.9 and "off" in reason


def test_a_clip_is_held_still_by_its_own_first_and_last_frames():
    clip = np.arange(6, dtype=np.float32).reshape(3, 2)                 # 3 frames of 2 features
    padded = held_still(clip, 2)
    assert padded.shape == (7, 2)
    assert padded[:2].tolist() == [[0, 1], [0, 1]] and padded[-2:].tolist() == [[4, 5], [4, 5]]


def sign_trace(bundle, label: str, peak: float, steps: int = 24, motion: float = 1.0) -> ClipSteps:
    """A clip's steps by hand: no sign, then `label` at `peak` for a third of them, then no sign; its windows
    move `motion` at most (in the middle third)."""
    probabilities = np.zeros((steps, len(bundle.labels)))
    probabilities[:, bundle.labels.index(bundle.no_sign_label)] = 1.0
    middle = slice(steps // 3, 2 * steps // 3)
    probabilities[middle] = (1 - peak) / (len(bundle.labels) - 1)
    probabilities[middle, bundle.labels.index(label)] = peak
    motions = np.full(steps, motion / 2)
    motions[middle] = motion
    return ClipSteps(label, np.arange(steps) / bundle.sample_fps, probabilities, motions)


def test_a_model_that_ranks_its_signs_first_at_0_7_gets_a_threshold_it_reaches(bundle):
    signs = [label for label in bundle.labels if label != bundle.no_sign_label]
    unsure = [sign_trace(bundle, sign, 0.72) for sign in signs]
    record, rows = calibrate(bundle, unsure, SPOTTING)
    assert record["settings"]["threshold"] == 0.7                        # the highest candidate under 0.72
    assert rows.set_index("threshold").loc[0.9, "sign_clips_spotted_right"] == 0.0
    assert record["calibration"]["validation_sign_clips"] == len(signs)
    sure = [sign_trace(bundle, sign, 0.97) for sign in signs]
    assert calibrate(bundle, sure, SPOTTING)[0]["settings"]["threshold"] == 0.9


def test_the_stage_writes_the_models_settings_beside_it_and_evaluate_and_the_cli_use_them(trained_workspace, bundle):
    from stages.tools.infer import parse_arguments, spotting_settings
    record = json.loads((trained_workspace / "models/model.spotting.json").read_text())
    settings = SpottingSettings.from_params(record["settings"])
    calibration = record["calibration"]
    assert settings.threshold <= calibration["threshold_in_params"]
    assert calibration["validation_sign_clips"] > 0 and calibration["reason"]
    written = pd.read_csv(trained_workspace / "reports/spotting_calibration.csv")
    pd.testing.assert_frame_equal(written, pd.DataFrame(calibration["table"]), check_dtype=False)
    assert settings.threshold in written["threshold"].tolist()

    assert model_spotting(bundle, SpottingSettings(threshold=0.123, min_hold_seconds=0.0, smoothing_steps=1, release_seconds=0.0)) == settings
    metrics = json.loads((trained_workspace / "reports/metrics.json").read_text())
    assert metrics["spotting"]["threshold"] == settings.threshold
    assert spotting_settings(bundle, parse_arguments(["clip.mp4"])) == settings
    overridden = spotting_settings(bundle, parse_arguments(["clip.mp4", "--threshold", "0.3"]))
    assert overridden.threshold == 0.3 and overridden.smoothing_steps == settings.smoothing_steps


def test_the_motion_floor_lets_all_but_the_quantile_of_validation_signs_move_past_it(bundle):
    signs = [label for label in bundle.labels if label != bundle.no_sign_label]
    clips = [sign_trace(bundle, sign, 0.95, motion=float(index + 1)) for index, sign in enumerate(signs)]
    assert motion_floor(bundle, clips, 0.0) == 0.0                                   # off
    floor = motion_floor(bundle, clips, 0.25)
    assert floor == pytest.approx(np.quantile(np.arange(1, len(signs) + 1), 0.25))
    record, _ = calibrate(bundle, clips, {**SPOTTING, "motion_floor_quantile": 0.25})
    assert record["settings"]["motion_floor"] == pytest.approx(floor)
    assert record["calibration"]["motion_floor_quantile"] == 0.25
    # The signs that never move past the floor are not spotted: fewer right than without a floor.
    still = [clip for clip in clips if clip.motions.max() < floor]
    assert still and all(spotted_signs(bundle, clip, SpottingSettings.from_params(record["settings"])) == []
                         for clip in still)
    assert all(spotted_signs(bundle, clip, SpottingSettings.from_params(record["settings"])) == [clip.label]
               for clip in clips if clip.motions.max() >= floor)
