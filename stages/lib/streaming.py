"""The live path, shared by the webcam CLI, the app and the evaluate stage: frames in, signs out.

Usage:
    from stages.lib.served import load_bundle
    from stages.lib.streaming import SignSpotter, StreamingRecognizer, default_spotting, model_spotting
    bundle = load_bundle("models/model.keras")
    recognizer = StreamingRecognizer(bundle)
    spotter = SignSpotter(bundle.labels, bundle.no_sign_label, model_spotting(bundle, default_spotting()),
                          bundle.window_seconds)
    for timestamp, frame_bgr in camera:                 # any rate, e.g. 30 fps
        if recognizer.push_camera_frame(frame_bgr, timestamp) is not None and recognizer.stepped:
            for sign in spotter.update_from(recognizer, timestamp):
                print(sign.sign, sign.start, sign.confidence)          # emitted once, when it has held
    spotter.finish(); spotter.signs                      # every sign made, with start, end, confidence
    taken = take_stream_frames(bundle, iterate_video_frames("stream.mp4"))   # a file: the frames taken, embedded
    times, probabilities, motions = replay_stream_steps(bundle, taken)       # its steps; again for another head

StreamingRecognizer: frames are taken at the rate training sampled clips
(the card's `sample_fps`, by the same `SamplingClock` the sample stage ran on
clip timestamps), not at the camera's rate, so a sign fills the buffer as it
did in training. With the card's crop "signing_space", frames are cut to the
signer's upper body by the same rule (stages/lib/faces.py), from recent
faces. Each taken frame runs the backbone once (TFLite), its embedding enters
a ring buffer of the last `seq_len`, and the head runs on the buffer. With
the buffer holding a window's frames, the probabilities equal the full
graph's on that window (test, <= 1e-4).

SignSpotter turns the per-step probabilities into discrete signs (with the settings
`model_spotting` finds beside the model: params.yaml's, with the threshold calibrated
on the model's own validation clips by the calibrate stage):
- probabilities are averaged over the last `smoothing_steps` steps;
- the candidate at a step is the most probable class when it is a sign (not
  the no-sign class) at or above `threshold`, and the step's window moved at
  least `motion_floor` (its mean step-to-step feature change, `window_motion`;
  0, the default, lets every window through); otherwise there is none;
- a candidate is emitted once, when it has been the candidate for
  `min_hold_seconds`; it is not emitted again until the stream has shown no
  candidate for `release_seconds` or another sign has been emitted;
- each sign carries a start and an end in stream seconds and a confidence
  (its mean smoothed probability while it was the candidate). The candidate's
  run of steps [first, last] saw windows ending at those times; the sign is
  placed where those windows overlap: from `last - window` to `first` (or the
  other way round when the run is longer than a window).

Not thread-safe: one recognizer and one spotter per video stream.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stages.lib.params import load_params
from stages.lib.served import Prediction, ServedBundle, prediction_from_probabilities
from stages.lib.video import SamplingClock, prepare_reduced_frame, reduce_frame

EPSILON_SECONDS = 1e-6
LIB_DIR = Path(__file__).resolve().parent
# Predictions begin when this share of a window holds frames of the stream (the rest: its first frame,
# held). On the built-in validation streams and clips, half a window kept the figures of a full one
# (docs/recognition.md, "The edges of a stream"); earlier, a buffer of mostly one frame is a guess.
PREDICT_FROM_FILL = 0.5
# The code a camera frame goes through before the ring buffer: the clock, frame reduction and crop,
# the bundle's engines. Frames kept from a stream are valid only for the code that took them.
TAKE_PATH_SOURCES = ("streaming.py", "video.py", "faces.py", "sampling.py", "served.py", "engines.py", "keypoints.py")


def window_motion(window: np.ndarray) -> float:
    """(seq_len, features) -> the mean size of its step-to-step change: how much the window moved, in the
    features' own units (a spotter's `motion_floor` is calibrated per model, so the units need not match
    between models)."""
    return float(np.linalg.norm(np.diff(window, axis=0), axis=1).mean()) if len(window) > 1 else 0.0


class StreamingRecognizer:
    def __init__(self, bundle: ServedBundle, top_k: int = 3):
        self.bundle = bundle
        self.top_k = top_k
        # A gap longer than a window (a paused stream) refills the buffer with one frame, no more.
        self.clock = SamplingClock(bundle.sample_fps, max_ticks=bundle.seq_len)
        self.embeddings: deque[np.ndarray] = deque(maxlen=bundle.seq_len)   # each (features,)
        # The card's crop rule, applied to camera frames as sampling applied it to clips.
        self.crop_tracker = None
        if bundle.sampling.crop == "signing_space":
            from stages.lib.faces import SigningSpaceTracker
            self.crop_tracker = SigningSpaceTracker()
        self.latest: Prediction | None = None
        self.latest_probabilities: np.ndarray | None = None                # (classes,)
        self.latest_motion: float | None = None        # the last step's window_motion
        self.stepped = False          # did the last push run the head (a new model step)?
        self.steps = 0
        self.frames_seen = 0

    @property
    def frame_interval(self) -> float:
        """Seconds of stream time between frames taken into the buffer."""
        return 1.0 / self.bundle.sample_fps

    @property
    def buffer_fill(self) -> float:
        """0..1: how much of the ring buffer holds frames of this stream (predictions start at
        PREDICT_FROM_FILL; the rest is the first frame, held)."""
        return min(self.frames_seen / self.bundle.seq_len, 1.0)

    @property
    def predict_from_frames(self) -> int:
        """Frames of the stream the buffer must hold before the head runs (PREDICT_FROM_FILL of a window)."""
        return max(int(math.ceil(PREDICT_FROM_FILL * self.bundle.seq_len)), 1)

    def reset(self) -> None:
        """A new stream: an empty buffer, a new clock, and no crop box kept from the last person."""
        self.clock.reset()
        if self.crop_tracker is not None:
            self.crop_tracker.reset()
        self.embeddings.clear()
        self.latest = self.latest_probabilities = self.latest_motion = None
        self.stepped = False
        self.steps = 0
        self.frames_seen = 0          # clock ticks taken since the stream (re)started: real frames, not padding

    def take_camera_frame(self, frame_bgr: np.ndarray, timestamp: float) -> tuple[int, np.ndarray] | None:
        """A raw camera frame (H, W, 3) BGR at `timestamp` seconds through the clock and the backbone, not the head.

        None when the clock skips it (no backbone run); else (the clock ticks it covers, more
        than 1 after a gap in the stream; its (features,) embedding): what enters the ring buffer.
        """
        ticks = self.clock.ticks(timestamp)
        if not ticks:
            return None
        reduced = reduce_frame(frame_bgr, self.bundle.image_size)
        crop = self.crop_tracker.update(reduced, timestamp) if self.crop_tracker is not None else None
        return ticks, self.embed_prepared_frame(prepare_reduced_frame(reduced, self.bundle.image_size, crop))

    def embed_prepared_frame(self, frame_rgb: np.ndarray) -> np.ndarray:
        """(image_size, image_size, 3) RGB uint8, already through `prepare_frame` -> its (features,) embedding."""
        return self.bundle.frame_engine.embed(frame_rgb[None])[0]

    def push_camera_frame(self, frame_bgr: np.ndarray, timestamp: float) -> Prediction | None:
        """A raw camera frame (H, W, 3) BGR at `timestamp` seconds; returns the current prediction.

        Frames between clock ticks are skipped cheaply (no backbone run) and
        return the latest prediction unchanged, with `stepped` False.
        """
        taken = self.take_camera_frame(frame_bgr, timestamp)
        if taken is None:
            self.stepped = False
            return self.latest
        ticks, embedding = taken
        return self.push_embedding(embedding, ticks)

    def push_prepared_frame(self, frame_rgb: np.ndarray, ticks: int = 1) -> Prediction | None:
        """A frame already through `prepare_frame` (image_size², RGB uint8) covering `ticks` clock ticks."""
        return self.push_embedding(self.embed_prepared_frame(frame_rgb), ticks)

    def push_embedding(self, embedding: np.ndarray, ticks: int = 1) -> Prediction | None:
        """A taken frame's (features,) embedding covering `ticks` clock ticks: into the ring buffer, then the head.

        The first frame of a stream also fills the buffer behind it, as a clip's window is padded
        with its first frame (a person holding still), so the head runs once PREDICT_FROM_FILL of a
        window has come in, not only when the buffer is full: a sign made in the first seconds after
        the camera starts is not lost.
        """
        if not self.embeddings:
            self.embeddings.extend([embedding] * (self.bundle.seq_len - 1))
        for _ in range(ticks):
            self.embeddings.append(embedding)
        self.frames_seen += ticks
        self.stepped = self.frames_seen >= self.predict_from_frames
        if not self.stepped:
            return None
        window = np.stack(self.embeddings)                                        # (seq_len, features)
        self.latest_probabilities = self.bundle.head_engine.run(window[None])[0]  # (classes,)
        self.latest_motion = window_motion(window)
        self.latest = prediction_from_probabilities(self.latest_probabilities, self.bundle.labels, self.top_k)
        self.steps += 1
        return self.latest

    def hold_still(self, last_timestamp: float) -> Iterator[float]:
        """The end of a file: its last frame held for a window, a step per tick, so a sign that ends with
        the file still passes through the buffer and can be spotted; yields each step's stream time."""
        if not self.embeddings:
            return
        last = self.embeddings[-1]
        for tick in range(1, self.bundle.seq_len + 1):
            self.push_embedding(last, 1)
            if self.stepped:
                yield last_timestamp + tick / self.bundle.sample_fps


