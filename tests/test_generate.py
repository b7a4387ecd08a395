"""The generate stage, run for real on tiny params: clips, idle clips, streams, their indexes and JSONs.

The stage runs once per module (about a second); the tests read what it wrote.
"""
from __future__ import annotations

import copy
import csv
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from stages.generate import plan_clips, plan_streams, take_timeline
from stages.lib.datasets import NO_SIGN_LABEL
from stages.lib.params import ParamsError, validate_params
from stages.lib.synthetic import SIGNS, TRANSITION_SECONDS, Timeline, make_signer, render_timeline, rest_pose
from tests.conftest import REPO_ROOT, make_stage_workspace, read_video, run

STAGE = [sys.executable, "-m", "stages.generate"]
# 3 signs x 3 signers (1 val, 1 test) x 1 repetition, 1 idle clip each, 1 short stream per evaluation signer,
# at 10 frames/s so that even the 30 s idle stream is cheap.
GENERATE = {"classes": 3, "signers": 3, "val_signers": 1, "test_signers": 1, "repetitions": 1, "width": 96,
            "height": 72, "fps": 10, "idle_clips": 1, "streams_per_signer": 1, "signs_per_stream_min": 2,
            "signs_per_stream_max": 3, "idle_stream_seconds": 30, "idle_streams_per_signer": 1,
            "fast_streams_per_signer": 1}
# A pixel "changed" when it differs by more than this (max over channels) after a 5x5 blur: far above
# blurred sensor noise and compression, below any hand or arm against shirt or background.
CHANGE_LEVEL = 40


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    root = make_stage_workspace(tmp_path_factory.mktemp("generate") / "repo", {"generate": GENERATE})
    run(STAGE, root)
    return root


