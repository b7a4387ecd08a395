"""The webcam path's state, shared between the WebRTC frame thread and the page's script thread.

Usage:
    from app.live_session import LiveSession, draw_overlay
    session = LiveSession(shared_model, spotting=SpottingSettings(...))
    snapshot = session.process_frame(frame_bgr, timestamp)     # frame thread, every camera frame
    annotated = draw_overlay(frame_bgr, snapshot)              # the frame sent back to the browser
    session.snapshot().sentence                                # script thread: the signs made so far

Frames go through the library's live path (`StreamingRecognizer`: frames at
the training rate, embedded once, head on a ring buffer) and its sign spotter
(`SignSpotter`: smoothing, threshold, minimum hold, each sign emitted once).
On top of them this module only keeps what the page shows: the sentence of
emitted signs (newest last), the current state (no sign, or the sign being
recognised and its confidence), the smoothed top-k, and frames per second.

Threads: `process_frame` runs in streamlit-webrtc's frame thread; every other
method runs in the Streamlit script thread. Everything they share is behind
`self._lock`; the recognizer and the spotter are used by the frame thread
alone (a reset or a clear asked by the script thread is only flagged, and done
by the frame thread), and the recognizer only under the shared model's lock,
because several sessions use one model. Nothing here touches `st.session_state`.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from stages.lib.overlay import draw_prediction_band
from stages.lib.served import prediction_from_probabilities
from stages.lib.streaming import EPSILON_SECONDS, SignSpotter, SpottedSign, SpottingSettings, StreamingRecognizer

if TYPE_CHECKING:  # only for annotations: app.state imports streamlit, which this module does not need
    from app.state import SharedModel

NO_SIGN = "no sign"               # the current state when nothing is being recognised
FPS_WINDOW_SECONDS = 2.0          # frames/s is measured over this much recent time
# A timestamp this far behind the previous one means a new stream (its clock restarted):
# the ring buffer holds frames of the old stream and the sampling clock is in its future.
CLOCK_RESTART_SECONDS = 1.0
# A sign ranked first this long, under the threshold but at least at the floor, is "held back": the page
# says so, for a model (say one of a few dozen of your own clips) less sure than the threshold asks.
HELD_BACK_SECONDS = 1.5
HELD_BACK_FLOOR = 0.3


@dataclass(frozen=True)
class LiveSnapshot:
    """What the page and the overlay show, consistent at one instant."""
    threshold: float                         # the spotting threshold in force (the model's, or the slider's)
    top: list[tuple[str, float]] = field(default_factory=list)   # smoothed top-k, best first; [] while filling
    current_sign: str | None = None          # the sign being recognised now; None = no sign
    confidence: float = 0.0                  # its smoothed probability
    buffer_fill: float = 0.0                 # 0..1 of the ring buffer; predictions start at PREDICT_FROM_FILL
    frames_per_second: float = 0.0           # camera frames processed per second (skipped ones included)
    model_steps: int = 0                     # head runs since the stream (re)started
    sentence: list[SpottedSign] = field(default_factory=list)   # emitted signs, oldest first
    held_back: tuple[str, float] | None = None   # (sign, smoothed probability): first for a while, under threshold

    @property
    def state(self) -> str:
        return self.current_sign or NO_SIGN


class HeldBackTracker:
    """Notices a sign the model keeps ranking first under the threshold (the page then suggests lowering it)."""

    def __init__(self, no_sign_label: str | None):
        self.no_sign_label = no_sign_label
        self.run: tuple[str, float] | None = None     # (sign, stream time it became first under the threshold)

    def clear(self) -> None:
        self.run = None

    def update(self, label: str, probability: float, threshold: float, timestamp: float) -> tuple[str, float] | None:
        """One model step's smoothed top class; (sign, probability) once it has been the same sign, at or
        above HELD_BACK_FLOOR and under `threshold`, for HELD_BACK_SECONDS of stream time; else None."""
        if label == self.no_sign_label or not HELD_BACK_FLOOR <= probability < threshold:
            self.run = None
            return None
        if self.run is None or self.run[0] != label:
            self.run = (label, timestamp)
        return (label, probability) if timestamp - self.run[1] >= HELD_BACK_SECONDS - EPSILON_SECONDS else None


class LiveSession:
    def __init__(self, shared_model: SharedModel, spotting: SpottingSettings, top_k: int = 3,
                 sentence_length: int = 12):
        self._shared_model = shared_model
        bundle = shared_model.bundle
        self._labels = bundle.labels
        self._top_k = top_k
        # Used by the frame thread only (the recognizer under the shared model's lock).
        self._recognizer = StreamingRecognizer(bundle, top_k=top_k)
        self._spotter = SignSpotter(bundle.labels, bundle.no_sign_label, spotting, bundle.window_seconds)
        # Everything below is shared by both threads: read and written under this lock.
        self._lock = threading.Lock()
        self._spotting = spotting
        self._sentence: deque[SpottedSign] = deque(maxlen=sentence_length)
        self._frame_times: deque[float] = deque()        # time.monotonic() of recent processed frames
        self._last_timestamp: float | None = None
        self._reset_requested = False
        self._held_back_tracker = HeldBackTracker(bundle.no_sign_label)
        self._held_back: tuple[str, float] | None = None
        self._snapshot = LiveSnapshot(threshold=spotting.threshold)

    @property
    def shared_model(self) -> SharedModel:
        return self._shared_model

    # --- script thread -------------------------------------------------------------------------
    def update_settings(self, smoothing_steps: int, threshold: float) -> None:
        """The page's sliders; the frame thread applies them at its next frame."""
        with self._lock:
            self._spotting = replace(self._spotting, smoothing_steps=max(1, int(smoothing_steps)),
                                     threshold=float(threshold))

    def clear_sentence(self) -> None:
        """Forget the signs made so far; recognition goes on."""
        with self._lock:
            self._sentence.clear()
            self._snapshot = replace(self._snapshot, sentence=[])

    def request_reset(self) -> None:
        """Forget the buffer and the sentence; done by the frame thread at its next frame."""
        with self._lock:
            self._reset_requested = True
            self._sentence.clear()
            self._snapshot = LiveSnapshot(threshold=self._spotting.threshold)

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
                self._frame_times.clear()
            if self._spotter.settings != self._spotting or reset:
                self._spotter = SignSpotter(self._labels, self._recognizer.bundle.no_sign_label, self._spotting,
                                            self._recognizer.bundle.window_seconds)
        # One model serves several sessions' frame threads, so model calls hold its lock; the
        # recognizer is used under that lock too, in case a restarted stream's new frame thread
        # overlaps the old one for a moment.
        with self._shared_model.lock:
            if reset:
                self._recognizer.reset()
            self._recognizer.push_camera_frame(frame_bgr, timestamp)
            stepped, probabilities = self._recognizer.stepped, self._recognizer.latest_probabilities
            motion = self._recognizer.latest_motion
            buffer_fill, steps = self._recognizer.buffer_fill, self._recognizer.steps
        emitted = self._spotter.update(probabilities, timestamp, motion) if stepped else []
        with self._lock:
            if reset:
                self._held_back_tracker.clear()
            if stepped:
                best = int(np.argmax(self._spotter.smoothed))                 # the smoothed top class
                label, probability = self._labels[best], float(self._spotter.smoothed[best])
                self._held_back = self._held_back_tracker.update(label, probability, self._spotting.threshold,
                                                                 timestamp)
            self._sentence.extend(emitted)
            self._count_frame(time.monotonic())
            self._snapshot = self._make_snapshot(buffer_fill, steps)
            return self._snapshot

    # --- helpers, called with self._lock held -------------------------------------------------
    def _count_frame(self, now: float) -> None:
        self._frame_times.append(now)
        while self._frame_times and self._frame_times[0] < now - FPS_WINDOW_SECONDS:
            self._frame_times.popleft()

    def _frames_per_second(self) -> float:
        if len(self._frame_times) < 2:
            return 0.0
        elapsed = self._frame_times[-1] - self._frame_times[0]
        return (len(self._frame_times) - 1) / elapsed if elapsed > 0 else 0.0

    def _make_snapshot(self, buffer_fill: float, steps: int) -> LiveSnapshot:
        top: list[tuple[str, float]] = []
        if self._spotter.smoothed is not None:
            top = prediction_from_probabilities(self._spotter.smoothed, self._labels, self._top_k).top
        current, confidence = self._spotter.current
        return LiveSnapshot(top=top, current_sign=current, confidence=confidence, buffer_fill=buffer_fill,
                            frames_per_second=self._frames_per_second(), model_steps=steps,
                            sentence=list(self._sentence), threshold=self._spotting.threshold,
                            held_back=self._held_back)


def draw_overlay(frame_bgr: np.ndarray, snapshot: LiveSnapshot) -> np.ndarray:
    """The frame with the current state and a confidence bar drawn on a dark band at its top (a copy)."""
    if not snapshot.top:
        return draw_prediction_band(frame_bgr, f"warming up {snapshot.buffer_fill:.0%}", snapshot.buffer_fill,
                                    (200, 200, 200))
    if snapshot.current_sign is None:
        return draw_prediction_band(frame_bgr, NO_SIGN, snapshot.top[0][1], (160, 160, 160), tick=snapshot.threshold)
    # OpenCV's fonts are ASCII only: sign names are ASCII in the built-in vocabulary; others show as "?".
    text = snapshot.current_sign.encode("ascii", "replace").decode()
    return draw_prediction_band(frame_bgr, text, snapshot.confidence, (80, 200, 80), tick=snapshot.threshold)
