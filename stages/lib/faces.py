"""Where the signer is: a face detector, and the signing space (upper body, arms' reach) it implies.

Usage:
    from stages.lib.faces import find_face, signing_space_of_clip
    face = find_face(frame_bgr)                        # (x, y, w, h) in pixels of that frame, or None
    box = signing_space_of_clip(frames_bgr)            # CropBox for the clip, or None (then: whole frame)

Signing happens in front of the upper body, within arms' reach of the face,
so the crop follows the person, not the motion: the same framing whatever sign
is made (a crop fitted to each sign's motion would tell the model the sign's
size by its zoom). The face detector is MTCNN from the MIT-licensed `mtcnn`
package, whose weights ship inside its PyPI wheel (it runs on TensorFlow,
offline). OpenCV 5's wheel has neither Haar cascades nor a face model file.

A face is looked for on a few frames of a clip (a signing hand often covers
the face mid-sign), and the clip's box is the median of those found; with no
face in any, the clip keeps the whole frame (letterboxed), and the manifest
says so. The live path uses the same box rule on recent camera frames.
"""
from __future__ import annotations

from collections import deque
from functools import lru_cache

import numpy as np

from stages.lib.sampling import CropBox

DETECTION_LONG_SIDE = 320        # faces are found on a copy this size: 3x faster, faces stay >= 20 px
MIN_FACE_SHARE = 0.06            # of the frame's height: smaller faces are people in the background
MIN_CONFIDENCE = 0.9
PROBE_FRAMES = 4                 # frames of a clip searched for a face, spread over its length, at most
FACES_ENOUGH = 2                 # ... stopping once this many are found (a search costs ~0.1 s)
LIVE_SEARCH_SECONDS = 1.0        # live: a face search every this much stream time (~0.1 s of compute each)
LIVE_RECENT_FACES = 5            # live: the box is the median of this many most recent faces
# The signing space in face heights (h), from the face's centre: from 1.6 h above it (the top of the
# head and a hand raised over it) down to about the waist, as wide as it is tall (elbows out).
SPACE_ABOVE_FACE_CENTRE = 1.6
SPACE_SIDE_IN_FACE_HEIGHTS = 6.0


@lru_cache(maxsize=1)
def face_detector():
    """One MTCNN per process (its TensorFlow graph loads once)."""
    from mtcnn import MTCNN
    return MTCNN(device="CPU:0")


def find_face(frame_bgr: np.ndarray) -> tuple[float, float, float, float] | None:
    """The most confident large-enough face in a BGR frame as (x, y, w, h) in its pixels; None if none."""
    import cv2
    height, width = frame_bgr.shape[:2]
    scale = min(1.0, DETECTION_LONG_SIDE / max(height, width))
    small = cv2.resize(frame_bgr, (int(round(width * scale)), int(round(height * scale))),
                       interpolation=cv2.INTER_AREA) if scale < 1.0 else frame_bgr
    rgb = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
    minimum = max(12, int(MIN_FACE_SHARE * small.shape[0]))
    faces = [face for face in face_detector().detect_faces(rgb, min_face_size=minimum)
             if face["confidence"] >= MIN_CONFIDENCE]
    if not faces:
        return None
    best = max(faces, key=lambda face: face["confidence"] * face["box"][2] * face["box"][3])
    x, y, w, h = best["box"]
    return x / scale, y / scale, w / scale, h / scale


def signing_space(face: tuple[float, float, float, float], frame_width: int, frame_height: int) -> CropBox:
    """The square region in front of the signer's upper body, from their face box (same pixels).

    Kept inside the frame where it fits: a signer who already fills the frame
    gets the frame's largest square around them, not black bars beyond it.
    """
    x, y, w, h = face
    centre_x, centre_y = x + w / 2.0, y + h / 2.0
    side = min(SPACE_SIDE_IN_FACE_HEIGHTS * h, float(max(frame_width, frame_height)))
    left = keep_inside(centre_x - side / 2.0, side, frame_width)
    top = keep_inside(centre_y - SPACE_ABOVE_FACE_CENTRE * h, side, frame_height)
    return CropBox(left=left, top=top, side=side)


def keep_inside(start: float, side: float, extent: int) -> float:
    """Shift a span [start, start + side) into [0, extent); a span longer than the extent is centred on it."""
    if side >= extent:
        return (extent - side) / 2.0
    return min(max(start, 0.0), extent - side)


def median_box(boxes: list[CropBox]) -> CropBox:
    return CropBox(float(np.median([box.left for box in boxes])), float(np.median([box.top for box in boxes])),
                   float(np.median([box.side for box in boxes])))


def signing_space_of_clip(frames_bgr: list[np.ndarray]) -> CropBox | None:
    """The clip's signing space: the median over the faces found in up to PROBE_FRAMES of its frames.

    The first and last frames go first: before and after a sign the hands are
    down and the face is free.
    """
    if not frames_bgr:
        return None
    spread = np.linspace(0, len(frames_bgr) - 1, PROBE_FRAMES).round().astype(int).tolist()
    probes = list(dict.fromkeys([spread[0], spread[-1]] + spread[1:-1]))
    height, width = frames_bgr[0].shape[:2]
    boxes: list[CropBox] = []
    for index in probes:
        face = find_face(frames_bgr[index])
        if face is not None:
            boxes.append(signing_space(face, width, height))
            if len(boxes) >= FACES_ENOUGH:
                break
    return median_box(boxes) if boxes else None


class SigningSpaceTracker:
    """The live path's crop: the median signing space of the last few faces, searched now and then.

    The same box rule as a clip's (median over several faces), on camera
    frames already through `reduce_frame`. Until a face is found the box is
    None (the whole frame); a face lost for a while keeps the last box, since
    a signing hand often covers the face.
    """

    def __init__(self, search_every_seconds: float = LIVE_SEARCH_SECONDS):
        self.search_every_seconds = search_every_seconds
        self.recent: deque[CropBox] = deque(maxlen=LIVE_RECENT_FACES)
        self.reset()

    def reset(self) -> None:
        """Forget the faces seen: a new person, or a restarted camera, gets a box of their own."""
        self.recent.clear()
        self.next_search: float | None = None
        self.box: CropBox | None = None

    def update(self, reduced_bgr: np.ndarray, timestamp: float) -> CropBox | None:
        if self.next_search is None or timestamp >= self.next_search:
            self.next_search = timestamp + self.search_every_seconds
            face = find_face(reduced_bgr)
            if face is not None:
                self.recent.append(signing_space(face, reduced_bgr.shape[1], reduced_bgr.shape[0]))
                self.box = median_box(list(self.recent))
        return self.box
