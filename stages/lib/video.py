"""The one home of frame preprocessing: reading, colour order, resizing, and sampling at a fixed rate in time.

Usage:
    from stages.lib.video import Sampling, SamplingClock, sample_clip, prepare_frame
    sampling = Sampling(fps=10, image_size=224, min_frames=5, max_seconds=60)
    clip = sample_clip("data/synthetic/wave/signer00_r0.mp4", sampling)
    clip.frames            # (frames at 10 per second of the clip, 224, 224, 3) uint8, RGB
    rgb = prepare_frame(bgr_camera_frame, image_size=224)    # (224, 224, 3) uint8, RGB
    clock = SamplingClock(rate=10)                           # the live path: which camera frames to take
    clock.ticks(timestamp)                                   # 0, 1 (or more after a gap) frames due now

The sample stage, the extract stage, the live streaming path, the app and the
tests all call these functions, so training and serving see identical pixels
at the identical rate in time.

Conventions, fixed here and nowhere else:
- colour order RGB (OpenCV decodes BGR; we convert once, in `prepare_frame`);
- time first: a clip is (frames, height, width, 3);
- a frame is first shrunk to at most twice the model's size on its long side
  (INTER_AREA), in sampling and live alike, so big frames cost little and a
  crop box means the same pixels on either path;
- with `Sampling.crop` "signing_space", the frame is cut to the square in
  front of the signer's upper body, found from their face (stages/lib/faces.py;
  padded with black where it reaches past the frame); without a face, or with
  crop "none", non-square frames are letterboxed (padded with black to a
  square, centred), so hands near the frame edge are never cut away;
- resizing uses INTER_AREA (anti-aliased downscaling);
- sampling takes frames at one fixed rate in time (`Sampling.fps`), whatever
  the source's frame rate, with the same clock the live path runs on camera
  timestamps (`SamplingClock`): a tick every 1/fps seconds takes the first frame
  at or after it. A source slower than the rate gives some frames twice (a
  5 fps clip at 10 fps shows each frame twice), so a second of video is always
  `fps` frames, in training and live alike;
- nothing is padded here: a clip keeps its own length; the window code
  (stages/lib/windows.py) pads short clips with their own first and last frames;
- a clip with fewer than `min_frames` sampled frames, or a usable part longer
  than `max_seconds`, is refused with the reason;
- a clip stored as a folder of frame images (.jpg/.png, natural order: frame_2
  before frame_10) is read with cv2.imread, which gives BGR like video decoding,
  and goes through the same clock and `prepare_frame`; with an unknown rate
  (`frames_fps` 0) each image is taken as one tick;
- a video frame's time is the decoder's timestamp (`DecoderTimestamps`), not
  its index over the container's average rate, so variable-rate files are
  sampled at the moments they were filmed; the recorder writes each camera
  frame at its own time (`write_timed_video`) for the same reason.

Refusal reasons read "<kind>: <details>" (or just "<kind>"), so the metrics can
count refusals by kind while the manifest keeps the details.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
from natsort import natsorted, ns

from stages.lib.sampling import CROP_MODES, CropBox, Sampling  # noqa: F401 (re-exported: the rule and its box)

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})
RESIZE_INTERPOLATION = cv2.INTER_AREA
COLOR_ORDER = "RGB"
PREPROCESSING_DESCRIPTION = (
    "frames taken at a fixed rate in time (a tick every 1/fps s takes the first frame at or after it; "
    "slower sources repeat frames); letterboxed to square with black; resized with cv2.INTER_AREA; RGB uint8"
)
# Tick times are compared in floating point; a frame this close before a tick counts as on it
# (frame 3 of a 30 fps clip is at 0.1 s, which 3 / 30 gives as 0.09999...).
CLOCK_TOLERANCE_SECONDS = 1e-6
FALLBACK_CAMERA_FPS = 25.0   # a video container that states no rate: a typical camera's


class ClipRefused(Exception):
    """A clip that cannot be used; the message is the human-readable reason for the manifest."""


def refusal_kind(reason: str) -> str:
    """The kind of a refusal reason, its text before the first colon: what the metrics count by.

    >>> refusal_kind("too short: 3 frames, need at least 8 (sample.min_frames)")
    'too short'
    """
    return reason.split(":", 1)[0].strip()


@dataclass(frozen=True)
class SampledClip:
    frames: np.ndarray        # (sampled frames, image_size, image_size, 3) uint8 RGB, at Sampling.fps
    num_frames: int           # source frames in the usable part (decodable, inside the frame range)
    fps: float                # source frames per second from the container (0 when unknown)
    note: str = ""            # something a user should know although the clip is usable

    @property
    def duration_seconds(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0


class SamplingClock:
    """Ticks every 1/rate seconds of stream time; each incoming frame covers the ticks since the last one.

    The first frame starts the clock (tick 0). `ticks(timestamp)` is how many
    ticks this frame is the first frame at or after: usually 0 or 1; 2 or more
    when frames are further apart than a tick (a slow camera, dropped frames),
    so that the buffer keeps the rate in time. `max_ticks` caps it after a long
    gap (a paused stream), which would otherwise flood the buffer with one frame.
    """

    def __init__(self, rate: float, max_ticks: int | None = None):
        if not rate > 0:
            raise ValueError(f"rate must be above 0 frames/s, got {rate}")
        self.rate = float(rate)
        self.max_ticks = max_ticks
        self.reset()

    def reset(self) -> None:
        self.start: float | None = None
        self.ticks_taken = 0

    def ticks(self, timestamp: float) -> int:
        if self.start is None:
            self.start = timestamp
        # Ticks 0 .. due-1 lie at or before this frame.
        due = math.floor((timestamp - self.start) * self.rate + CLOCK_TOLERANCE_SECONDS * self.rate) + 1
        count = max(due - self.ticks_taken, 0)
        self.ticks_taken = max(self.ticks_taken, due)
        return min(count, self.max_ticks) if self.max_ticks is not None else count


def fixed_rate_indices(num_frames: int, source_fps: float, rate: float) -> np.ndarray:
    """Indices into a clip of `num_frames` frames at `source_fps`, one per tick of the clock at `rate`.

    >>> fixed_rate_indices(10, source_fps=30, rate=10).tolist()     # every third frame
    [0, 3, 6, 9]
    >>> fixed_rate_indices(3, source_fps=5, rate=10).tolist()       # a slow source: frames repeat
    [0, 1, 1, 2, 2]
    >>> fixed_rate_indices(3, source_fps=0, rate=10).tolist()       # rate unknown: one tick per frame
    [0, 1, 2]
    """
    if source_fps <= 0:
        return np.arange(num_frames, dtype=np.int64)
    clock = SamplingClock(rate)
    indices = [index for index in range(num_frames) for _ in range(clock.ticks(index / source_fps))]
    return np.array(indices, dtype=np.int64)


def is_video_file(path: str | Path) -> bool:
    """True for the video extensions we read, in any letter case."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def is_frame_image(path: str | Path) -> bool:
    """True for the frame image extensions we read (.jpg, .jpeg, .png), in any letter case."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_frame_images(folder: str | Path) -> list[Path]:
    """The frame images directly inside a clip folder, in natural order (frame_2 before frame_10)."""
    images = [path for path in Path(folder).iterdir() if path.is_file() and is_frame_image(path)]
    return natsorted(images, key=lambda path: path.name, alg=ns.IGNORECASE)


def letterbox_to_square(frame: np.ndarray) -> np.ndarray:
    """Pad the shorter side with black so the frame is square and centred."""
    height, width = frame.shape[:2]
    if height == width:
        return frame
    side = max(height, width)
    top = (side - height) // 2
    left = (side - width) // 2
    return cv2.copyMakeBorder(frame, top, side - height - top, left, side - width - left,
                              cv2.BORDER_CONSTANT, value=(0, 0, 0))


def reduce_frame(frame_bgr: np.ndarray, image_size: int) -> np.ndarray:
    """A decoded frame as 3-channel BGR, shrunk to at most 2 x image_size on its long side (never enlarged)."""
    if frame_bgr.ndim == 2:  # grayscale images and some codecs give one channel
        frame_bgr = cv2.cvtColor(frame_bgr, cv2.COLOR_GRAY2BGR)
    elif frame_bgr.shape[2] == 4:
        frame_bgr = cv2.cvtColor(frame_bgr, cv2.COLOR_BGRA2BGR)
    height, width = frame_bgr.shape[:2]
    limit = 2 * image_size
    if max(height, width) <= limit:
        return frame_bgr
    scale = limit / max(height, width)
    return cv2.resize(frame_bgr, (max(int(round(width * scale)), 1), max(int(round(height * scale)), 1)),
                      interpolation=RESIZE_INTERPOLATION)


def cut_square(frame: np.ndarray, box: CropBox) -> np.ndarray:
    """The box's pixels of `frame`, black where the box reaches past it: (side, side, 3)."""
    side = max(int(round(box.side)), 1)
    left, top = int(round(box.left)), int(round(box.top))
    height, width = frame.shape[:2]
    square = np.zeros((side, side, 3), frame.dtype)
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + side, width), min(top + side, height)
    if x1 > x0 and y1 > y0:
        square[y0 - top:y1 - top, x0 - left:x1 - left] = frame[y0:y1, x0:x1]
    return square


