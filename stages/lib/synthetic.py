"""A built-in sign vocabulary performed by drawn signers: a real, if simple, recognition problem.

Usage:
    from stages.lib.synthetic import SIGNS, make_signer, render_clip
    signer = make_signer(signer_index=3, seed=42, width=320, height=240)
    frames = render_clip(SIGNS[0], signer, repetition=0, seed=42, fps=25, seconds=2.0)
    frames.shape            # (num_frames, 240, 320, 3) uint8, BGR (what cv2.VideoWriter takes)

Each sign is a path of the dominant hand (and sometimes the other hand) through
body space plus hand-shape changes over time. Three pairs of signs are the same
motion played in opposite time order (circle clockwise / counter-clockwise,
raise / lower, swipe right / left), so a model that ignores frame order cannot
tell them apart. Signers differ in skin tone, clothing, body size, position in
frame, speed (+-30 %), background and noise.

Body space: origin at the neck, x to the viewer's right, y down, one unit is
about the length of an arm from shoulder to elbow doubled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

# Hand shapes drawn at the hand: open palm (five fingers), fist, pointing index, V.
HAND_SHAPES = ("open", "fist", "point", "vee")

Point = tuple[float, float]
# A sign's pose at normalised time t in [0, 1]:
# ((dominant hand xy, shape), (other hand xy or None for rest, shape))
Pose = tuple[tuple[Point, str], tuple[Point | None, str]]

REST_DOMINANT: Point = (-0.40, 0.95)
REST_OTHER: Point = (0.40, 0.95)
SHOULDER_DOMINANT: Point = (-0.32, 0.05)
SHOULDER_OTHER: Point = (0.32, 0.05)
UPPER_ARM = 0.48
FOREARM = 0.46


@dataclass(frozen=True)
class Sign:
    name: str
    pose_at: Callable[[float], Pose]   # t in [0, 1] -> Pose


@dataclass(frozen=True)
class Signer:
    index: int
    skin_bgr: tuple[int, int, int]
    shirt_bgr: tuple[int, int, int]
    background_bgr: tuple[int, int, int]
    background_pattern: str          # "plain" | "gradient" | "stripes"
    scale: float                     # pixels per body unit
    centre_x: float                  # neck position in pixels
    centre_y: float
    speed: float                     # > 1 signs faster (shorter clips)
    noise_sigma: float               # additive Gaussian pixel noise
    width: int
    height: int


def smooth_step(value: float) -> float:
    """Ease in and out, so hands accelerate and slow down like real movement."""
    value = min(max(value, 0.0), 1.0)
    return value * value * (3.0 - 2.0 * value)


def along_keyframes(keyframes: list[Point], t: float) -> Point:
    """Position on a polyline of keyframes at normalised time t, eased between keyframes."""
    segments = len(keyframes) - 1
    position = min(max(t, 0.0), 1.0) * segments
    index = min(int(position), segments - 1)
    local = smooth_step(position - index)
    (x0, y0), (x1, y1) = keyframes[index], keyframes[index + 1]
    return (x0 + (x1 - x0) * local, y0 + (y1 - y0) * local)


def shape_schedule(shapes: list[str], t: float) -> str:
    """Hand shape at time t when the shape changes in equal time steps through `shapes`."""
    return shapes[min(int(t * len(shapes)), len(shapes) - 1)]


def one_hand(path: Callable[[float], Point], shapes: list[str]) -> Callable[[float], Pose]:
    return lambda t: ((path(t), shape_schedule(shapes, t)), (None, "fist"))


def circle_clockwise(t: float) -> Pose:
    """One and a half turns around the chest; y points down, so a growing angle turns clockwise on screen."""
    centre, radius, turns = (-0.05, 0.40), 0.30, 1.5
    angle = -math.pi / 2 + 2 * math.pi * turns * t
    hand = (centre[0] + radius * math.cos(angle), centre[1] + radius * math.sin(angle))
    return ((hand, "open"), (None, "fist"))


def reversed_in_time(sign_pose: Callable[[float], Pose]) -> Callable[[float], Pose]:
    """The same motion played backwards: what makes frame order necessary."""
    return lambda t: sign_pose(1.0 - t)


def raise_hand(t: float) -> Pose:
    return one_hand(lambda s: along_keyframes([(-0.15, 0.85), (-0.15, 0.35), (-0.05, -0.55)], s),
                    ["fist", "fist", "open"])(t)


def swipe_right(t: float) -> Pose:
    return one_hand(lambda s: along_keyframes([(-0.75, 0.05), (-0.25, 0.0), (0.45, 0.05)], s),
                    ["point"])(t)


def wave(t: float) -> Pose:
    return one_hand(lambda s: (-0.55 + 0.18 * math.sin(2 * math.pi * 3 * s), -0.35), ["open"])(t)


def clap(t: float) -> Pose:
    gap = 0.08 + 0.30 * (0.5 + 0.5 * math.cos(2 * math.pi * 3 * t))
    return (((-gap, 0.35), "open"), ((gap, 0.35), "open"))


def tap_head(t: float) -> Pose:
    return one_hand(lambda s: (-0.12, -0.62 + 0.08 * abs(math.sin(2 * math.pi * 2 * s))), ["point"])(t)


def chest_pat(t: float) -> Pose:
    return one_hand(lambda s: (0.05, 0.30 + 0.10 * abs(math.sin(2 * math.pi * 2 * s))), ["fist"])(t)


def zigzag(t: float) -> Pose:
    return one_hand(lambda s: along_keyframes(
        [(-0.50, -0.10), (0.10, 0.05), (-0.50, 0.25), (0.10, 0.45), (-0.50, 0.65)], s), ["vee"])(t)


def spread_hands(t: float) -> Pose:
    offset = 0.08 + 0.55 * smooth_step(t)
    shape = "fist" if t < 0.5 else "open"
    return (((-offset, 0.30), shape), ((offset, 0.30), shape))


# The vocabulary, in label order. The generate stage takes the first `generate.classes`.
SIGNS: tuple[Sign, ...] = (
    Sign("circle_clockwise", circle_clockwise),
    Sign("circle_counterclockwise", reversed_in_time(circle_clockwise)),
    Sign("raise_hand", raise_hand),
    Sign("lower_hand", reversed_in_time(raise_hand)),
    Sign("swipe_right", swipe_right),
    Sign("swipe_left", reversed_in_time(swipe_right)),
    Sign("wave", wave),
    Sign("clap", clap),
    Sign("tap_head", tap_head),
    Sign("chest_pat", chest_pat),
    Sign("zigzag", zigzag),
    Sign("spread_hands", spread_hands),
)
TIME_REVERSED_PAIRS = (("circle_clockwise", "circle_counterclockwise"),
                       ("raise_hand", "lower_hand"), ("swipe_right", "swipe_left"))

SKIN_TONES_BGR = [(189, 224, 255), (148, 195, 241), (105, 160, 224), (66, 120, 198),
                  (45, 87, 141), (36, 57, 94), (125, 170, 235), (80, 130, 180)]


def make_signer(signer_index: int, seed: int, width: int, height: int) -> Signer:
    """A synthetic person, fully determined by (seed, signer_index)."""
    rng = np.random.default_rng([seed, 1, signer_index])
    skin = SKIN_TONES_BGR[signer_index % len(SKIN_TONES_BGR)]
    scale = height * 0.42 * rng.uniform(0.85, 1.12)
    return Signer(
        index=signer_index,
        skin_bgr=skin,
        shirt_bgr=tuple(int(c) for c in rng.integers(20, 236, size=3)),
        background_bgr=tuple(int(c) for c in rng.integers(40, 216, size=3)),
        background_pattern=("plain", "gradient", "stripes")[signer_index % 3],
        scale=scale,
        centre_x=width * 0.5 + rng.uniform(-0.12, 0.12) * width,
        centre_y=height * 0.36 + rng.uniform(-0.04, 0.04) * height,
        speed=float(rng.uniform(0.7, 1.3)),
        noise_sigma=float(rng.uniform(0.0, 8.0)),
        width=width,
        height=height,
    )


def draw_background(signer: Signer) -> np.ndarray:
    """(height, width, 3) uint8 BGR background for this signer."""
    canvas = np.empty((signer.height, signer.width, 3), np.uint8)
    canvas[:] = signer.background_bgr
    if signer.background_pattern == "gradient":
        ramp = np.linspace(0.6, 1.2, signer.width, dtype=np.float32)[None, :, None]
        canvas = np.clip(canvas.astype(np.float32) * ramp, 0, 255).astype(np.uint8)
    elif signer.background_pattern == "stripes":
        stripe = max(signer.width // 16, 2)
        darker = tuple(int(c * 0.75) for c in signer.background_bgr)
        for left in range(0, signer.width, 2 * stripe):
            cv2.rectangle(canvas, (left, 0), (left + stripe - 1, signer.height), darker, -1)
    return canvas


def to_pixels(signer: Signer, point: Point) -> tuple[int, int]:
    return (int(round(signer.centre_x + point[0] * signer.scale)),
            int(round(signer.centre_y + point[1] * signer.scale)))


def elbow_position(shoulder: Point, hand: Point, bend_outward: float) -> Point:
    """Two-link arm: where the elbow sits for a hand position (bending away from the body)."""
    dx, dy = hand[0] - shoulder[0], hand[1] - shoulder[1]
    reach = max(min(math.hypot(dx, dy), UPPER_ARM + FOREARM - 1e-3), 1e-3)
    # Law of cosines: angle at the shoulder between the reach line and the upper arm.
    cos_angle = (UPPER_ARM ** 2 + reach ** 2 - FOREARM ** 2) / (2 * UPPER_ARM * reach)
    angle = math.atan2(dy, dx) + bend_outward * math.acos(max(-1.0, min(1.0, cos_angle)))
    return (shoulder[0] + UPPER_ARM * math.cos(angle), shoulder[1] + UPPER_ARM * math.sin(angle))


def draw_hand(canvas: np.ndarray, signer: Signer, hand: Point, elbow: Point, shape: str) -> None:
    """A palm circle plus fingers pointing along the forearm, in the shape's pattern."""
    centre = to_pixels(signer, hand)
    palm_radius = max(int(0.10 * signer.scale), 2)
    direction = math.atan2(hand[1] - elbow[1], hand[0] - elbow[0])
    finger_length = 0.20 * signer.scale
    thickness = max(int(0.035 * signer.scale), 1)
    spreads = {"open": (-0.9, -0.45, 0.0, 0.45, 0.9), "point": (0.0,), "vee": (-0.3, 0.3), "fist": ()}[shape]
    for spread in spreads:
        angle = direction + spread
        tip = (int(centre[0] + finger_length * math.cos(angle)), int(centre[1] + finger_length * math.sin(angle)))
        cv2.line(canvas, centre, tip, signer.skin_bgr, thickness, cv2.LINE_AA)
    radius = int(palm_radius * (1.25 if shape == "fist" else 1.0))
    cv2.circle(canvas, centre, radius, signer.skin_bgr, -1, cv2.LINE_AA)
    if shape == "fist":  # knuckle line so a fist differs from a bare palm beyond its size
        darker = tuple(int(c * 0.6) for c in signer.skin_bgr)
        cv2.circle(canvas, centre, max(radius // 2, 1), darker, thickness, cv2.LINE_AA)


def draw_arm(canvas: np.ndarray, signer: Signer, shoulder: Point, hand: Point, shape: str,
             bend_outward: float) -> None:
    elbow = elbow_position(shoulder, hand, bend_outward)
    sleeve = max(int(0.13 * signer.scale), 2)
    cv2.line(canvas, to_pixels(signer, shoulder), to_pixels(signer, elbow), signer.shirt_bgr, sleeve, cv2.LINE_AA)
    cv2.line(canvas, to_pixels(signer, elbow), to_pixels(signer, hand), signer.skin_bgr,
             max(int(0.09 * signer.scale), 2), cv2.LINE_AA)
    draw_hand(canvas, signer, hand, elbow, shape)


def draw_figure(background: np.ndarray, signer: Signer, pose: Pose) -> np.ndarray:
    """One frame: torso, head, and both arms in the given pose. Returns BGR uint8."""
    canvas = background.copy()
    torso = np.array([to_pixels(signer, p) for p in [(-0.34, 0.0), (0.34, 0.0), (0.26, 1.05), (-0.26, 1.05)]],
                     np.int32)
    cv2.fillConvexPoly(canvas, torso, signer.shirt_bgr, cv2.LINE_AA)
    cv2.circle(canvas, to_pixels(signer, (0.0, -0.30)), int(0.20 * signer.scale), signer.skin_bgr, -1, cv2.LINE_AA)
    (dominant_hand, dominant_shape), (other_hand, other_shape) = pose
    draw_arm(canvas, signer, SHOULDER_OTHER, other_hand or REST_OTHER, other_shape, bend_outward=-1.0)
    draw_arm(canvas, signer, SHOULDER_DOMINANT, dominant_hand, dominant_shape, bend_outward=1.0)
    return canvas


def rest_pose() -> Pose:
    return ((REST_DOMINANT, "fist"), (REST_OTHER, "fist"))


def blend_poses(first: Pose, second: Pose, weight: float) -> Pose:
    """Hands moving from `first` to `second` (weight 0 -> 1); shapes switch half way."""
    def mix(a: Point | None, b: Point | None, rest: Point) -> Point:
        a, b = a or rest, b or rest
        w = smooth_step(weight)
        return (a[0] + (b[0] - a[0]) * w, a[1] + (b[1] - a[1]) * w)
    pick = 0 if weight < 0.5 else 1
    return ((mix(first[0][0], second[0][0], REST_DOMINANT), (first, second)[pick][0][1]),
            (mix(first[1][0], second[1][0], REST_OTHER), (first, second)[pick][1][1]))


def clip_timeline(sign: Sign, signer: Signer, rng: np.random.Generator, fps: int, seconds: float) -> list[Pose]:
    """Poses frame by frame: rest, move into the sign, the sign, move back, rest."""
    sign_frames = max(int(round(fps * seconds / signer.speed * rng.uniform(0.9, 1.1))), 4)
    transition_frames = max(int(round(fps * 0.25 / signer.speed)), 2)
    idle_before = int(rng.integers(1, int(fps * 0.3) + 2))
    idle_after = int(rng.integers(1, int(fps * 0.3) + 2))
    start_pose, end_pose = sign.pose_at(0.0), sign.pose_at(1.0)
    poses = [rest_pose()] * idle_before
    poses += [blend_poses(rest_pose(), start_pose, (i + 1) / transition_frames) for i in range(transition_frames)]
    poses += [sign.pose_at(i / (sign_frames - 1)) for i in range(sign_frames)]
    poses += [blend_poses(end_pose, rest_pose(), (i + 1) / transition_frames) for i in range(transition_frames)]
    poses += [rest_pose()] * idle_after
    return poses


def jitter_pose(pose: Pose, offset: Point, amplitude: float) -> Pose:
    """A repetition's small differences: where the hands are and how big the motion is."""
    def move(point: Point | None) -> Point | None:
        if point is None:
            return None
        return (point[0] * amplitude + offset[0], point[1] * amplitude + offset[1])
    return ((move(pose[0][0]), pose[0][1]), (move(pose[1][0]), pose[1][1]))


def render_clip(sign: Sign, signer: Signer, repetition: int, seed: int, fps: int, seconds: float) -> np.ndarray:
    """All frames of one clip: (num_frames, height, width, 3) uint8 BGR, deterministic."""
    rng = np.random.default_rng([seed, 2, signer.index, SIGNS.index(sign), repetition])
    offset = (float(rng.uniform(-0.04, 0.04)), float(rng.uniform(-0.04, 0.04)))
    amplitude = float(rng.uniform(0.92, 1.08))
    background = draw_background(signer)
    frames = []
    for pose in clip_timeline(sign, signer, rng, fps, seconds):
        frame = draw_figure(background, signer, jitter_pose(pose, offset, amplitude))
        if signer.noise_sigma > 0:
            noise = rng.normal(0.0, signer.noise_sigma, frame.shape)
            frame = np.clip(frame.astype(np.float32) + noise, 0, 255).astype(np.uint8)
        frames.append(frame)
    return np.stack(frames)
