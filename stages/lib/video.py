"""The one home of frame preprocessing: reading, colour order, resizing, temporal sampling.

Usage:
    from stages.lib.video import sample_clip, sample_video, prepare_frame
    clip = sample_video("data/synthetic/wave/s00_r0.mp4", seq_len=20, image_size=224)
    clip.frames            # (seq_len, 224, 224, 3) uint8, RGB
    clip = sample_clip("frames/hello/clip01", seq_len=20, image_size=224)  # a folder of frame images
    rgb = prepare_frame(bgr_camera_frame, image_size=224)   # (224, 224, 3) uint8, RGB

The sample stage, the extract stage, the live streaming path, the app and the
tests all call these functions, so training and serving see identical pixels.

Conventions, fixed here and nowhere else:
- colour order RGB (OpenCV decodes BGR; we convert once, in `prepare_frame`);
- time first: a clip is (frames, height, width, 3);
- non-square frames are letterboxed (padded with black to a square, centred)
  before resizing, so hands near the frame edge are never cropped away;
- resizing uses INTER_AREA (anti-aliased downscaling);
- temporal sampling takes `seq_len` frames evenly spread over the clip's
  duration, the centre of each of `seq_len` equal time slices; a clip with fewer
  than `seq_len` frames gets some frames repeated (no padding, no mask), so a
  short clip is a slowed-down clip and every path sees full sequences;
- a clip with fewer than `min_frames` usable frames is refused, never padded;
- a clip stored as a folder of frame images (.jpg/.png, natural order: frame_2
  before frame_10) is read with cv2.imread, which gives BGR like video decoding,
  and goes through the same sampling and `prepare_frame`.

Refusal reasons read "<kind>: <details>" (or just "<kind>"), so the metrics can
count refusals by kind while the manifest keeps the details.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from natsort import natsorted, ns

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})
RESIZE_INTERPOLATION = cv2.INTER_AREA
COLOR_ORDER = "RGB"
PREPROCESSING_DESCRIPTION = (
    "frames sampled evenly over the clip duration (centre of seq_len equal slices, "
    "short clips repeat frames); letterboxed to square with black; resized with "
    "cv2.INTER_AREA; RGB uint8"
)


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
    frames: np.ndarray        # (seq_len, image_size, image_size, 3) uint8 RGB
    num_frames: int           # frames actually decodable in the clip (or its frame range)
    fps: float                # frames per second from the container (0 when unknown)
    note: str = ""            # something a user should know although the clip is usable

    @property
    def duration_seconds(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0


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


def sample_indices(num_frames: int, seq_len: int) -> np.ndarray:
    """Indices of `seq_len` frames spread evenly over `num_frames` (centre of each slice).

    >>> sample_indices(10, 5).tolist()
    [1, 3, 5, 7, 9]
    >>> sample_indices(3, 6).tolist()       # short clip: frames repeat
    [0, 0, 1, 1, 2, 2]
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    if seq_len < 1:
        raise ValueError(f"seq_len must be at least 1, got {seq_len}")
    slice_centres = (np.arange(seq_len) + 0.5) * num_frames / seq_len
    return np.minimum(np.floor(slice_centres).astype(np.int64), num_frames - 1)


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


def prepare_frame(frame_bgr: np.ndarray, image_size: int) -> np.ndarray:
    """One decoded OpenCV frame (H, W, 3) BGR uint8 -> (image_size, image_size, 3) RGB uint8."""
    if frame_bgr.ndim == 2:  # grayscale images and some codecs give one channel
        frame_bgr = cv2.cvtColor(frame_bgr, cv2.COLOR_GRAY2BGR)
    elif frame_bgr.shape[2] == 4:
        frame_bgr = cv2.cvtColor(frame_bgr, cv2.COLOR_BGRA2BGR)
    square = letterbox_to_square(frame_bgr)
    resized = cv2.resize(square, (image_size, image_size), interpolation=RESIZE_INTERPOLATION)
    return cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)


def sample_video(path: str | Path, seq_len: int, image_size: int, min_frames: int = 1,
                 frame_range: tuple[int, int] | None = None) -> SampledClip:
    """Decode a video and return `seq_len` evenly spread, preprocessed frames.

    `frame_range` (first, last), inclusive and 0-based, restricts sampling to part
    of the clip (WLASL-style indexes). Raises ClipRefused with a readable reason.
    """
    path = Path(path)
    check_file_not_empty(path)
    header_count, fps = read_header(path)
    decodable_count, frames_by_index = decode_selected_frames(
        path, header_count, seq_len, image_size, frame_range)
    note = ""
    if header_count > 0 and decodable_count < header_count:
        note = f"header says {header_count} frames, {decodable_count} decodable; sampled those"
    first, last, range_note = resolve_frame_range(frame_range, decodable_count)
    note = "; ".join(text for text in (note, range_note) if text)
    usable = last - first + 1
    if usable < min_frames and decodable_count < header_count:
        raise ClipRefused(f"truncated: {decodable_count} of the {header_count} frames the header declares are "
                          f"decodable, need at least {min_frames} (sample.min_frames)")
    check_long_enough(usable, min_frames)
    wanted = first + sample_indices(usable, seq_len)
    if any(index not in frames_by_index for index in wanted):
        # The header's frame count was wrong, so the first pass picked other frames:
        # decode again now that the true count is known.
        _, frames_by_index = decode_selected_frames(path, decodable_count, seq_len, image_size, frame_range)
    frames = np.stack([frames_by_index[index] for index in wanted])  # (seq_len, H, W, 3)
    return SampledClip(frames=frames, num_frames=usable, fps=fps, note=note)