def spot_held_end(recognizer: StreamingRecognizer, spotter: SignSpotter, last_timestamp: float) -> None:
    """A file has ended at `last_timestamp`: its last frame held for a window (`hold_still`), each step
    through the spotter, so a sign that ends with the file is still spotted (--mode signs, Upload)."""
    for timestamp in recognizer.hold_still(last_timestamp):
        spotter.update_from(recognizer, timestamp)


@dataclass(frozen=True)
class SpottingSettings:
    """The spotting params (params.yaml `spotting:`, chosen on validation streams). No defaults here for
    those: params.yaml is their one home (`default_spotting`), and a model's calibrated record comes before
    it. The one default, `motion_floor`, is for the one setting params.yaml cannot hold (below)."""
    threshold: float
    min_hold_seconds: float
    smoothing_steps: int
    release_seconds: float
    # A window that moved less than this names no sign (`window_motion`). Calibrated per model (the calibrate
    # stage, from spotting.motion_floor_quantile), since its units are the model's features: params.yaml holds
    # the quantile, not the floor, so settings read from params have none (0).
    motion_floor: float = 0.0

    @classmethod
    def from_params(cls, spotting: dict) -> SpottingSettings:
        return cls(float(spotting["threshold"]), float(spotting["min_hold_seconds"]),
                   int(spotting["smoothing_steps"]), float(spotting["release_seconds"]),
                   float(spotting.get("motion_floor", 0.0)))


