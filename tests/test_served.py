"""One model, three ways to run it: head on cached embeddings, full graph on frames, live ring buffer.

All on a tiny pipeline trained once by `dvc repro` (see the trained_workspace fixture).
"""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import tensorflow as tf

from stages.lib.engines import TFLiteModel
from stages.lib.models import load_model
from stages.lib.served import ServedBundle, find_bundles, load_bundle, predict_video
from stages.lib.streaming import FALLBACK_SIGN_SECONDS, StreamingRecognizer

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def bundle(trained_workspace):
    return load_bundle(trained_workspace / "models/model.keras")


@pytest.fixture(scope="module")
def clips(trained_workspace):
    """(frames (n, T, H, W, 3) uint8, embeddings (n, T, 1280)) of the first test clips, same order."""
    with h5py.File(trained_workspace / "data/frames.h5", "r") as handle:
        frames = handle["frames"][:3]
    with h5py.File(trained_workspace / "features/embeddings.h5", "r") as handle:
        embeddings = handle["embeddings"][:3]
    return frames, embeddings


def test_full_graph_on_frames_equals_head_on_cached_embeddings(trained_workspace, bundle, clips):
    frames, embeddings = clips
    head = load_model(trained_workspace / "models/head.keras")
    from_embeddings = head.predict(embeddings, verbose=0)
    from_frames = bundle.keras_model.predict(frames, verbose=0)
    assert from_frames.shape == (3, len(bundle.labels))
    np.testing.assert_allclose(from_frames, from_embeddings, atol=TOLERANCE)
    metrics = json.loads((trained_workspace / "reports/metrics.json").read_text())
    assert metrics["served_vs_head_max_abs_diff"] <= TOLERANCE


def test_streaming_ring_buffer_equals_full_graph_on_the_same_frames(bundle, clips):
    frames, _ = clips
    recognizer = StreamingRecognizer(bundle)
    outputs = [recognizer.push_prepared_frame(frame) for frame in frames[0]]
    assert all(output is None for output in outputs[:-1])            # buffer filling
    streamed = np.array([outputs[-1].probabilities[label] for label in bundle.labels])
    expected = bundle.keras_model.predict(frames[:1], verbose=0)[0]
    np.testing.assert_allclose(streamed, expected, atol=TOLERANCE)
    # The next clip's frames push the first one out of the ring buffer entirely.
    for frame in frames[1]:
        last = recognizer.push_prepared_frame(frame)
    expected_next = bundle.keras_model.predict(frames[1:2], verbose=0)[0]
    np.testing.assert_allclose([last.probabilities[label] for label in bundle.labels], expected_next, atol=TOLERANCE)


def test_camera_frames_enter_at_the_training_sampling_rate(bundle):
    recognizer = StreamingRecognizer(bundle)
    camera_fps, seconds = 60.0, 4.0
    accepted = sum(recognizer.is_due(index / camera_fps) for index in range(int(camera_fps * seconds)))
    expected = seconds * bundle.sample_fps
    assert abs(accepted - expected) <= 2, (accepted, expected)


def test_frames_between_sampling_slots_skip_the_backbone(bundle):
    recognizer = StreamingRecognizer(bundle)
    camera_frame = np.full((48, 64, 3), 90, np.uint8)
    recognizer.push_camera_frame(camera_frame, timestamp=0.0)
    recognizer.push_camera_frame(camera_frame, timestamp=0.1 / bundle.sample_fps)   # too soon
    assert len(recognizer.embeddings) == 1
    recognizer.push_camera_frame(camera_frame, timestamp=1.0 / bundle.sample_fps)
    assert len(recognizer.embeddings) == 2


def test_an_unknown_sampling_rate_falls_back_to_a_typical_sign_duration(tmp_path):
    """A frames dataset without data.frames_fps has sample_fps 0: no division by zero."""
    card = {"labels": ["a", "b"], "seq_len": 10, "image_size": 32, "sample_fps": 0.0}
    recognizer = StreamingRecognizer(ServedBundle(tmp_path / "unused.keras", card))
    assert recognizer.frame_interval == pytest.approx(FALLBACK_SIGN_SECONDS / 10)


def test_tflite_full_graph_matches_keras(trained_workspace, bundle, clips):
    frames, _ = clips
    tflite = TFLiteModel((trained_workspace / "models/model.tflite").read_bytes())
    for clip in frames:
        np.testing.assert_allclose(tflite.run(clip[None])[0], bundle.keras_model.predict(clip[None], verbose=0)[0],
                                   atol=TOLERANCE)


def test_saved_model_export_serves_the_same_probabilities(trained_workspace, bundle, clips):
    frames, _ = clips
    exported = tf.saved_model.load(str(trained_workspace / "models/model.saved_model"))
    served = exported.serve(tf.constant(frames)).numpy()
    np.testing.assert_allclose(served, bundle.keras_model.predict(frames, verbose=0), atol=TOLERANCE)


def test_a_video_file_is_sampled_like_training_and_ranked(trained_workspace, bundle):
    clip = next((trained_workspace / "data/synthetic").rglob("*.mp4"))
    prediction, frames = predict_video(bundle, clip, top_k=3)
    assert frames.shape == (bundle.seq_len, bundle.image_size, bundle.image_size, 3)
    probabilities = [probability for _, probability in prediction.top]
    assert probabilities == sorted(probabilities, reverse=True) and len(prediction.top) == 3
    assert prediction.label == prediction.top[0][0]
    assert abs(sum(prediction.probabilities.values()) - 1.0) < 1e-4
    fast, _ = predict_video(bundle, clip, top_k=3, fast=True)
    assert fast.label == prediction.label


def test_the_card_describes_the_model(trained_workspace, bundle):
    assert find_bundles(trained_workspace / "models") == [trained_workspace / "models/model.keras"]
    assert bundle.seq_len == 6 and bundle.image_size == 64 and bundle.sample_fps > 0
    assert "imagenet" in bundle.card["weights_source"]
    assert bundle.keras_model.input.dtype == "uint8"


def test_a_missing_model_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `dvc repro` first"):
        load_bundle(tmp_path / "model.keras")
