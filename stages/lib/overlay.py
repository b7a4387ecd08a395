"""Draw a recognised sign and its confidence on a video frame: the live app and the webcam CLI share it.

Usage:
    from stages.lib.overlay import draw_prediction_band
    shown = draw_prediction_band(frame_bgr, "wave", share=0.83, colour_bgr=(80, 200, 80), tick=0.5)
"""
from __future__ import annotations

import cv2
import numpy as np


def draw_prediction_band(frame_bgr: np.ndarray, text: str, share: float, colour_bgr: tuple[int, int, int],
                         tick: float | None = None) -> np.ndarray:
    """A copy of the frame with `text` and a bar filled to `share` on a darkened band at its top.

    `tick` (0..1), when given, marks a position on the bar (the app's confidence threshold).
    OpenCV's fonts are ASCII only, so `text` must be too.
    """
    annotated = frame_bgr.copy()
    height, width = annotated.shape[:2]
    band_height = max(int(height * 0.16), 28)
    scale = max(width / 640.0, 0.4)                           # text size follows the frame size
    annotated[:band_height] = (annotated[:band_height] * 0.35).astype(np.uint8)
    cv2.putText(annotated, text, (int(10 * scale), int(band_height * 0.55)), cv2.FONT_HERSHEY_SIMPLEX,
                0.9 * scale, (255, 255, 255), max(int(2 * scale), 1), cv2.LINE_AA)
    bar_top, bar_bottom = int(band_height * 0.72), int(band_height * 0.9)
    bar_left, bar_right = int(10 * scale), width - int(10 * scale)
    cv2.rectangle(annotated, (bar_left, bar_top), (bar_right, bar_bottom), (90, 90, 90), -1)
    filled_right = bar_left + int((bar_right - bar_left) * min(max(share, 0.0), 1.0))
    cv2.rectangle(annotated, (bar_left, bar_top), (filled_right, bar_bottom), colour_bgr, -1)
    if tick is not None:
        position = bar_left + int((bar_right - bar_left) * tick)
        cv2.line(annotated, (position, bar_top - 3), (position, bar_bottom + 3), (255, 255, 255), 1)
    return annotated