# The repository's params.yaml, beside the `stages` package wherever it runs (a clone, a devset or test
# workspace), so that a model without a calibration record falls back to the settings a user can see.
REPOSITORY_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def default_spotting(params_path: str | Path = REPOSITORY_PARAMS) -> SpottingSettings:
    """params.yaml's `spotting:` section: the fallback for a model without its own `.spotting.json`."""
    return SpottingSettings.from_params(load_params(params_path)["spotting"])


def model_spotting(bundle: ServedBundle, fallback: SpottingSettings) -> SpottingSettings:
    """The spotting settings a model was calibrated with (its `<name>.spotting.json`, from the calibrate
    stage: params.yaml's, with the threshold its own validation clips reach); `fallback` (params.yaml's
    settings, or the library's) for a model without one. The Live page, the CLI and evaluate all start here."""
    record = bundle.spotting_record
    return SpottingSettings.from_params(record["settings"]) if record else fallback


@dataclass
class SpottedSign:
    sign: str
    start: float                 # stream seconds
    end: float
    confidence: float            # mean smoothed probability while it was the candidate
    emitted_at: float            # stream time at which it was emitted (for latency)

    def as_json(self) -> dict:
        return {"sign": self.sign, "start": round(self.start, 2), "end": round(self.end, 2),
                "confidence": round(self.confidence, 3)}


@dataclass
class CandidateRun:
    label: str | None
    first: float                 # time of its first step
    last: float                  # time of its latest step
    probabilities: list[float] = field(default_factory=list)
    emitted: SpottedSign | None = None


