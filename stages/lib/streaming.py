"""The live path, shared by the webcam CLI and the Streamlit app: push a frame, get the current top-k.

Usage:
    from stages.lib.served import load_bundle
    from stages.lib.streaming import StreamingRecognizer
    recognizer = StreamingRecognizer(load_bundle("models/model.keras"))
    for timestamp, frame_bgr in camera:                 # any rate, e.g. 30 fps
        prediction = recognizer.push_camera_frame(frame_bgr, timestamp)
        if prediction: print(prediction.label, prediction.top)

Per accepted frame the backbone runs once (TFLite) and its embedding enters a
ring buffer of the last `seq_len` embeddings; the head runs on the buffer.
Frames are accepted at the rate training sampled clips (`seq_len` frames over
a typical clip's duration, the card's `sample_fps`), not at the camera's rate:
otherwise a sign would fill the buffer several times slower or faster than
the model was trained to see. With the buffer holding a clip's sampled frames,
the probabilities equal the full graph's on that clip.

When the card does not know the training sampling rate (a frames dataset with
`data.frames_fps: 0`), frames enter at `seq_len` over FALLBACK_SIGN_SECONDS.

Not thread-safe: one recognizer per video stream (the app keeps one per session).
"""
from __future__ import annotations

from collections import deque

import numpy as np

from stages.lib.served import Prediction, ServedBundle, prediction_from_probabilities
from stages.lib.video import prepare_frame

FALLBACK_SIGN_SECONDS = 2.0  # a typical isolated sign lasts 1-3 s


class StreamingRecognizer:
    def __init__(self, bundle: ServedBundle, top_k: int = 3):
        self.bundle = bundle
        self.top_k = top_k
        sample_fps = bundle.sample_fps if bundle.sample_fps > 0 else bundle.seq_len / FALLBACK_SIGN_SECONDS
        self.frame_interval = 1.0 / sample_fps             # seconds between accepted frames
        self.embeddings: deque[np.ndarray] = deque(maxlen=bundle.seq_len)   # each (1280,)
        self.next_due: float | None = None
        self.latest: Prediction | None = None

    @property
    def buffer_fill(self) -> float:
        """0..1: how much of the ring buffer holds frames (predictions start at 1)."""
        return len(self.embeddings) / self.bundle.seq_len

    def reset(self) -> None:
        self.embeddings.clear()
        self.next_due = None
        self.latest = None

    def is_due(self, timestamp: float) -> bool:
        """Accept a frame when the sampling clock says so; never fall behind by more than one slot."""
        if self.next_due is None or timestamp >= self.next_due:
            base = timestamp if self.next_due is None else max(self.next_due, timestamp - self.frame_interval)
            self.next_due = base + self.frame_interval
            return True
        return False

    def push_camera_frame(self, frame_bgr: np.ndarray, timestamp: float) -> Prediction | None:
        """A raw camera frame (H, W, 3) BGR at `timestamp` seconds; returns the current prediction.

        Frames between sampling slots are skipped (cheaply: no backbone run) and
        return the latest prediction unchanged.
        """
        if not self.is_due(timestamp):
            return self.latest
        return self.push_prepared_frame(prepare_frame(frame_bgr, self.bundle.image_size))

    def push_prepared_frame(self, frame_rgb: np.ndarray) -> Prediction | None:
        """A frame already through `prepare_frame` (image_size², RGB uint8): embed, buffer, classify."""
        embedding = self.bundle.frame_engine.embed(frame_rgb[None])[0]          # (1280,)
        self.embeddings.append(embedding)
        if len(self.embeddings) < self.bundle.seq_len:
            return None
        probabilities = self.bundle.head_engine.run(np.stack(self.embeddings)[None])[0]   # (classes,)
        self.latest = prediction_from_probabilities(probabilities, self.bundle.labels, self.top_k)
        return self.latest
