"""Clips through the shared model: uploaded bytes or files on disk -> top-k, the signs made, the frames seen.

Usage:
    from app.recognition import recognise_video_bytes, upload_problem
    problem = upload_problem("clip.mp4", size_bytes, max_upload_mb=50)   # None when acceptable
    result = recognise_video_bytes(shared, "clip.mp4", data, top_k=3, spotting=default_spotting())
    result.prediction.top, result.signs, result.frames   # centred window's top-k, signs made, sampled frames

Sampling, preprocessing and the model are the library's: the clip is sampled
with the model card's rule (rate, minimum frames, longest clip: exactly what
the sample stage refuses is refused here), its centred window classified
(`stages.lib.served.classify_clip_frames`), and its frames pushed through the
live path and the sign spotter, one clock tick each, for the signs in a
longer video.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.state import SharedModel
from stages.lib.served import Prediction, ServedBundle, classify_clip_frames
from stages.lib.streaming import SignSpotter, SpottedSign, SpottingSettings, StreamingRecognizer, spot_held_end
from stages.lib.video import VIDEO_EXTENSIONS, ClipRefused, is_video_file, sample_video

ENGINES = {"TFLite (fast)": True, "Keras (reference graph)": False}   # label -> classify_clip_frames(fast=...)


@dataclass(frozen=True)
class Recognition:
    prediction: Prediction | None     # the centred window's; None when the clip was refused
    frames: np.ndarray | None         # (sampled frames, H, W, 3) uint8 RGB at the model's rate: what it saw
    signs: list[SpottedSign] = field(default_factory=list)   # the signs made, as the live path spots them
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


def spot_sampled_frames(bundle: ServedBundle, frames: np.ndarray, spotting: SpottingSettings) -> list[SpottedSign]:
    """The live path over frames already at the model's rate (one clock tick each), then the spotter."""
    recognizer = StreamingRecognizer(bundle)
    spotter = SignSpotter(bundle.labels, bundle.no_sign_label, spotting, bundle.window_seconds)
    for index, frame in enumerate(frames):
        recognizer.push_prepared_frame(frame)
        if recognizer.stepped:
            spotter.update_from(recognizer, index / bundle.sample_fps)
    if len(frames):
        spot_held_end(recognizer, spotter, (len(frames) - 1) / bundle.sample_fps)   # as --mode signs ends a file
    return spotter.finish()


def recognise_video_file(shared: SharedModel, video_path: str | Path, top_k: int, spotting: SpottingSettings,
                         fast: bool = True) -> Recognition:
    """A clip on disk through the model; a refused clip gives its reason, never an exception.

    Sampling happens outside the shared lock and only the model calls hold it:
    decoding a long upload must not stall the webcam streams of other sessions
    (streamlit-webrtc gives up on a frame callback after 10 s).
    """
    bundle = shared.bundle
    try:
        clip = sample_video(video_path, bundle.sampling)
        with shared.lock:  # the bundle's interpreters and graph serve one thread at a time
            prediction = classify_clip_frames(bundle, clip.frames, top_k, fast)
            signs = spot_sampled_frames(bundle, clip.frames, spotting)
    except ClipRefused as refusal:
        return Recognition(None, None, problem=f"This clip cannot be used: {refusal}.")
    except Exception as error:  # a decoder error the library did not foresee: still no traceback
        return Recognition(None, None, problem=f"This clip could not be read ({type(error).__name__}: {error}).")
    return Recognition(prediction, clip.frames, signs)


def recognise_video_bytes(shared: SharedModel, file_name: str, data: bytes, top_k: int, spotting: SpottingSettings,
                          fast: bool = True) -> Recognition:
    """Uploaded bytes through the model, via a temporary file (OpenCV decodes files, not buffers)."""
    suffix = Path(file_name).suffix.lower()
    handle, temporary_path = tempfile.mkstemp(suffix=suffix, prefix="signlang-upload-")
    try:
        with os.fdopen(handle, "wb") as temporary_file:
            temporary_file.write(data)
        return recognise_video_file(shared, temporary_path, top_k, spotting, fast)
    finally:
        os.unlink(temporary_path)
