"""One webcam recording at a time, shared between the WebRTC frame thread and the page's script thread.

Usage:
    from app.recorder import Recorder, RecordingRequest
    recorder = Recorder(recordings_dir)
    recorder.start(RecordingRequest(sign="thanks", signer="ana", seconds=2.5, countdown_seconds=3))  # script thread
    shown = recorder.process_frame(frame_bgr, timestamp)     # frame thread: every camera frame, the frame to show
    recorder.status()                                        # script thread: phase, progress, the clip or why not

After `start`, the first camera frame starts a countdown drawn on the
returned video; when it has run out on the stream's clock, every frame the
camera sends is kept, as it came (no resizing, no colour change: the sample
stage does that), until `seconds` of stream time have passed. The frames are
then written, off the frame thread, by `app.recordings.write_recording`
(atomically, never over another clip) at the rate they came at.

A recording always ends: on the stream's clock when frames flow, and by a
wall-clock watchdog (countdown + seconds + a grace) when they stop: a browser
closed or a camera unplugged mid-recording gives FAILED with a message, and
no file. So does a stream whose clock jumps back (a restarted camera) or
stalls for more than a second.

Threads: `process_frame` runs in streamlit-webrtc's frame thread, the watchdog
in a timer thread, the writing in a thread of its own, every other method in
the Streamlit script thread. Everything they share is behind `self._lock`;
each recording has a number (`generation`), so a late watchdog or writer of an
earlier recording changes nothing. Nothing here touches `st.session_state`.
"""
from __future__ import annotations

import math
import threading
from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np

from app.recordings import RecordingError, write_recording
from app.training import RunGoing, recordings_unchanged_by_runs
from stages.lib.overlay import draw_prediction_band

IDLE, COUNTDOWN, RECORDING, SAVING, SAVED, FAILED = "idle", "countdown", "recording", "saving", "saved", "failed"
BUSY_PHASES = (COUNTDOWN, RECORDING, SAVING)
WATCHDOG_GRACE_SECONDS = 3.0    # beyond countdown + seconds of wall time: frames lag a little, a stopped camera more
MAX_FRAME_GAP_SECONDS = 1.0     # a camera silent this long mid-recording has stalled: the clip would jump
MIN_FRAMES = 2                  # the rate a clip is written at is measured between its first and last frame
COUNTDOWN_COLOUR, RECORDING_COLOUR, DONE_COLOUR = (0, 200, 255), (60, 60, 230), (80, 200, 80)   # BGR


@dataclass(frozen=True)
class RecordingRequest:
    sign: str                   # already checked (app.recordings.check_sign_name)
    signer: str                 # already checked (app.recordings.check_signer_name)
    seconds: float              # record.seconds
    countdown_seconds: float    # record.countdown_seconds


@dataclass(frozen=True)
class RecorderStatus:
    phase: str = IDLE
    generation: int = 0                 # which recording this is about (one per start)
    request: RecordingRequest | None = None
    countdown_left: float = 0.0         # seconds, while counting down
    seconds_recorded: float = 0.0       # of stream time, while recording
    frames: int = 0
    clip_path: Path | None = None       # SAVED: the new clip
    message: str = ""                   # FAILED: why nothing was saved

    @property
    def busy(self) -> bool:
        return self.phase in BUSY_PHASES


