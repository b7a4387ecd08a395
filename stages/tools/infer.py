"""Recognise signs in a video file, or live on a webcam, with the served model.

Usage:
    python -m stages.tools.infer VIDEO                 # top-3 of the clip's centred window (one isolated sign)
    python -m stages.tools.infer VIDEO --mode signs    # the signs made in the video, in order, with their times
    python -m stages.tools.infer VIDEO --mode signs --json   # ... as {"signs": [{"sign", "start", "end", ...}]}
    python -m stages.tools.infer VIDEO --mode stream --json  # the live path fed from a file: its last prediction
    python -m stages.tools.infer --webcam 0            # live on camera 0: prints each sign as it is made

`--mode clip` samples the clip exactly as training did (the card's sampling
rule, so the CLI refuses what the pipeline refuses) and classifies its
centred window with the full graph. `--mode signs` and `--webcam` push every
frame through the live path (stages/lib/streaming.py: frames at the training
rate, ring buffer, head) and its sign spotter, with the model's spotting
settings (params.yaml's, with the threshold the calibrate stage kept for it; the
flags override them); the no-sign state is never listed. `--mode
stream` reports the live path's last prediction, what the webcam demo would
show at the end of the clip. With --json, the last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from stages.lib.overlay import draw_prediction_band
from stages.lib.served import Prediction, ServedBundle, load_bundle, predict_video
from stages.lib.streaming import (
    SignSpotter,
    SpottedSign,
    SpottingSettings,
    StreamingRecognizer,
    default_spotting,
    model_spotting,
    spot_held_end,
)
from stages.lib.video import ClipRefused, iterate_video_frames

WINDOW_NAME = "sign recognition (q to quit)"


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Recognise signs in a video file or a live webcam.")
    parser.add_argument("video", nargs="?", help="video file")
    parser.add_argument("--model", default="models/model.keras", help="served model (its card sits beside it)")
    parser.add_argument("--mode", choices=("clip", "signs", "stream"), default="clip")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--webcam", nargs="?", type=int, const=0, metavar="INDEX", help="live camera index")
    # Unset flags keep the model's own settings (its <name>.spotting.json, calibrated), else params.yaml's.
    parser.add_argument("--threshold", type=float, help="spotting: probability a sign must reach "
                        "(default: the model's calibrated threshold)")
    parser.add_argument("--min-hold", type=float, help="spotting: seconds a sign must hold before it is emitted")
    parser.add_argument("--smoothing", type=int, help="spotting: model steps averaged")
    parser.add_argument("--release", type=float,
                        help="spotting: seconds without a sign before the same sign may be emitted again")
    arguments = parser.parse_args(argv)
    if (arguments.video is None) == (arguments.webcam is None):
        parser.error("give either a VIDEO or --webcam [INDEX]")
    return arguments


def spotting_settings(bundle: ServedBundle, arguments: argparse.Namespace) -> SpottingSettings:
    """The model's spotting settings (stages.lib.streaming.model_spotting), with the flags given on top."""
    settings = model_spotting(bundle, default_spotting())
    given = {"threshold": arguments.threshold, "min_hold_seconds": arguments.min_hold,
             "smoothing_steps": arguments.smoothing, "release_seconds": arguments.release}
    return replace(settings, **{name: value for name, value in given.items() if value is not None})


def make_spotter(bundle: ServedBundle, settings: SpottingSettings) -> SignSpotter:
    return SignSpotter(bundle.labels, bundle.no_sign_label, settings, bundle.window_seconds)


def spot_video_file(bundle: ServedBundle, path: str, settings: SpottingSettings) -> list[SpottedSign]:
    """Feed a file frame by frame, with its own timestamps, through the live path and the spotter, then its
    last frame held for a window (a sign that ends with the file is still spotted)."""
    recognizer, spotter = StreamingRecognizer(bundle), make_spotter(bundle, settings)
    timestamp = None
    for timestamp, frame in iterate_video_frames(path, bundle.sampling.max_seconds):
        recognizer.push_camera_frame(frame, timestamp)
        if recognizer.stepped:
            spotter.update_from(recognizer, timestamp)
    if timestamp is not None:
        spot_held_end(recognizer, spotter, timestamp)
    return spotter.finish()


