"""The inference CLI on a tiny trained pipeline: clip, stream and signs modes, JSON, bad input."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import command_env, run

CLI = [sys.executable, "-m", "stages.tools.infer"]


@pytest.fixture(scope="module")
def test_clip(trained_workspace):
    index = (trained_workspace / "data/synthetic/index.csv").read_text().splitlines()
    path, label = next(line.split(",")[:2] for line in index[1:] if line.endswith(",test"))
    return trained_workspace / "data/synthetic" / path


@pytest.mark.parametrize("mode", ["clip", "stream"])
def test_json_output_ranks_every_class(trained_workspace, test_clip, mode):
    result = run(CLI + [str(test_clip), "--mode", mode, "--json"], trained_workspace)
    output = json.loads(result.stdout.strip().splitlines()[-1])
    labels = json.loads((trained_workspace / "models/model.json").read_text())["labels"]
    assert set(output["probs"]) == set(labels)
    assert abs(sum(output["probs"].values()) - 1.0) < 1e-4
    assert len(output["top"]) == 3 and output["label"] == output["top"][0][0]
    assert output["top"][0][1] == max(output["probs"].values())


def test_signs_mode_prints_the_signs_of_a_stream_in_order_as_json(trained_workspace):
    stream = next((trained_workspace / "data/streams/test").glob("*_stream0.mp4"))
    result = run(CLI + [str(stream), "--mode", "signs", "--json", "--threshold", "0.0", "--min-hold", "0"],
                 trained_workspace)
    output = json.loads(result.stdout.strip().splitlines()[-1])
    labels = json.loads((trained_workspace / "models/model.json").read_text())["labels"]
    assert set(output) == {"signs"} and output["signs"]
    for sign in output["signs"]:
        assert set(sign) == {"sign", "start", "end", "confidence"}
        assert sign["sign"] in labels and sign["sign"] != "_none"           # the no-sign state is never listed
        assert 0 <= sign["start"] <= sign["end"] and 0 <= sign["confidence"] <= 1
    starts = [sign["start"] for sign in output["signs"]]
    assert starts == sorted(starts)
    table = run(CLI + [str(stream), "--mode", "signs", "--threshold", "0.0", "--min-hold", "0"], trained_workspace)
    assert table.stdout.splitlines()[0].startswith(f"1. {output['signs'][0]['sign']}")


def test_the_cli_refuses_what_the_pipeline_refuses(trained_workspace, tmp_path):
    """min_frames comes from the card (sample.min_frames 3 here), as in the sample stage and the app."""
    from tests.conftest import write_video
    short = write_video(tmp_path / "short.avi", np.zeros((2, 24, 32, 3), np.uint8), fps=10)
    result = subprocess.run(CLI + [str(short)], cwd=trained_workspace, env=command_env(trained_workspace),
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "too short: 2 frames at 10 frames/s, need at least 3 (sample.min_frames)" in result.stderr


def test_clip_mode_agrees_with_the_evaluate_stage(trained_workspace, test_clip):
    """The CLI and evaluate both classify the centred window of the same sampled frames."""
    result = run(CLI + [str(test_clip), "--json"], trained_workspace)
    predicted = json.loads(result.stdout.strip().splitlines()[-1])["label"]
    predictions = (trained_workspace / "reports/predictions.csv").read_text().splitlines()
    relative = test_clip.relative_to(trained_workspace).as_posix()
    row = next(line for line in predictions if line.startswith(relative + ","))
    assert row.split(",")[2] == predicted


def test_a_bad_file_gets_a_message_not_a_traceback(trained_workspace, tmp_path):
    bogus = tmp_path / "bogus.mp4"
    bogus.write_bytes(b"\x00not a video" * 100)
    result = subprocess.run(CLI + [str(bogus)], cwd=trained_workspace, env=command_env(trained_workspace),
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "bogus.mp4: cannot open as video" in result.stderr and "Traceback" not in result.stderr


def test_the_benchmark_reports_every_figure(trained_workspace):
    figures = json.loads((trained_workspace / "reports/benchmark.json").read_text())
    for key in ("extract_pipeline_fps_best", "extract_engine_raw_fps_best", "extract_pipeline_vs_raw_engine",
                "live_step_tflite_ms_p50", "live_step_tflite_ms_p95", "live_step_keras_eager_ms_p50",
                "live_step_speedup_vs_eager", "full_clip_keras_ms_p50", "full_clip_tflite_ms_p50",
                "head_epoch_seconds_median", "end_to_end_frozen_epoch_seconds_estimated",
                "head_epoch_speedup_vs_end_to_end", "cpu_model", "cpu_cores", "cpu_vector_extensions"):
        assert key in figures, key
    assert figures["extract_pipeline_fps_best"] > 0 and figures["live_step_tflite_ms_p50"] > 0
    rss = [key for key in figures if key.startswith("extract_peak_rss_mb_")]
    assert len(rss) == 2 and all(figures[key] > 0 for key in rss)


def test_the_webcam_overlay_draws_the_label_band_on_a_copy():
    from stages.lib.served import prediction_from_probabilities
    from stages.tools.infer import draw_overlay
    frame = np.full((120, 160, 3), 200, np.uint8)
    prediction = prediction_from_probabilities(np.array([0.25, 0.75]), ["a", "b"])
    shown = draw_overlay(frame, prediction, fill=1.0)
    assert shown.shape == frame.shape and (frame == 200).all()          # the camera frame is untouched
    assert shown[:10].mean() < 100                                      # darkened band at the top
    assert (shown[60:] == 200).all()                                    # the rest of the picture is kept
    assert not np.array_equal(draw_overlay(frame, None, fill=0.2), shown)


@pytest.mark.parametrize("mode", ["clip", "stream", "signs"])
def test_every_mode_refuses_a_file_longer_than_the_pipeline_takes(trained_workspace, tmp_path, mode):
    """sample.max_seconds (from the card) holds in every mode; signs and stream modes used to play any length."""
    from stages.lib.served import load_bundle
    from tests.conftest import write_video
    limit = load_bundle(trained_workspace / "models/model.keras").sampling.max_seconds
    assert limit > 0
    fps = 10
    long_file = write_video(tmp_path / "long.avi", np.zeros((int((limit + 2) * fps), 24, 32, 3), np.uint8), fps=fps)
    result = subprocess.run(CLI + [str(long_file), "--mode", mode], cwd=trained_workspace,
                            env=command_env(trained_workspace), capture_output=True, text=True)
    assert result.returncode != 0
    assert "too long" in result.stderr and f"at most {limit:g} s (sample.max_seconds)" in result.stderr