class SignSpotter:
    """Per-step probabilities -> signs emitted once each, with start, end and confidence (rules above)."""

    def __init__(self, labels: list[str], no_sign_label: str | None, settings: SpottingSettings,
                 window_seconds: float):
        self.labels = labels
        self.no_sign_index = labels.index(no_sign_label) if no_sign_label in labels else None
        self.settings = settings
        self.window_seconds = window_seconds
        self.signs: list[SpottedSign] = []
        self.recent: deque[np.ndarray] = deque(maxlen=max(settings.smoothing_steps, 1))
        self.run: CandidateRun | None = None
        self.last_emitted: str | None = None
        self.released = True               # no candidate for release_seconds since the last emission
        self.smoothed: np.ndarray | None = None

    @property
    def current(self) -> tuple[str | None, float]:
        """(the sign being recognised now, or None for no sign; its smoothed probability)."""
        if self.run is None or self.run.label is None:
            return None, 0.0
        return self.run.label, self.run.probabilities[-1]

    def clear(self) -> None:
        """Forget the signs made so far (the Live page's Clear); the stream goes on."""
        self.signs = []

    def update_from(self, recognizer: StreamingRecognizer, timestamp: float) -> list[SpottedSign]:
        """The recognizer's last step (its probabilities and window motion) at `timestamp`: `update`."""
        return self.update(recognizer.latest_probabilities, timestamp, recognizer.latest_motion)

    def update(self, probabilities: np.ndarray, timestamp: float, motion: float | None = None) -> list[SpottedSign]:
        """One model step's (classes,) probabilities at `timestamp`, and its window's motion (None: not known,
        no floor applied); returns the signs emitted now."""
        self.recent.append(np.asarray(probabilities, np.float64))
        # The same bits as np.mean(self.recent, axis=0) (rows added in order, then divided), in half the
        # time: evaluate and calibrate replay hundreds of thousands of steps through spotters.
        self.smoothed = sum(self.recent) / len(self.recent)
        best = int(np.argmax(self.smoothed))
        confidence = float(self.smoothed[best])
        still = motion is not None and motion < self.settings.motion_floor
        candidate = (self.labels[best] if best != self.no_sign_index and confidence >= self.settings.threshold
                     and not still else None)
        if self.run is None or candidate != self.run.label:
            self.close_run()
            self.run = CandidateRun(candidate, timestamp, timestamp)
        self.run.last = timestamp
        self.run.probabilities.append(confidence)
        if candidate is None:
            if timestamp - self.run.first >= self.settings.release_seconds - EPSILON_SECONDS:
                self.released = True
            return []
        self.update_emitted_extent()
        held = timestamp - self.run.first >= self.settings.min_hold_seconds - EPSILON_SECONDS
        if self.run.emitted is None and held and (candidate != self.last_emitted or self.released):
            self.run.emitted = SpottedSign(candidate, *self.extent(), float(np.mean(self.run.probabilities)),
                                           emitted_at=timestamp)
            self.signs.append(self.run.emitted)
            self.last_emitted, self.released = candidate, False
            return [self.run.emitted]
        return []

    def extent(self) -> tuple[float, float]:
        """(start, end) of the current run's sign in stream seconds (see the module docstring)."""
        shifted_last = self.run.last - self.window_seconds
        return max(0.0, min(self.run.first, shifted_last)), max(0.0, max(self.run.first, shifted_last))

    def update_emitted_extent(self) -> None:
        emitted = self.run.emitted
        if emitted is not None:
            emitted.start, emitted.end = self.extent()
            emitted.confidence = float(np.mean(self.run.probabilities))

    def close_run(self) -> None:
        if self.run is not None and self.run.label is not None:
            self.update_emitted_extent()

    def finish(self) -> list[SpottedSign]:
        """End of the stream: settle the open run; returns every sign made."""
        self.close_run()
        return self.signs


def spot_signs(step_times: np.ndarray, step_probabilities: np.ndarray, labels: list[str],
               no_sign_label: str | None, settings: SpottingSettings, window_seconds: float,
               step_motions: np.ndarray | None = None) -> list[SpottedSign]:
    """Run a spotter over recorded steps ((steps,) times, (steps, classes) probabilities, (steps,) window
    motions or None); every sign made."""
    spotter = SignSpotter(labels, no_sign_label, settings, window_seconds)
    motions = [None] * len(step_times) if step_motions is None else step_motions
    for timestamp, probabilities, motion in zip(step_times, step_probabilities, motions):
        spotter.update(probabilities, float(timestamp), None if motion is None else float(motion))
    return spotter.finish()


@dataclass(frozen=True)
class TakenFrames:
    """The frames a recognizer took from a stream, as embeddings: everything its head steps need."""
    times: np.ndarray          # (taken,) stream seconds of each frame the clock took
    ticks: np.ndarray          # (taken,) clock ticks each covered (more than 1 after a gap in the stream)
    embeddings: np.ndarray     # (taken, features) float32

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {"times": self.times, "ticks": self.ticks, "embeddings": self.embeddings}


def take_path_code_digest(lib_dir: Path = LIB_DIR) -> str:
    """A digest of the take path's source files (TAKE_PATH_SOURCES): part of the key of kept stream frames."""
    digest = hashlib.blake2b(digest_size=16)
    for name in TAKE_PATH_SOURCES:
        digest.update(name.encode() + b"\0" + (lib_dir / name).read_bytes())
    return digest.hexdigest()