def stream_video_file(recognizer: StreamingRecognizer, path: str) -> Prediction:
    """Feed a file frame by frame through the live path; its last prediction."""
    prediction = None
    for timestamp, frame in iterate_video_frames(path, recognizer.bundle.sampling.max_seconds):
        prediction = recognizer.push_camera_frame(frame, timestamp) or prediction
    if prediction is None:
        bundle = recognizer.bundle
        frames = recognizer.predict_from_frames
        raise ClipRefused(f"too short for the live path: fewer than {frames} frames "
                          f"at {bundle.sample_fps:g} frames/s ({frames / bundle.sample_fps:.1f} s)")
    return prediction


def format_prediction(prediction: Prediction) -> str:
    return "\n".join(f"{rank}. {label:<28s} {probability:6.1%}"
                     for rank, (label, probability) in enumerate(prediction.top, start=1))


def format_signs(signs: list[SpottedSign]) -> str:
    if not signs:
        return "no sign recognised"
    return "\n".join(f"{index}. {sign.sign:<24s} {sign.start:6.2f}-{sign.end:6.2f} s  {sign.confidence:5.0%}"
                     for index, sign in enumerate(signs, start=1))


def draw_overlay(frame: np.ndarray, prediction: Prediction | None, fill: float) -> np.ndarray:
    """Top prediction and its confidence bar on a BGR frame (or the buffer's fill while warming up)."""
    if prediction is None:
        return draw_prediction_band(frame, f"listening... {fill:.0%}", fill, (200, 200, 200))
    label, probability = prediction.top[0]
    return draw_prediction_band(frame, f"{label} {probability:.0%}", probability, (80, 200, 80))


def run_webcam(bundle: ServedBundle, index: int, settings: SpottingSettings, top_k: int) -> None:
    """Live loop on a local camera: each sign printed as it is emitted; a window when OpenCV has a GUI."""
    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        raise SystemExit(f"cannot open camera {index}")
    recognizer, spotter = StreamingRecognizer(bundle, top_k=top_k), make_spotter(bundle, settings)
    has_window, started = True, time.monotonic()
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            timestamp = time.monotonic() - started
            prediction = recognizer.push_camera_frame(frame, timestamp)
            if recognizer.stepped:
                for sign in spotter.update_from(recognizer, timestamp):
                    print(f"{time.strftime('%H:%M:%S')}  {sign.sign}  ({sign.confidence:.0%}, "
                          f"from {sign.start:.1f} s)", flush=True)
            if has_window:
                try:
                    cv2.imshow(WINDOW_NAME, draw_overlay(frame, prediction, recognizer.buffer_fill))
                    if cv2.waitKey(1) & 0xFF == ord("q"):
                        break
                except cv2.error:
                    has_window = False  # opencv-python-headless: no GUI, fall back to the terminal
                    print("no OpenCV window available (headless build); printing signs, Ctrl+C to stop")
    except KeyboardInterrupt:
        pass
    finally:
        capture.release()


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    try:
        bundle = load_bundle(arguments.model)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(str(error)) from None
    settings = spotting_settings(bundle, arguments)
    if arguments.webcam is not None:
        run_webcam(bundle, arguments.webcam, settings, arguments.top_k)
        return
    if not Path(arguments.video).exists():
        raise SystemExit(f"{arguments.video}: file not found")
    try:
        if arguments.mode == "signs":
            signs = spot_video_file(bundle, arguments.video, settings)
            print(json.dumps({"signs": [sign.as_json() for sign in signs]}) if arguments.json else format_signs(signs))
            return
        if arguments.mode == "clip":
            prediction, _ = predict_video(bundle, arguments.video, top_k=arguments.top_k)
        else:
            prediction = stream_video_file(StreamingRecognizer(bundle, top_k=arguments.top_k), arguments.video)
    except ClipRefused as refusal:
        raise SystemExit(f"{arguments.video}: {refusal}") from None
    print(json.dumps(prediction.as_json()) if arguments.json else format_prediction(prediction))


if __name__ == "__main__":
    main(sys.argv[1:])