class Recorder:
    def __init__(self, recordings_dir: Path, watchdog_grace_seconds: float = WATCHDOG_GRACE_SECONDS,
                 runs_root: Path | None = None):
        self.recordings_dir = Path(recordings_dir)
        self.runs_root = runs_root            # the app's root: saving holds its training-run lock
        self._watchdog_grace = watchdog_grace_seconds
        # Shared by the frame, timer, writer and script threads: read and written under this lock.
        self._lock = threading.Lock()
        self._status = RecorderStatus()
        self._frames: list[np.ndarray] = []           # (H, W, 3) uint8 BGR each, as the camera sent them
        self._timestamps: list[float] = []
        self._first_timestamp: float | None = None    # the first frame after start: the countdown's zero
        self._capture_start: float | None = None
        self._started_at: datetime | None = None      # wall time when capture began: the clip's name

    # --- script thread -------------------------------------------------------------------------
    def start(self, request: RecordingRequest) -> int:
        """Begin a countdown and recording; its generation. RecordingError while one is going."""
        with self._lock:
            if self._status.busy:
                raise RecordingError("A recording is already going: wait for it to finish.")
            generation = self._status.generation + 1
            self._frames, self._timestamps = [], []
            self._first_timestamp = self._capture_start = self._started_at = None
            self._status = RecorderStatus(COUNTDOWN, generation, request, countdown_left=request.countdown_seconds)
        limit = request.countdown_seconds + request.seconds + self._watchdog_grace
        watchdog = threading.Timer(limit, self._watchdog, args=(generation,))
        watchdog.daemon = True
        watchdog.start()
        return generation

    def cancel(self) -> None:
        """Forget a countdown or recording in progress (the stream stopped); a clip being written still is."""
        with self._lock:
            if self._status.phase in (COUNTDOWN, RECORDING):
                self._status = RecorderStatus(FAILED, self._status.generation, self._status.request,
                                              message="Recording stopped with the camera: nothing was saved.")
                self._frames, self._timestamps = [], []

    def clear(self) -> None:
        """Back to idle after the page has shown a result (kept, discarded, or a failure read)."""
        with self._lock:
            if not self._status.busy:
                self._status = RecorderStatus(IDLE, self._status.generation)

    def status(self) -> RecorderStatus:
        with self._lock:
            return self._status

    # --- frame thread --------------------------------------------------------------------------
    def process_frame(self, frame_bgr: np.ndarray, timestamp: float) -> np.ndarray:
        """One camera frame (H, W, 3) uint8 BGR at `timestamp` s of stream time -> the frame to show."""
        to_save = None
        with self._lock:
            status = self._status
            if status.phase == COUNTDOWN:
                status = self._count_down(status, timestamp)
            if status.phase == RECORDING:
                status, to_save = self._capture(status, frame_bgr, timestamp)
            self._status = status
        if to_save is not None:
            # THREAD BOUNDARY: encoding takes a while; the frame thread must go on sending video.
            threading.Thread(target=self._save, args=to_save, daemon=True).start()
        return draw_status(frame_bgr, status)

    # --- helpers, called with self._lock held -------------------------------------------------
    def _count_down(self, status: RecorderStatus, timestamp: float) -> RecorderStatus:
        if self._first_timestamp is None or timestamp < self._first_timestamp:
            self._first_timestamp = timestamp       # the first frame, or a restarted stream: count from here
        left = status.request.countdown_seconds - (timestamp - self._first_timestamp)
        if left > 0:
            return replace(status, countdown_left=left)
        self._capture_start, self._started_at = timestamp, datetime.now()
        return replace(status, phase=RECORDING, countdown_left=0.0)

    def _capture(self, status: RecorderStatus, frame_bgr: np.ndarray, timestamp: float):
        """Keep the frame, or end the recording; (new status, arguments for _save or None)."""
        previous = self._timestamps[-1] if self._timestamps else self._capture_start
        if timestamp < previous or timestamp - previous > MAX_FRAME_GAP_SECONDS:
            self._frames, self._timestamps = [], []
            what = "restarted" if timestamp < previous else f"stalled for {timestamp - previous:.1f} s"
            return replace(status, phase=FAILED, message=f"The camera {what} during the recording: nothing was "
                                                         "saved. Record it again."), None
        elapsed = timestamp - self._capture_start
        if elapsed < status.request.seconds:
            self._frames.append(frame_bgr.copy())
            self._timestamps.append(timestamp)
            return replace(status, seconds_recorded=elapsed, frames=len(self._frames)), None
        frames, timestamps = self._frames, self._timestamps
        self._frames, self._timestamps = [], []
        if len(frames) < MIN_FRAMES:
            return replace(status, phase=FAILED, message=f"Only {len(frames)} camera frame arrived in "
                                                         f"{status.request.seconds:g} s: nothing was saved."), None
        if timestamps[-1] <= timestamps[0]:
            return replace(status, phase=FAILED, message="The camera's frames carried no usable time stamps: "
                                                         "nothing was saved."), None
        fps = (len(frames) - 1) / (timestamps[-1] - timestamps[0])      # the rate the camera sent them at
        saving = replace(status, phase=SAVING, seconds_recorded=status.request.seconds, frames=len(frames))
        return saving, (status.generation, frames, timestamps, fps, status.request, self._started_at)

    # --- timer and writer threads ---------------------------------------------------------------
    def _watchdog(self, generation: int) -> None:
        """THREAD BOUNDARY: a timer thread. Ends a recording whose frames stopped coming."""
        with self._lock:
            status = self._status
            if status.generation != generation or status.phase not in (COUNTDOWN, RECORDING):
                return
            self._frames, self._timestamps = [], []
            if self._first_timestamp is None:
                message = "No camera frame arrived: press START under the video and allow the camera."
            else:
                message = (f"The camera stopped after {status.seconds_recorded:.1f} of {status.request.seconds:g} s "
                           "(the browser closed, or the camera went away): nothing was saved.")
            self._status = replace(status, phase=FAILED, message=message)

    def _save(self, generation: int, frames: list[np.ndarray], timestamps: list[float], fps: float,
              request: RecordingRequest, started_at: datetime) -> None:
        """THREAD BOUNDARY: a writer thread of its own. Writes the clip, then says how it went."""
        try:
            with recordings_unchanged_by_runs(self.runs_root) if self.runs_root else nullcontext():
                path = write_recording(frames, fps, self.recordings_dir, request.sign, request.signer, started_at,
                                       timestamps=timestamps)
            outcome = {"phase": SAVED, "clip_path": path}
        except RunGoing:
            outcome = {"phase": FAILED, "message": "A training run started while this clip was recorded: it was not "
                                                   "saved, so the run trains on exactly the clips it found. Record "
                                                   "it again when the run has finished."}
        except RecordingError as error:
            outcome = {"phase": FAILED, "message": str(error)}
        except Exception as error:  # an encoder failure nobody foresaw: still a message, never a dead thread
            outcome = {"phase": FAILED, "message": f"The clip could not be written ({type(error).__name__}: "
                                                   f"{error}): nothing was saved."}
        with self._lock:
            if self._status.generation == generation:
                self._status = replace(self._status, **outcome)


def draw_status(frame_bgr: np.ndarray, status: RecorderStatus) -> np.ndarray:
    """The frame with the countdown, or the recording's progress, on a band at its top (a copy)."""
    if status.phase == COUNTDOWN:
        left = status.countdown_left
        return draw_prediction_band(frame_bgr, f"recording in {math.ceil(left)}", 1 - left /
                                    max(status.request.countdown_seconds, 1e-6), COUNTDOWN_COLOUR)
    if status.phase == RECORDING:
        return draw_prediction_band(frame_bgr, f"REC {status.seconds_recorded:.1f} / {status.request.seconds:g} s",
                                    status.seconds_recorded / status.request.seconds, RECORDING_COLOUR)
    if status.phase in (SAVING, SAVED):
        return draw_prediction_band(frame_bgr, "saved" if status.phase == SAVED else "saving", 1.0, DONE_COLOUR)
    return frame_bgr