def take_stream_frames(bundle: ServedBundle, frames: Iterable[tuple[float, np.ndarray]]) -> TakenFrames:
    """(timestamp, BGR frame) pairs through a fresh recognizer's clock and backbone: the frames it takes."""
    recognizer = StreamingRecognizer(bundle)
    times, ticks, embeddings = [], [], []
    for timestamp, frame in frames:
        taken = recognizer.take_camera_frame(frame, timestamp)
        if taken is not None:
            times.append(timestamp)
            ticks.append(taken[0])
            embeddings.append(taken[1])
    stacked = np.stack(embeddings).astype(np.float32) if embeddings else np.zeros((0, 1280), np.float32)
    return TakenFrames(np.array(times, np.float64), np.array(ticks, np.int64), stacked)


def replay_stream_steps(bundle: ServedBundle, taken: TakenFrames, hold_end: bool = True
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A stream's head steps from the frames a recognizer took: the ring buffer and head, without decoding
    or the backbone (a kept stream replays when an experiment changed only the head), and with
    `hold_end` its last frame held for a window (`StreamingRecognizer.hold_still`), as a file ends.
    ((steps,) times, (steps, classes) probabilities, (steps,) window motions)."""
    recognizer = StreamingRecognizer(bundle)
    times, probabilities, motions = [], [], []

    def keep(timestamp: float) -> None:
        times.append(timestamp)
        probabilities.append(recognizer.latest_probabilities)
        motions.append(recognizer.latest_motion)

    for timestamp, ticks, embedding in zip(taken.times, taken.ticks, taken.embeddings):
        recognizer.push_embedding(embedding, int(ticks))
        if recognizer.stepped:
            keep(float(timestamp))
    if hold_end and len(taken.times):
        for timestamp in recognizer.hold_still(float(taken.times[-1])):   # the file's end, held for a window
            keep(timestamp)
    stacked = np.stack(probabilities) if probabilities else np.zeros((0, len(bundle.labels)))
    return np.array(times, np.float64), stacked, np.array(motions, np.float64)


# --- the kept frames of recorded streams ----------------------------------------------------------

# Under paths.embedding_cache: each stream's taken frames as embeddings (`stream_steps`).
STREAM_CACHE_FOLDER = "streams"


def stream_cache_path(cache_dir: Path, stream_path: Path, encoder_digest: str, code_digest: str,
                      bundle: ServedBundle) -> Path:
    """Where a stream's taken frames are kept, keyed by all they depend on: the stream's bytes, the served
    frame encoder's bytes, the sampling rule (rate, image size, crop) and the take path's code. The head
    is not in the key."""
    digest = hashlib.blake2b(Path(stream_path).read_bytes(), digest_size=16)
    digest.update(f"{encoder_digest}|{json.dumps(bundle.sampling.as_dict(), sort_keys=True)}|"
                  f"{code_digest}".encode())
    return Path(cache_dir) / STREAM_CACHE_FOLDER / f"{digest.hexdigest()}.npz"


def frame_encoder_digest(bundle: ServedBundle) -> str:
    """The served frame encoder's bytes, as part of a kept stream's key."""
    return hashlib.blake2b(bundle.file("frame_encoder_tflite").read_bytes(), digest_size=16).hexdigest()


def stream_steps(bundle: ServedBundle, path: Path, cache_dir: Path, encoder_digest: str, code_digest: str
                 ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], bool]:
    """A stream file's live-path steps ((steps,) times, (steps, classes) probabilities, (steps,) window
    motions), and whether they were replayed.

    The first run decodes it and runs the backbone on every frame the clock takes, as Live does,
    and keeps those frames' embeddings; a later run with the same stream, encoder and sampling
    (a `train.*` or `spotting.*` experiment, or evaluate after calibrate) replays them through
    the same ring buffer and head.
    """
    from stages.lib.storage import atomic_path  # h5py only when streams are kept
    from stages.lib.video import iterate_video_frames
    cached = stream_cache_path(cache_dir, path, encoder_digest, code_digest, bundle)
    if cached.exists():
        with np.load(cached) as arrays:
            taken = TakenFrames(arrays["times"], arrays["ticks"], arrays["embeddings"])
        return replay_stream_steps(bundle, taken), True
    taken = take_stream_frames(bundle, iterate_video_frames(path))
    with atomic_path(cached) as tmp:
        with open(tmp, "wb") as handle:           # a file object: np.savez would add ".npz" to the name
            np.savez(handle, **taken.as_arrays())
    return replay_stream_steps(bundle, taken), False