def prepare_reduced_frame(reduced_bgr: np.ndarray, image_size: int, crop: CropBox | None = None) -> np.ndarray:
    """A frame from `reduce_frame` -> (image_size, image_size, 3) RGB uint8: cut to `crop`, or letterboxed."""
    square = cut_square(reduced_bgr, crop) if crop is not None else letterbox_to_square(reduced_bgr)
    resized = cv2.resize(square, (image_size, image_size), interpolation=RESIZE_INTERPOLATION)
    return cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)


def prepare_frame(frame_bgr: np.ndarray, image_size: int, crop: CropBox | None = None) -> np.ndarray:
    """One decoded OpenCV frame (H, W, 3) BGR uint8 -> (image_size, image_size, 3) RGB uint8.

    `crop` is in the pixels of `reduce_frame(frame_bgr, image_size)`.
    """
    return prepare_reduced_frame(reduce_frame(frame_bgr, image_size), image_size, crop)


def sample_clip(path: str | Path, sampling: Sampling, frame_range: tuple[int, int] | None = None,
                frames_fps: float = 0.0) -> SampledClip:
    """A stored clip, either a video file or a folder of frame images -> its frames at `sampling.fps`.

    `frame_range` (first, last), inclusive and 0-based (last -1 or None: to the
    end), restricts sampling to part of the clip (WLASL-style indexes).
    `frames_fps` is the rate at which a folder's images were taken (0 when
    unknown); a video file's rate comes from its container. Raises ClipRefused
    with a readable reason.
    """
    if Path(path).is_dir():
        return sample_frame_folder(path, sampling, frame_range, fps=frames_fps)
    return sample_video(path, sampling, frame_range)


