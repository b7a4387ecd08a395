"""Classify a video file, or a webcam live, with the served model.

Usage:
    python -m stages.infer VIDEO                       # top-3 of the whole clip (full Keras graph)
    python -m stages.infer VIDEO --mode stream --json  # the live path fed from a file, as JSON
    python -m stages.infer --webcam 0                  # live on camera 0 (OpenCV window if there is one)

`--mode clip` samples the clip exactly as training did and runs the full graph;
`--mode stream` pushes every frame through the streaming recognizer (frames
enter at the training sampling rate, ring buffer, head) and reports its last
prediction: what the webcam demo would show at the end of the clip.
JSON output: {"label": ..., "top": [[label, prob], ...], "probs": {label: prob}}.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import cv2
import numpy as np

from stages.lib.overlay import draw_prediction_band
from stages.lib.served import Prediction, load_bundle, predict_video
from stages.lib.streaming import StreamingRecognizer
from stages.lib.video import ClipRefused, iterate_video_frames

WINDOW_NAME = "sign recognition (q to quit)"


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Classify a sign video or a live webcam.")
    parser.add_argument("video", nargs="?", help="video file to classify")
    parser.add_argument("--model", default="models/model.keras", help="served model (its card sits beside it)")
    parser.add_argument("--mode", choices=("clip", "stream"), default="clip")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--webcam", nargs="?", type=int, const=0, metavar="INDEX", help="live camera index")
    arguments = parser.parse_args(argv)
    if (arguments.video is None) == (arguments.webcam is None):
        parser.error("give either a VIDEO or --webcam [INDEX]")
    return arguments


def stream_video_file(recognizer: StreamingRecognizer, path: str) -> Prediction:
    """Feed a file frame by frame, with its own timestamps, through the live path."""
    prediction = None
    for timestamp, frame in iterate_video_frames(path):
        prediction = recognizer.push_camera_frame(frame, timestamp) or prediction
    if prediction is None:
        raise ClipRefused(f"too short for the live path: fewer than {recognizer.bundle.seq_len} frames "
                          f"at {recognizer.bundle.sample_fps:.1f} frames/s")
    return prediction


def format_prediction(prediction: Prediction) -> str:
    return "\n".join(f"{rank}. {label:<28s} {probability:6.1%}"
                     for rank, (label, probability) in enumerate(prediction.top, start=1))


def draw_overlay(frame: np.ndarray, prediction: Prediction | None, fill: float) -> np.ndarray:
    """Top prediction and its confidence bar on a BGR frame (or the buffer's fill while warming up)."""
    if prediction is None:
        return draw_prediction_band(frame, f"listening... {fill:.0%}", fill, (200, 200, 200))
    label, probability = prediction.top[0]
    return draw_prediction_band(frame, f"{label} {probability:.0%}", probability, (80, 200, 80))


def run_webcam(recognizer: StreamingRecognizer, index: int) -> None:
    """Live loop on a local camera; prints to the terminal when OpenCV has no GUI (headless build)."""
    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        raise SystemExit(f"cannot open camera {index}")
    has_window = True
    last_label = None
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            prediction = recognizer.push_camera_frame(frame, time.monotonic())
            if has_window:
                try:
                    cv2.imshow(WINDOW_NAME, draw_overlay(frame, prediction, recognizer.buffer_fill))
                    if cv2.waitKey(1) & 0xFF == ord("q"):
                        break
                except cv2.error:
                    has_window = False  # opencv-python-headless: no GUI, fall back to the terminal
                    print("no OpenCV window available (headless build); printing predictions, Ctrl+C to stop")
            if prediction and prediction.label != last_label:
                last_label = prediction.label
                print(f"{time.strftime('%H:%M:%S')}  {prediction.label}  {prediction.top[0][1]:.0%}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        capture.release()


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    try:
        bundle = load_bundle(arguments.model)
    except FileNotFoundError as error:
        raise SystemExit(str(error)) from None
    recognizer = StreamingRecognizer(bundle, top_k=arguments.top_k)
    if arguments.webcam is not None:
        run_webcam(recognizer, arguments.webcam)
        return
    try:
        if arguments.mode == "clip":
            prediction, _ = predict_video(bundle, arguments.video, top_k=arguments.top_k)
        else:
            prediction = stream_video_file(recognizer, arguments.video)
    except ClipRefused as refusal:
        raise SystemExit(f"{arguments.video}: {refusal}") from None
    print(json.dumps(prediction.as_json()) if arguments.json else format_prediction(prediction))


if __name__ == "__main__":
    main(sys.argv[1:])
