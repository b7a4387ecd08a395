"""The recording state shared by the frame thread and the page, fed camera frames by hand (no browser, no camera).

Usage:
    python -m pytest -q tests/test_recorder.py
"""
from __future__ import annotations

import os
import time

import cv2
import numpy as np
import pytest

from app.recorder import COUNTDOWN, FAILED, IDLE, RECORDING, SAVED, SAVING, Recorder, RecordingRequest
from app.recordings import RecordingError
from stages.lib.datasets import discover
from stages.lib.video import iterate_video_frames

CAMERA_FPS = 20.0


def frame(index: int) -> np.ndarray:
    """(60, 80, 3) uint8 BGR, a flat gray that says its index (after lossy encoding too)."""
    return np.full((60, 80, 3), 10 + (index * 7) % 230, np.uint8)


def wait_for(recorder: Recorder, phases: tuple[str, ...], seconds: float = 30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = recorder.status()
        if status.phase in phases:
            return status
        time.sleep(0.02)
    raise AssertionError(f"recorder still {recorder.status().phase}, not {phases}")


def play(recorder: Recorder, seconds: float, start: float = 100.0, fps: float = CAMERA_FPS):
    """Camera frames at `fps` for `seconds` of stream time; the frames shown back."""
    return [recorder.process_frame(frame(index), start + index / fps) for index in range(int(seconds * fps))]


def test_a_countdown_then_the_seconds_asked_are_kept_as_the_camera_sent_them(tmp_path):
    recorder = Recorder(tmp_path)
    recorder.start(RecordingRequest("thanks", "ana", seconds=1.0, countdown_seconds=0.5))
    assert recorder.status().phase == COUNTDOWN
    shown = play(recorder, 2.0)                           # 0.5 s countdown, 1 s kept, 0.5 s after
    status = wait_for(recorder, (SAVED, FAILED))
    assert status.phase == SAVED, status.message
    assert status.clip_path.parent == tmp_path / "thanks" and status.clip_path.name.startswith("ana_")
    assert [(clip.label, clip.signer) for clip in discover("folder", tmp_path)] == [("thanks", "ana")]

    times = [seconds for seconds, _ in iterate_video_frames(status.clip_path)]
    assert times == pytest.approx([index / CAMERA_FPS for index in range(20)], abs=2e-3)   # the camera's times
    capture = cv2.VideoCapture(str(status.clip_path))
    kept = []
    while (read := capture.read())[0]:
        kept.append(read[1])
    capture.release()
    assert len(kept) == int(1.0 * CAMERA_FPS)                 # frames 10..29: after the countdown, for 1 s
    assert [int(round(image.mean())) for image in kept] == pytest.approx([frame(i).mean() for i in range(10, 30)],
                                                                            abs=5)
    assert not np.array_equal(shown[0], frame(0))            # the countdown is drawn on the video shown...
    assert kept[0].shape == (60, 80, 3)                       # ...never on the clip, kept at the camera's size

    recorder.clear()
    assert recorder.status().phase == IDLE


def test_the_video_shows_the_countdown_then_the_recording(tmp_path):
    recorder = Recorder(tmp_path)
    recorder.start(RecordingRequest("thanks", "ana", seconds=1.0, countdown_seconds=1.0))
    phases = []
    for index in range(int(1.5 * CAMERA_FPS)):
        recorder.process_frame(frame(index), index / CAMERA_FPS)
        phases.append(recorder.status().phase)
    assert phases[0] == COUNTDOWN and phases[int(CAMERA_FPS) - 1] == COUNTDOWN and phases[-1] == RECORDING
    assert recorder.status().countdown_left == 0 and recorder.status().seconds_recorded == pytest.approx(0.45)
    with pytest.raises(RecordingError, match="already going"):             # one recording at a time
        recorder.start(RecordingRequest("thanks", "ana", seconds=1.0, countdown_seconds=0))


def test_a_camera_that_stops_mid_recording_leaves_no_file_and_says_so(tmp_path):
    recorder = Recorder(tmp_path, watchdog_grace_seconds=0.3)
    recorder.start(RecordingRequest("thanks", "ana", seconds=1.0, countdown_seconds=0.2))
    play(recorder, 0.6)                                   # the browser goes away 0.4 s into the recording
    assert recorder.status().phase == RECORDING
    status = wait_for(recorder, (FAILED, SAVED), seconds=5)   # the watchdog, on the wall clock
    assert status.phase == FAILED
    assert "The camera stopped after 0.3 of 1 s" in status.message and "nothing was saved" in status.message
    assert list(tmp_path.rglob("*")) == []
    play(recorder, 2.0, start=200.0)                      # frames coming back later change nothing
    assert recorder.status().phase == FAILED and list(tmp_path.rglob("*")) == []


def test_no_camera_frame_at_all_ends_the_recording_at_its_time_limit(tmp_path):
    recorder = Recorder(tmp_path, watchdog_grace_seconds=0.1)
    started = time.monotonic()
    recorder.start(RecordingRequest("thanks", "ana", seconds=0.5, countdown_seconds=0.2))
    status = wait_for(recorder, (FAILED,), seconds=5)
    assert "No camera frame arrived" in status.message
    assert 0.7 <= time.monotonic() - started < 3


@pytest.mark.parametrize("jump, message", [(-5.0, "The camera restarted during the recording"),
                                           (1.6, "The camera stalled for 1.6 s during the recording")])
def test_a_stream_clock_that_jumps_mid_recording_leaves_no_file(tmp_path, jump, message):
    recorder = Recorder(tmp_path)
    recorder.start(RecordingRequest("thanks", "ana", seconds=1.0, countdown_seconds=0))
    recorder.process_frame(frame(0), 10.0)
    recorder.process_frame(frame(1), 10.05)
    recorder.process_frame(frame(2), 10.05 + jump)
    status = recorder.status()
    assert status.phase == FAILED and message in status.message
    assert list(tmp_path.rglob("*")) == []


def test_a_recording_stopped_with_the_camera_is_forgotten(tmp_path):
    recorder = Recorder(tmp_path)
    recorder.start(RecordingRequest("thanks", "ana", seconds=1.0, countdown_seconds=0))
    play(recorder, 0.5)
    recorder.cancel()
    assert recorder.status().phase == FAILED and "stopped with the camera" in recorder.status().message
    play(recorder, 2.0, start=300.0)
    assert recorder.status().phase == FAILED and list(tmp_path.rglob("*")) == []


def test_writing_happens_off_the_frame_thread(tmp_path):
    recorder = Recorder(tmp_path)
    recorder.start(RecordingRequest("thanks", "ana", seconds=3.0, countdown_seconds=0))
    frames = [np.random.default_rng(index).integers(0, 255, (480, 640, 3), np.uint8) for index in range(3)]
    for index in range(int(3.0 * 30)):
        recorder.process_frame(frames[index % 3], index / 30)
    started = time.perf_counter()
    recorder.process_frame(frames[0], 3.0)                # the frame that ends it: hands the clip to the writer
    assert time.perf_counter() - started < 0.2            # the camera thread does not wait for the encoder
    assert recorder.status().phase in (SAVING, SAVED)
    assert wait_for(recorder, (SAVED, FAILED)).phase == SAVED


def test_a_camera_that_drops_frames_is_recorded_at_the_moments_it_sent_them(tmp_path):
    """The clip keeps each frame's camera time: a stall of 0.4 s stays a stall, not an average rate."""
    recorder = Recorder(tmp_path)
    recorder.start(RecordingRequest("thanks", "ana", seconds=1.0, countdown_seconds=0.0))
    sent = [100.0 + index * 0.05 for index in range(8)] + [100.75 + index * 0.05 for index in range(8)]
    for index, timestamp in enumerate(sent + [101.5]):
        recorder.process_frame(frame(index), timestamp)
    status = wait_for(recorder, (SAVED, FAILED))
    assert status.phase == SAVED, status.message
    kept = [seconds for seconds, _ in iterate_video_frames(status.clip_path)]
    start = sent[0]
    assert kept == pytest.approx([timestamp - start for timestamp in sent if timestamp - start < 1.0], abs=2e-3)


def test_a_clip_is_not_saved_into_the_folder_while_a_training_run_holds_it(tmp_path):
    """A run's dvc.lock hashes the recordings sample read: a clip written mid-run would not be among them."""
    import fcntl

    from app.training import open_lock
    root = tmp_path / "root"
    recorder = Recorder(tmp_path / "recordings", runs_root=root)
    descriptor = open_lock(root)
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)          # as a going run holds it
    try:
        recorder.start(RecordingRequest("thanks", "ana", seconds=0.5, countdown_seconds=0.0))
        play(recorder, 1.0)
        status = wait_for(recorder, (SAVED, FAILED))
        assert status.phase == FAILED and "training run" in status.message
        assert not list((tmp_path / "recordings").rglob("*.mp4"))
    finally:
        os.close(descriptor)                                        # the run ends: its lock goes with it
    recorder.clear()
    recorder.start(RecordingRequest("thanks", "ana", seconds=0.5, countdown_seconds=0.0))
    play(recorder, 1.0)
    assert wait_for(recorder, (SAVED, FAILED)).phase == SAVED