def sample_clip(path: str | Path, seq_len: int, image_size: int, min_frames: int = 1,
                frame_range: tuple[int, int] | None = None, frames_fps: float = 0.0) -> SampledClip:
    """A stored clip, either a video file or a folder of frame images -> `seq_len` prepared frames.

    `frames_fps` is the rate at which a folder's images were taken (0 when
    unknown); a video file's rate comes from its container.
    """
    if Path(path).is_dir():
        return sample_frame_folder(path, seq_len, image_size, min_frames, frame_range, fps=frames_fps)
    return sample_video(path, seq_len, image_size, min_frames, frame_range)


def sample_frame_folder(folder: str | Path, seq_len: int, image_size: int, min_frames: int = 1,
                        frame_range: tuple[int, int] | None = None, fps: float = 0.0) -> SampledClip:
    """A clip stored as frame images (one per frame, natural order) -> `seq_len` prepared frames.

    Every image of the clip (or of its frame range) is decoded, not only the
    sampled ones, for the same reason video decoding walks the whole stream: a
    clip with a broken frame is refused with the file named, never half used.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ClipRefused("clip folder not found")
    images = list_frame_images(folder)
    if not images:
        raise ClipRefused("no frame images: the clip folder holds no .jpg or .png file")
    first, last, note = resolve_frame_range(frame_range, len(images))
    usable = last - first + 1
    check_long_enough(usable, min_frames)
    wanted = first + sample_indices(usable, seq_len)
    frames_by_index = read_frame_images(images, first, last, set(wanted.tolist()), image_size)
    frames = np.stack([frames_by_index[index] for index in wanted])  # (seq_len, H, W, 3)
    return SampledClip(frames=frames, num_frames=usable, fps=float(fps), note=note)


def read_frame_images(images: list[Path], first: int, last: int, wanted: set[int],
                      image_size: int) -> dict[int, np.ndarray]:
    """Decode images[first..last]; prepare the wanted ones; refuse the clip if any image is unreadable."""
    frames_by_index: dict[int, np.ndarray] = {}
    unreadable: list[str] = []
    for index in range(first, last + 1):
        # IMREAD_COLOR: always 3-channel BGR (grayscale expanded, alpha dropped), like a video frame.
        frame = cv2.imread(str(images[index]), cv2.IMREAD_COLOR)
        if frame is None or frame.size == 0:
            unreadable.append(images[index].name)
        elif index in wanted:
            frames_by_index[index] = prepare_frame(frame, image_size)
    if unreadable:
        raise ClipRefused(f"unreadable frame images: {len(unreadable)} of {last - first + 1}, "
                          f"first {unreadable[0]!r}")
    return frames_by_index


def check_long_enough(usable: int, min_frames: int) -> None:
    """Refuse a clip shorter than `min_frames` (sample.min_frames); longer ones repeat frames when short."""
    if usable < min_frames:
        raise ClipRefused(f"too short: {usable} frames, need at least {min_frames} (sample.min_frames)")


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


def decode_selected_frames(path: Path, expected_count: int, seq_len: int, image_size: int,
                           frame_range: tuple[int, int] | None) -> tuple[int, dict[int, np.ndarray]]:
    """Walk the whole stream once; decode and preprocess only the frames sampling needs.

    `grab()` every frame and `retrieve()` only the wanted ones: measured here at
    about half the cost of seeking, and it also counts the frames truly decodable.
    Returns (decodable frame count, {index: prepared RGB frame}).
    """
    wanted: set[int] = set()
    if expected_count > 0:
        try:
            first, last, _ = resolve_frame_range(frame_range, expected_count)
            wanted = set((first + sample_indices(last - first + 1, seq_len)).tolist())
        except ClipRefused:
            pass  # the header may be wrong: the caller decides once the true count is known
    capture = cv2.VideoCapture(str(path))
    frames_by_index: dict[int, np.ndarray] = {}
    count = 0
    try:
        while capture.grab():
            if count in wanted:
                ok, frame = capture.retrieve()
                if not ok or frame is None:
                    break  # a frame that cannot be decoded ends the usable part of the clip
                frames_by_index[count] = prepare_frame(frame, image_size)
            count += 1
    finally:
        capture.release()
    if count == 0:
        raise ClipRefused("no decodable frames: truncated, corrupt, or an unsupported codec")
    return count, frames_by_index


def iterate_video_frames(path: str | Path) -> Iterator[tuple[float, np.ndarray]]:
    """Every decodable frame of a video as (timestamp in seconds, BGR frame), like a camera would give.

    Timestamps come from the frame index and the container's fps (25 when unknown),
    so a file can drive the live streaming path exactly as a webcam does.
    """
    path = Path(path)
    check_file_not_empty(path)
    _, fps = read_header(path)
    fps = fps or 25.0
    capture = cv2.VideoCapture(str(path))
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok or frame is None:
                break
            yield index / fps, frame
            index += 1
    finally:
        capture.release()
