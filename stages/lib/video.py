"""The one home of frame preprocessing: reading, colour order, resizing, temporal sampling.

Usage:
    from stages.lib.video import sample_video, prepare_frame
    clip = sample_video("data/synthetic/wave/s00_r0.mp4", seq_len=20, image_size=224)
    clip.frames            # (seq_len, 224, 224, 3) uint8, RGB
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
  short clip is a slowed-down clip and every path sees full sequences.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm"})
RESIZE_INTERPOLATION = cv2.INTER_AREA
COLOR_ORDER = "RGB"
PREPROCESSING_DESCRIPTION = (
    "frames sampled evenly over the clip duration (centre of seq_len equal slices, "
    "short clips repeat frames); letterboxed to square with black; resized with "
    "cv2.INTER_AREA; RGB uint8"
)


class ClipRefused(Exception):
    """A clip that cannot be used; the message is the human-readable reason for the manifest."""


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
    first, last = clamp_frame_range(frame_range, decodable_count)
    usable = last - first + 1
    if usable < min_frames:
        raise ClipRefused(f"too short: {usable} frames, need at least {min_frames} (sample.min_frames)")
    wanted = first + sample_indices(usable, seq_len)
    if any(index not in frames_by_index for index in wanted):
        # The header's frame count was wrong, so the first pass picked other frames:
        # decode again now that the true count is known.
        _, frames_by_index = decode_selected_frames(path, decodable_count, seq_len, image_size, frame_range)
    frames = np.stack([frames_by_index[index] for index in wanted])  # (seq_len, H, W, 3)
    return SampledClip(frames=frames, num_frames=usable, fps=fps, note=note)


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
            raise ClipRefused("cannot open as video: not a video file or an unsupported codec")
        header_count = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        capture.release()
    return header_count, fps if np.isfinite(fps) and fps > 0 else 0.0


def clamp_frame_range(frame_range: tuple[int, int] | None, num_frames: int) -> tuple[int, int]:
    """(first, last) inclusive inside [0, num_frames - 1]; the whole clip when no range."""
    if frame_range is None:
        return 0, num_frames - 1
    first = max(0, int(frame_range[0]))
    last = num_frames - 1 if frame_range[1] is None or frame_range[1] < 0 else min(int(frame_range[1]), num_frames - 1)
    return first, last


def decode_selected_frames(path: Path, expected_count: int, seq_len: int, image_size: int,
                           frame_range: tuple[int, int] | None) -> tuple[int, dict[int, np.ndarray]]:
    """Walk the whole stream once; decode and preprocess only the frames sampling needs.

    `grab()` every frame and `retrieve()` only the wanted ones: measured here at
    about half the cost of seeking, and it also counts the frames truly decodable.
    Returns (decodable frame count, {index: prepared RGB frame}).
    """
    wanted: set[int] = set()
    if expected_count > 0:
        first, last = clamp_frame_range(frame_range, expected_count)
        if last >= first:
            wanted = set((first + sample_indices(last - first + 1, seq_len)).tolist())
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