def sample_video(path: str | Path, sampling: Sampling, frame_range: tuple[int, int] | None = None) -> SampledClip:
    """Decode a video once and keep, preprocessed, the frames the fixed-rate clock takes."""
    path = Path(path)
    check_file_not_empty(path)
    header_count, header_fps = read_header(path)
    fps = header_fps or FALLBACK_CAMERA_FPS
    first, last, range_note = 0, None, ""
    if frame_range is not None:
        if header_count > 0:
            first, last, range_note = resolve_frame_range(frame_range, header_count)
        else:   # no frame count in the header: count by decoding, then resolve the range on the truth
            first, last, range_note = resolve_frame_range(frame_range, count_decodable_frames(path))
    expected = (last if last is not None else header_count - 1) - first + 1
    check_not_too_long(expected, fps, sampling.max_seconds)
    reduced, decoded = decode_at_fixed_rate(path, fps, first, last, sampling)
    usable = decoded - first
    if usable <= 0:
        raise ClipRefused(f"frame range outside the clip: starts at frame {first}, the clip has {decoded} "
                          "decodable frames")
    truncated = header_count > 0 and decoded < (last + 1 if last is not None else header_count)
    notes = [range_note]
    if truncated:
        notes.insert(0, f"header says {header_count} frames, {decoded} decodable; sampled those")
        if len(reduced) < sampling.min_frames:
            raise ClipRefused(f"truncated: {decoded} of the {header_count} frames the header declares are "
                              f"decodable, need at least {sampling.min_frames} at {sampling.fps:g} frames/s "
                              "(sample.min_frames)")
    if not header_fps:
        notes.append(f"no frame rate in the container: taken as {FALLBACK_CAMERA_FPS:g} frames/s")
    check_long_enough(len(reduced), sampling)
    frames, crop_note = prepare_clip_frames(reduced, sampling)
    notes.append(crop_note)
    return SampledClip(frames=frames, num_frames=usable, fps=header_fps,
                       note="; ".join(note for note in notes if note))


