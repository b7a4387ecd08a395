"""The webcam path's state, shared between the WebRTC frame thread and the page's script thread.

Usage:
    from app.live_session import LiveSession, draw_overlay
    session = LiveSession(shared_model, smoothing_steps=3, confidence_threshold=0.5)
    snapshot = session.process_frame(frame_bgr, timestamp)     # frame thread, every camera frame
    annotated = draw_overlay(frame_bgr, snapshot)              # the frame sent back to the browser
    session.snapshot().top                                     # script thread: the page's top-3 text

Frames go through the library's streaming path (`StreamingRecognizer`: it
accepts frames at the training sampling rate, embeds each once and runs the
head on a ring buffer). On top of it this module only keeps what the page
shows: the probabilities averaged over the last few model steps, a
confidence threshold below which the sign shown is "…", the frames processed
per second, and a short history of recognised signs.

Threads: `process_frame` runs in streamlit-webrtc's frame thread; every other
method runs in the Streamlit script thread. Everything they share is behind
`self._lock`; the recognizer itself is used by the frame thread alone (a reset
asked by the script thread is only flagged, and done by the frame thread), and
only under the shared model's lock, because several sessions use one model.
Nothing here touches `st.session_state`.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from stages.lib.overlay import draw_prediction_band
from stages.lib.served import Prediction, prediction_from_probabilities
from stages.lib.streaming import StreamingRecognizer

if TYPE_CHECKING:  # only for annotations: app.state imports streamlit, which this module does not need
    from app.state import SharedModel

UNSURE = "…"                      # shown instead of a sign below the confidence threshold
MAX_SMOOTHING_STEPS = 10          # the slider's upper end: ~1.3 s of model steps at 7.5 steps/s
FPS_WINDOW_SECONDS = 2.0          # frames/s is measured over this much recent time
# A timestamp this far behind the previous one means a new stream (its clock restarted):
# the ring buffer holds frames of the old stream and the sampling clock is in its future.
CLOCK_RESTART_SECONDS = 1.0


@dataclass(frozen=True)
class LiveSnapshot:
    """What the page and the overlay show, consistent at one instant."""
    top: list[tuple[str, float]] = field(default_factory=list)   # smoothed top-k, best first; [] while filling
    shown_sign: str = UNSURE                 # the top sign, or UNSURE below the threshold or while filling
    confidence: float = 0.0                  # the top sign's smoothed probability
    buffer_fill: float = 0.0                 # 0..1 of the ring buffer; predictions start at 1
    frames_per_second: float = 0.0           # camera frames processed per second (skipped ones included)
    model_steps: int = 0                     # head runs since the stream (re)started
    history: list[tuple[str, str, float]] = field(default_factory=list)  # (clock time, sign, confidence), newest first
    confidence_threshold: float = 0.5


class LiveSession:
    def __init__(self, shared_model: SharedModel, top_k: int = 3, smoothing_steps: int = 3,
                 confidence_threshold: float = 0.5, history_length: int = 8):
        self._shared_model = shared_model
        self._labels = shared_model.bundle.labels
        self._top_k = top_k
        # Not thread-safe: used by the frame thread only, under the shared model's lock.
        self._recognizer = StreamingRecognizer(shared_model.bundle, top_k=top_k)
        # Everything below is shared by both threads: read and written under this lock.
        self._lock = threading.Lock()
        self._smoothing_steps = smoothing_steps
        self._confidence_threshold = confidence_threshold
        self._recent_probabilities: deque[np.ndarray] = deque(maxlen=MAX_SMOOTHING_STEPS)  # each (classes,)
        self._frame_times: deque[float] = deque()        # time.monotonic() of recent processed frames
        self._history: deque[tuple[str, str, float]] = deque(maxlen=history_length)
        self._previous_shown = UNSURE
        self._last_added: tuple[str, float] | None = None     # (sign, time.monotonic()) of the newest history entry
        # A sign shown again this soon is the same performance flickering around the
        # threshold, not a new one: a new one needs a buffer of fresh frames.
        self._repeat_after_seconds = shared_model.bundle.seq_len / shared_model.bundle.sample_fps
        self._last_prediction: Prediction | None = None
        self._last_timestamp: float | None = None
        self._model_steps = 0
        self._reset_requested = False
        self._snapshot = LiveSnapshot(confidence_threshold=confidence_threshold)

    @property
    def shared_model(self) -> SharedModel:
        return self._shared_model

    # --- script thread -------------------------------------------------------------------------
    def update_settings(self, smoothing_steps: int, confidence_threshold: float) -> None:
        """The page's sliders; the next frame uses them."""
        with self._lock:
            self._smoothing_steps = max(1, min(int(smoothing_steps), MAX_SMOOTHING_STEPS))
            self._confidence_threshold = float(confidence_threshold)

    def request_reset(self) -> None:
        """Forget the buffer and the history; done by the frame thread at its next frame."""
        with self._lock:
            self._reset_requested = True
            self._history.clear()
            self._last_added = None
            self._snapshot = LiveSnapshot(confidence_threshold=self._confidence_threshold)

    def snapshot(self) -> LiveSnapshot:
        with self._lock:
            return self._snapshot

    # --- frame thread --------------------------------------------------------------------------
    def process_frame(self, frame_bgr: np.ndarray, timestamp: float) -> LiveSnapshot:
        """One camera frame (H, W, 3) BGR uint8 at `timestamp` seconds (stream clock) -> the new snapshot."""
        with self._lock:
            restarted = self._last_timestamp is not None and timestamp < self._last_timestamp - CLOCK_RESTART_SECONDS
            reset = self._reset_requested or restarted
            self._reset_requested = False
            self._last_timestamp = timestamp
            if reset:
                self._forget_stream()
        # One model serves several sessions' frame threads, so model calls hold its lock; the
        # recognizer is used under that lock too, in case a restarted stream's new frame thread
        # overlaps the old one for a moment.
        with self._shared_model.lock:
            if reset:
                self._recognizer.reset()
            prediction = self._recognizer.push_camera_frame(frame_bgr, timestamp)
            buffer_fill = self._recognizer.buffer_fill
        with self._lock:
            if prediction is not None and prediction is not self._last_prediction:
                # A new model step (frames between sampling slots return the same object).
                self._last_prediction = prediction
                self._model_steps += 1
                self._recent_probabilities.append(
                    np.array([prediction.probabilities[label] for label in self._labels], np.float32))
            self._count_frame(time.monotonic())
            self._snapshot = self._make_snapshot(buffer_fill)
            return self._snapshot

    # --- helpers, called with self._lock held -------------------------------------------------
    def _forget_stream(self) -> None:
        self._recent_probabilities.clear()
        self._frame_times.clear()
        self._last_prediction = None
        self._previous_shown = UNSURE
        self._model_steps = 0

    def _count_frame(self, now: float) -> None:
        self._frame_times.append(now)
        while self._frame_times and self._frame_times[0] < now - FPS_WINDOW_SECONDS:
            self._frame_times.popleft()

    def _frames_per_second(self) -> float:
        if len(self._frame_times) < 2:
            return 0.0
        elapsed = self._frame_times[-1] - self._frame_times[0]
        return (len(self._frame_times) - 1) / elapsed if elapsed > 0 else 0.0

    def _add_to_history(self, sign: str, confidence: float, now: float) -> None:
        if self._last_added is not None:
            last_sign, added_at = self._last_added
            if sign == last_sign and now - added_at < self._repeat_after_seconds:
                return
        self._history.appendleft((time.strftime("%H:%M:%S"), sign, confidence))
        self._last_added = (sign, now)

    def _make_snapshot(self, buffer_fill: float) -> LiveSnapshot:
        top: list[tuple[str, float]] = []
        shown, confidence = UNSURE, 0.0
        if self._recent_probabilities:
            recent = list(self._recent_probabilities)[-self._smoothing_steps:]
            smoothed = prediction_from_probabilities(np.mean(recent, axis=0), self._labels, self._top_k)
            top = smoothed.top
            confidence = smoothed.top[0][1]
            if confidence >= self._confidence_threshold:
                shown = smoothed.label
        if shown != self._previous_shown and shown != UNSURE:
            self._add_to_history(shown, confidence, time.monotonic())
        self._previous_shown = shown
        return LiveSnapshot(top=top, shown_sign=shown, confidence=confidence, buffer_fill=buffer_fill,
                            frames_per_second=self._frames_per_second(), model_steps=self._model_steps,
                            history=list(self._history), confidence_threshold=self._confidence_threshold)


def draw_overlay(frame_bgr: np.ndarray, snapshot: LiveSnapshot) -> np.ndarray:
    """The frame with the shown sign and a confidence bar drawn on a dark band at its top (a copy)."""
    if not snapshot.top:
        return draw_prediction_band(frame_bgr, f"warming up {snapshot.buffer_fill:.0%}", snapshot.buffer_fill,
                                    (200, 200, 200))
    if snapshot.shown_sign == UNSURE:
        # OpenCV's fonts are ASCII only: "..." stands for the page's "…".
        text, colour = f"... ({snapshot.top[0][0]}?)", (0, 165, 255)
    else:
        text, colour = snapshot.shown_sign, (80, 200, 80)
    # The threshold as a tick on the bar.
    return draw_prediction_band(frame_bgr, text, snapshot.confidence, colour, tick=snapshot.confidence_threshold)