def settings_of(root: Path) -> dict:
    return yaml.safe_load((root / "params.yaml").read_text())["generate"]


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def changed_pixels(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(frames,) how many pixels differ between two equally long frame stacks, noise and compression aside."""
    def blur(frames):
        return np.stack([cv2.GaussianBlur(frame, (5, 5), 0) for frame in frames]).astype(np.int16)
    return (np.abs(blur(first) - blur(second)).max(axis=-1) > CHANGE_LEVEL).sum(axis=(1, 2))


def rebuilt(row: dict, settings: dict) -> tuple[Timeline, object]:
    """The take's timeline as the library builds it, and its signer."""
    signer = make_signer(row["signer_index"], row["seed"], settings["width"], settings["height"])
    return take_timeline(row, settings, signer), signer


def read_video_frames(path: Path) -> np.ndarray:
    return read_video(path)[0]                                             # (n, H, W, 3) uint8 BGR


def test_indexes_list_exactly_the_files_written(generated):
    clips_root, streams_root = generated / "data/synthetic", generated / "data/streams"
    clips = read_csv(clips_root / "index.csv")
    assert {row["path"] for row in clips} == {str(p.relative_to(clips_root)) for p in clips_root.rglob("*.mp4")}
    assert {row["label"] for row in clips} == {sign.name for sign in SIGNS[:3]} | {NO_SIGN_LABEL}
    for signer in {row["signer"] for row in clips}:
        idle = [row for row in clips if row["signer"] == signer and row["label"] == NO_SIGN_LABEL]
        splits = {row["split"] for row in clips if row["signer"] == signer}
        assert len(idle) == GENERATE["idle_clips"] and len(splits) == 1   # idle clips in the signer's split
        assert idle[0]["path"] == f"{NO_SIGN_LABEL}/{signer}_r0.mp4"

    streams = read_csv(streams_root / "index.csv")
    assert list(streams[0]) == ["path", "split", "signer", "kind", "duration"]
    assert {row["path"] for row in streams} == {str(p.relative_to(streams_root)) for p in streams_root.rglob("*.mp4")}
    assert {str(p.relative_to(streams_root)) for p in streams_root.rglob("*.json")} == \
        {row["path"].replace(".mp4", ".json") for row in streams}


def test_streams_only_for_evaluation_signers_with_their_ground_truth(generated):
    clips = read_csv(generated / "data/synthetic/index.csv")
    split_of = {row["signer"]: row["split"] for row in clips}
    streams = read_csv(generated / "data/streams/index.csv")
    assert {row["signer"] for row in streams} == {s for s, split in split_of.items() if split != "train"}
    for row in streams:
        assert row["split"] == split_of[row["signer"]] and row["path"].startswith(row["split"] + "/")
        annotation = json.loads((generated / "data/streams" / row["path"]).with_suffix(".json").read_text())
        assert list(annotation) == ["kind", "signer", "split", "duration", "fps", "signs"]
        assert (annotation["kind"], annotation["signer"], annotation["split"]) == \
            (row["kind"], row["signer"], row["split"])
        frames = read_video_frames(generated / "data/streams" / row["path"])
        assert annotation["fps"] == GENERATE["fps"]
        assert annotation["duration"] == float(row["duration"]) == round(len(frames) / GENERATE["fps"], 3)
        if row["kind"] == "idle":
            assert annotation["signs"] == [] and annotation["duration"] >= 30
        else:
            names = [sign["sign"] for sign in annotation["signs"]]
            assert 2 <= len(names) <= 3 and set(names) <= {sign.name for sign in SIGNS[:3]}
            assert all(a != b for a, b in zip(names[:-1], names[1:]))
            assert all(0 < sign["start"] < sign["end"] < annotation["duration"] for sign in annotation["signs"])
    assert sorted(row["kind"] for row in streams) == ["fast", "fast", "idle", "idle", "signs", "signs"]


def test_fast_streams_sign_from_the_first_moments_to_the_last_with_short_gaps(generated):
    """Signing without pauses (issue 34): the first sign starts, and the last ends, within the lead plus the
    move into (out of) the sign; between signs, the move out, the gap and the move in."""
    settings = settings_of(generated)
    fast = [row for row in plan_streams(settings, seed=42) if row["kind"] == "fast"]
    assert len(fast) == 2                                       # one per evaluation signer
    for row in fast:
        annotation = json.loads((generated / "data/streams" / row["path"]).with_suffix(".json").read_text())
        _, signer = rebuilt(row, settings)
        transition = max(int(round(settings["fps"] * TRANSITION_SECONDS / signer.speed)), 2) / settings["fps"]
        signs = annotation["signs"]
        assert signs[0]["start"] <= settings["fast_lead_seconds_max"] + transition + 0.1
        assert annotation["duration"] - signs[-1]["end"] <= settings["fast_lead_seconds_max"] + transition + 0.2
        for before, after in zip(signs[:-1], signs[1:]):
            assert after["start"] - before["end"] <= 2 * transition + settings["fast_gap_seconds_max"] + 0.2
    usual = next(row for row in plan_streams(settings, seed=42) if row["kind"] == "signs")
    first_usual = json.loads((generated / "data/streams" / usual["path"]).with_suffix(".json").read_text())["signs"][0]
    assert first_usual["start"] >= 0.9                          # the usual streams keep a second of rest first


def test_stream_sign_times_are_where_the_hands_move(generated):
    settings = settings_of(generated)
    fps = settings["fps"]
    for row in plan_streams(settings, seed=42):
        if row["kind"] != "signs":
            continue
        frames = read_video_frames(generated / "data/streams" / row["path"])      # (n, 72, 96, 3) uint8 BGR
        motion = np.concatenate([[0], changed_pixels(frames[1:], frames[:-1])])
        annotation = json.loads((generated / "data/streams" / row["path"]).with_suffix(".json").read_text())
        timeline, signer = rebuilt(row, settings)
        # Frames held at rest after a frame at rest (from the library's own timeline of this stream).
        still = [i for i in range(1, len(timeline.poses)) if timeline.poses[i] == timeline.poses[i - 1] == rest_pose()]
        spans = [(round(sign["start"] * fps), round(sign["end"] * fps)) for sign in annotation["signs"]]
        during_signs = [motion[first + 1: last + 1].mean() for first, last in spans]
        assert min(during_signs) > 20 * (motion[still].max() + 1), (during_signs, motion[still].max())
        # The first movement of the stream is the transition into the first sign, the last the way back.
        transition = max(int(round(fps * TRANSITION_SECONDS / signer.speed)), 2)
        moving = np.nonzero(motion > 0.25 * min(during_signs))[0]
        assert spans[0][0] - transition - 1 <= moving[0] <= spans[0][0]
        assert spans[-1][1] <= moving[-1] <= spans[-1][1] + transition + 1


def test_sign_clips_begin_and_end_at_rest(generated):
    settings = settings_of(generated)
    for row in plan_clips(settings, seed=42):
        if row["label"] == NO_SIGN_LABEL:
            continue
        frames = read_video_frames(generated / "data/synthetic" / row["path"])
        timeline, signer = rebuilt(row, settings)
        # The same take with the signer at rest throughout: same sway, breathing and noise.
        at_rest = render_timeline(Timeline(timeline.seed, timeline.key, [rest_pose()] * len(frames)), signer,
                                  settings["fps"])
        away_from_rest = changed_pixels(frames, at_rest)
        assert away_from_rest.max() > 50, row["path"]                      # the sign is in the clip ...
        assert away_from_rest[0] <= 0.02 * away_from_rest.max(), row["path"]   # ... and rest at both ends
        assert away_from_rest[-1] <= 0.02 * away_from_rest.max(), row["path"]


def test_another_source_gets_empty_indexes(tmp_path):
    root = make_stage_workspace(tmp_path / "repo", {"generate": GENERATE, "data": {"source": "folder"}})
    run(STAGE, root)
    assert (root / "data/synthetic/index.csv").read_text().strip() == "path,label,signer,split"
    assert (root / "data/streams/index.csv").read_text().strip() == "path,split,signer,kind,duration"
    assert not list((root / "data").rglob("*.mp4"))


DEFAULTS = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("changes,message", [
    ({"lead_seconds_min": 1.2, "lead_seconds_max": 1.0},
     r"generate.lead_seconds_min \(1.2\) must be at most generate.lead_seconds_max \(1.0\)"),
    ({"lead_seconds_min": -0.1}, r"generate.lead_seconds_min is -0.1; it must be at least 0"),
    ({"idle_clips": 0}, r"generate.idle_clips is 0; it must be at least 1"),
    ({"idle_seconds": 0}, r"generate.idle_seconds is 0; it must be more than 0"),
    ({"streams_per_signer": 0}, r"generate.streams_per_signer is 0; it must be at least 1"),
    ({"signs_per_stream_min": 0}, r"generate.signs_per_stream_min is 0; it must be at least 1"),
    ({"signs_per_stream_min": 7, "signs_per_stream_max": 6},
     r"generate.signs_per_stream_min \(7\) must be at most generate.signs_per_stream_max \(6\)"),
    ({"signs_per_stream_max": 2.5}, r"generate.signs_per_stream_max must be a whole number"),
    ({"gap_seconds_min": 2.5, "gap_seconds_max": 2.0},
     r"generate.gap_seconds_min \(2.5\) must be at most generate.gap_seconds_max \(2.0\)"),
    ({"idle_stream_seconds": 20}, r"generate.idle_stream_seconds is 20; it must be at least 30"),
    ({"idle_streams_per_signer": 0}, r"generate.idle_streams_per_signer is 0; it must be at least 1"),
    ({"fast_streams_per_signer": -1}, r"generate.fast_streams_per_signer is -1; it must be at least 0"),
    ({"fast_gap_seconds_min": 0.5, "fast_gap_seconds_max": 0.4},
     r"generate.fast_gap_seconds_min \(0.5\) must be at most generate.fast_gap_seconds_max \(0.4\)"),
])
def test_bad_generate_params_are_named(changes, message):
    params = copy.deepcopy(DEFAULTS)
    params["generate"].update(changes)
    with pytest.raises(ParamsError, match=message):
        validate_params(params)


def test_a_missing_new_generate_key_is_named():
    params = copy.deepcopy(DEFAULTS)
    del params["generate"]["idle_stream_seconds"]
    with pytest.raises(ParamsError, match="generate.idle_stream_seconds is missing"):
        validate_params(params)