def prepare_clip_frames(reduced: list[np.ndarray], sampling: Sampling) -> tuple[np.ndarray, str]:
    """Reduced BGR frames (one per tick; a frame covering two ticks appears twice) -> (frames RGB, note).

    With crop "signing_space" the clip's box comes from the faces found in it;
    none found: the whole frame, letterboxed, and a note for the manifest.
    """
    crop, note = None, ""
    if sampling.crop == "signing_space":
        from stages.lib.faces import signing_space_of_clip  # TensorFlow loads only when cropping is asked for
        crop = signing_space_of_clip(unique_frames(reduced))
        if crop is None:
            note = "no face found: whole frame used (sample.crop signing_space)"
    prepared: dict[int, np.ndarray] = {}
    for frame in reduced:                      # repeated ticks share one frame object: prepare it once
        if id(frame) not in prepared:
            prepared[id(frame)] = prepare_reduced_frame(frame, sampling.image_size, crop)
    return np.stack([prepared[id(frame)] for frame in reduced]), note         # (ticks, S, S, 3)


def unique_frames(frames: list[np.ndarray]) -> list[np.ndarray]:
    seen: set[int] = set()
    return [frame for frame in frames if not (id(frame) in seen or seen.add(id(frame)))]


def decode_at_fixed_rate(path: Path, fps: float, first: int, last: int | None,
                         sampling: Sampling) -> tuple[list[np.ndarray], int]:
    """Walk the stream once from frame 0 to `last` (or the end); keep only the frames the clock takes.

    `grab()` every frame and `retrieve()` only the wanted ones: measured here at
    about half the cost of seeking. Decoding stops at the range's last frame
    (a WLASL range in a raw YouTube video ends long before the file does), and
    a clip that turns out longer than `sampling.max_seconds` stops as soon as it
    is known to be too long. Returns (frames through `reduce_frame`, BGR, one per
    tick, the index one past the last frame decoded).
    """
    clock = SamplingClock(sampling.fps)
    limit = sampling.max_seconds * fps if sampling.max_seconds > 0 else math.inf
    capture = cv2.VideoCapture(str(path))
    timestamps = DecoderTimestamps(fps)
    frames: list[np.ndarray] = []
    index = 0
    try:
        while (last is None or index <= last) and capture.grab():
            seconds = timestamps.seconds(capture, index)
            if index >= first:
                if index - first + 1 > limit:
                    raise ClipRefused(too_long_reason((index - first + 1) / fps, sampling.max_seconds, "at least "))
                ticks = clock.ticks(seconds)      # the clock starts at the range's first frame
                if ticks:
                    ok, frame = capture.retrieve()
                    if not ok or frame is None:
                        break  # a frame that cannot be decoded ends the usable part of the clip
                    frames.extend([reduce_frame(frame, sampling.image_size)] * ticks)
            index += 1
    finally:
        capture.release()
    if index == 0:
        raise ClipRefused("no decodable frames: truncated, corrupt, or an unsupported codec")
    return frames, index


class DecoderTimestamps:
    """Each decoded frame's time in seconds: the container's own timestamp where it has one.

    Variable-frame-rate files (phones, screen recorders, a webcam that drops
    frames) space their frames unevenly; `index / fps` with the container's
    average rate would take frames at the wrong moments. After `grab()`,
    OpenCV's CAP_PROP_POS_MSEC is the frame's presentation time. Where it is
    missing, not finite, or does not move forward (containers without
    timestamps report 0), the frame is dated one `1 / fps` after the last.
    `origin` is the first frame's time (a container may start above 0).
    """

    def __init__(self, fps: float):
        self.fps = float(fps)
        self.last: float | None = None
        self.origin = 0.0

    def seconds(self, capture: cv2.VideoCapture, index: int) -> float:
        stamp = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        if self.last is None:
            value = stamp if math.isfinite(stamp) and stamp >= 0 else index / self.fps
            self.origin = value
        elif math.isfinite(stamp) and stamp > self.last + CLOCK_TOLERANCE_SECONDS:
            value = stamp
        else:
            value = self.last + 1.0 / self.fps
        self.last = value
        return value


