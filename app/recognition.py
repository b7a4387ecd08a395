"""Clips through the shared model: uploaded bytes or files on disk -> top-k and the frames it saw.

Usage:
    from app.recognition import recognise_video_bytes, upload_problem
    problem = upload_problem("clip.mp4", size_bytes, max_upload_mb=50)   # None when acceptable
    result = recognise_video_bytes(shared, "clip.mp4", data, min_frames=8, top_k=3)
    result.prediction.top, result.frames      # [(sign, probability)], (seq_len, H, W, 3) uint8 RGB

Sampling, preprocessing and the model are the library's (the two steps of
`stages.lib.served.predict_video`), so an uploaded clip is seen exactly as the
training clips were.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.state import SharedModel
from stages.lib.served import Prediction, classify_frames
from stages.lib.video import VIDEO_EXTENSIONS, ClipRefused, is_video_file, sample_video

ENGINES = {"TFLite (fast)": True, "Keras (reference graph)": False}   # label -> predict_video(fast=...)


@dataclass(frozen=True)
class Recognition:
    prediction: Prediction | None     # None when the clip was refused
    frames: np.ndarray | None         # (seq_len, H, W, 3) uint8 RGB: what the model saw
    problem: str = ""                 # why the clip was refused, for the user


def accepted_extensions() -> list[str]:
    """The video types the library reads, without dots (for st.file_uploader)."""
    return sorted(extension.lstrip(".") for extension in VIDEO_EXTENSIONS)


def upload_problem(file_name: str, size_bytes: int, max_upload_mb: int) -> str | None:
    """Why an upload cannot be used before decoding it (wrong type, too big); None when fine."""
    if not is_video_file(file_name):
        return (f"`{file_name}` is not a video type this app reads; "
                f"use one of: {', '.join(accepted_extensions())}.")
    if size_bytes > max_upload_mb * 1024 * 1024:
        return (f"`{file_name}` is {size_bytes / 2**20:.1f} MB; the limit is {max_upload_mb} MB "
                "(params.yaml `app.max_upload_mb`).")
    if size_bytes == 0:
        return f"`{file_name}` is empty (0 bytes)."
    return None


def recognise_video_file(shared: SharedModel, video_path: str | Path, min_frames: int, top_k: int,
                         fast: bool = True) -> Recognition:
    """A clip on disk through the model; a refused clip gives its reason, never an exception.

    `predict_video`'s two steps (sample, classify), so that only the model call holds the shared lock:
    decoding a long upload must not stall the webcam streams of other sessions
    (streamlit-webrtc gives up on a frame callback after 10 s).
    """
    bundle = shared.bundle
    try:
        clip = sample_video(video_path, bundle.seq_len, bundle.image_size, min_frames=min_frames)
        with shared.lock:  # the bundle's interpreters and graph serve one thread at a time
            prediction = classify_frames(bundle, clip.frames, top_k, fast)
    except ClipRefused as refusal:
        return Recognition(None, None, f"This clip cannot be used: {refusal}.")
    except Exception as error:  # a decoder error the library did not foresee: still no traceback
        return Recognition(None, None, f"This clip could not be read ({type(error).__name__}: {error}).")
    return Recognition(prediction, clip.frames)


def recognise_video_bytes(shared: SharedModel, file_name: str, data: bytes, min_frames: int, top_k: int,
                          fast: bool = True) -> Recognition:
    """Uploaded bytes through the model, via a temporary file (OpenCV decodes files, not buffers)."""
    suffix = Path(file_name).suffix.lower()
    handle, temporary_path = tempfile.mkstemp(suffix=suffix, prefix="signlang-upload-")
    try:
        with os.fdopen(handle, "wb") as temporary_file:
            temporary_file.write(data)
        return recognise_video_file(shared, temporary_path, min_frames, top_k, fast)
    finally:
        os.unlink(temporary_path)