def count_decodable_frames(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    try:
        while capture.grab():
            count += 1
    finally:
        capture.release()
    if count == 0:
        raise ClipRefused("no decodable frames: truncated, corrupt, or an unsupported codec")
    return count


def sample_frame_folder(folder: str | Path, sampling: Sampling, frame_range: tuple[int, int] | None = None,
                        fps: float = 0.0) -> SampledClip:
    """A clip stored as frame images (one per frame, natural order) -> its frames at `sampling.fps`.

    Every image of the clip (or of its frame range) is decoded, not only the
    sampled ones, for the same reason a truncated video is noticed: a clip with
    a broken frame is refused with the file named, never half used.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ClipRefused("clip folder not found")
    images = list_frame_images(folder)
    if not images:
        raise ClipRefused("no frame images: the clip folder holds no .jpg or .png file")
    first, last, note = resolve_frame_range(frame_range, len(images))
    usable = last - first + 1
    check_not_too_long(usable, fps if fps > 0 else sampling.fps, sampling.max_seconds)
    wanted = first + fixed_rate_indices(usable, fps, sampling.fps)
    check_long_enough(len(wanted), sampling)
    frames_by_index = read_frame_images(images, first, last, set(wanted.tolist()), sampling.image_size)
    if fps <= 0:
        note = "; ".join(filter(None, [note, f"frame rate unknown (data.frames_fps 0): each image taken as one "
                                             f"tick at {sampling.fps:g} frames/s"]))
    frames, crop_note = prepare_clip_frames([frames_by_index[index] for index in wanted], sampling)
    return SampledClip(frames=frames, num_frames=usable, fps=float(fps),
                       note="; ".join(filter(None, [note, crop_note])))


def read_frame_images(images: list[Path], first: int, last: int, wanted: set[int],
                      image_size: int) -> dict[int, np.ndarray]:
    """Decode images[first..last]; reduce the wanted ones; refuse the clip if any image is unreadable."""
    frames_by_index: dict[int, np.ndarray] = {}
    unreadable: list[str] = []
    for index in range(first, last + 1):
        # IMREAD_COLOR: always 3-channel BGR (grayscale expanded, alpha dropped), like a video frame.
        frame = cv2.imread(str(images[index]), cv2.IMREAD_COLOR)
        if frame is None or frame.size == 0:
            unreadable.append(images[index].name)
        elif index in wanted:
            frames_by_index[index] = reduce_frame(frame, image_size)
    if unreadable:
        raise ClipRefused(f"unreadable frame images: {len(unreadable)} of {last - first + 1}, "
                          f"first {unreadable[0]!r}")
    return frames_by_index


def check_long_enough(sampled: int, sampling: Sampling) -> None:
    """Refuse a clip with fewer than `min_frames` frames at the sampling rate (sample.min_frames)."""
    if sampled < sampling.min_frames:
        raise ClipRefused(f"too short: {sampled} frames at {sampling.fps:g} frames/s, need at least "
                          f"{sampling.min_frames} (sample.min_frames)")


def too_long_reason(seconds: float, max_seconds: float, qualifier: str = "") -> str:
    return f"too long: {qualifier}{seconds:.1f} s, at most {max_seconds:g} s (sample.max_seconds)"


def check_not_too_long(frames: int, fps: float, max_seconds: float) -> None:
    """Refuse, before decoding, a clip whose header already says it is longer than the limit."""
    if max_seconds > 0 and fps > 0 and frames / fps > max_seconds:
        raise ClipRefused(too_long_reason(frames / fps, max_seconds))


def check_file_not_empty(path: Path) -> None:
    if not path.exists():
        raise ClipRefused("file not found")
    if path.stat().st_size == 0:
        raise ClipRefused("empty file (0 bytes)")


def read_header(path: Path) -> tuple[int, float]:
    """Frame count and fps as the container declares them (0 where it does not)."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise ClipRefused("cannot open as video: not a video file, truncated, or an unsupported codec")
        header_count = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        capture.release()
    return header_count, fps if np.isfinite(fps) and fps > 0 else 0.0


def resolve_frame_range(frame_range: tuple[int, int] | None, num_frames: int) -> tuple[int, int, str]:
    """(first, last, note): the inclusive 0-based frames of a clip to sample from, out of `num_frames`.

    - no range: the whole clip; a negative (or None) last frame: to the clip's end;
    - a range ending after the clip: cut at the clip's end, with a note;
    - a range starting after frame 0 in a file no longer than the range itself:
      the file was already cut to that range (WLASL's preprocess.py writes
      `videos/<video_id>.mp4` so), so the whole file is the sign, with a note;
    - a range starting after the clip's end: ClipRefused.
    """
    if frame_range is None:
        return 0, num_frames - 1, ""
    first = max(0, int(frame_range[0]))
    to_end = frame_range[1] is None or frame_range[1] < 0
    if not to_end and first > 0 and num_frames <= int(frame_range[1]) - first + 1:
        return 0, num_frames - 1, (f"file has {num_frames} frames, no more than its frame range "
                                   f"{first}..{frame_range[1]}: taken as already cut to it; sampled the whole file")
    if first > num_frames - 1:
        raise ClipRefused(f"frame range outside the clip: starts at frame {first}, the clip has {num_frames} frames")
    if to_end:
        return first, num_frames - 1, ""
    last = int(frame_range[1])
    if last > num_frames - 1:
        return first, num_frames - 1, (f"frame range ends at frame {last}, the clip has {num_frames} frames; "
                                       f"sampled {first}..{num_frames - 1}")
    return first, last, ""


def iterate_video_frames(path: str | Path, max_seconds: float = 0.0) -> Iterator[tuple[float, np.ndarray]]:
    """Every decodable frame of a video as (timestamp in seconds, BGR frame), like a camera would give.

    Timestamps are the decoder's, as `sample` takes them (`DecoderTimestamps`), so a
    file can drive the live streaming path exactly as a webcam does, and a
    variable-rate phone clip is seen at the moments it was filmed. With
    `max_seconds` above 0 a longer file is refused (ClipRefused), as `sample`
    refuses it: from its header before any frame, else at the first frame past it.
    """
    path = Path(path)
    check_file_not_empty(path)
    header_count, fps = read_header(path)
    check_not_too_long(header_count, fps, max_seconds)
    capture = cv2.VideoCapture(str(path))
    timestamps = DecoderTimestamps(fps or FALLBACK_CAMERA_FPS)
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok or frame is None:
                break
            seconds = timestamps.seconds(capture, index) - timestamps.origin
            if max_seconds > 0 and seconds > max_seconds:
                raise ClipRefused(too_long_reason(seconds, max_seconds, "at least "))
            yield seconds, frame
            index += 1
    finally:
        capture.release()


TIMED_VIDEO_CODEC = "mpeg4"               # MPEG-4 part 2 (OpenCV's mp4v): decodes everywhere the pipeline runs
TIMED_VIDEO_TIME_BASE = Fraction(1, 1000)  # timestamps kept to the millisecond


def write_timed_video(frames_bgr: Sequence[np.ndarray], timestamps: Sequence[float], path: str | Path) -> None:
    """Frames ((H, W, 3) uint8 BGR each) -> a video where each frame keeps its own time (seconds).

    OpenCV's VideoWriter knows one constant rate, which flattens a camera's
    dropped frames and uneven pace into an average; PyAV (FFmpeg) writes each
    frame's presentation time. Times are relative to the first frame; two frames
    within one millisecond are kept a millisecond apart. Raises OSError when the
    file cannot be written.
    """
    import av  # PyAV: FFmpeg's muxer with per-frame timestamps (already under streamlit-webrtc's aiortc)

    if len(frames_bgr) != len(timestamps) or not frames_bgr:
        raise ValueError(f"need one timestamp per frame, got {len(frames_bgr)} frames and {len(timestamps)} times")
    height, width = frames_bgr[0].shape[:2]
    try:
        with av.open(str(path), mode="w") as container:
            stream = container.add_stream(TIMED_VIDEO_CODEC, rate=TIMED_VIDEO_TIME_BASE.denominator)
            stream.width, stream.height, stream.pix_fmt = width - width % 2, height - height % 2, "yuv420p"
            # FFmpeg's mpeg4 default is 200 kbit/s, blocky at webcam sizes; quantiser 2-4 is near-lossless.
            stream.codec_context.qmin, stream.codec_context.qmax = 2, 4
            previous_pts = -1
            for frame_bgr, timestamp in zip(frames_bgr, timestamps):
                pts = max(round((timestamp - timestamps[0]) / TIMED_VIDEO_TIME_BASE), previous_pts + 1)
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_bgr[:stream.height, :stream.width]),
                                                   format="bgr24")
                frame.pts, frame.time_base, previous_pts = pts, TIMED_VIDEO_TIME_BASE, pts
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
    except av.FFmpegError as error:
        raise OSError(f"cannot write video to {Path(path).name}: {error}") from None
