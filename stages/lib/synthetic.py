"""A built-in sign vocabulary performed by drawn signers: a real, if simple, recognition problem.

Usage:
    from stages.lib.synthetic import (SIGNS, StreamRecipe, make_signer, render_clip, render_idle_clip,
                                      sign_stream_timeline, timeline_frames)
    signer = make_signer(signer_index=3, seed=42, width=320, height=240)
    frames = render_clip(SIGNS[0], signer, repetition=0, seed=42, fps=25, seconds=1.5)
    frames.shape            # (num_frames, 240, 320, 3) uint8, BGR (what cv2.VideoWriter takes)
    idle = render_idle_clip(signer, repetition=0, seed=42, fps=25, seconds=3.0)   # class "_none"
    stream = sign_stream_timeline(signer, stream_index=0, seed=42, fps=25, recipe=StreamRecipe(SIGNS[:6]))
    stream.signs            # [SignSpan(sign="wave", first_frame=27, last_frame=61), ...]
    for frame in timeline_frames(stream, signer, fps=25):   # (240, 320, 3) uint8 BGR, one at a time
        ...

Each sign is a path of the dominant hand (and sometimes the other hand) through
body space plus hand-shape changes over time. Three pairs of signs are the same
motion played in opposite time order (circle clockwise / counter-clockwise,
raise / lower, swipe right / left), so a model that ignores frame order cannot
tell them apart. Signers differ in skin tone, clothing, body size, position in
frame, speed (+-30 %), background and noise.

Continuous signing: every clip and stream starts and ends with the signer at
rest, and a person at rest is never still (the body sways, the resting hands
rise and fall with breath). Idle footage (class "_none") is standing, fidgeting,
or raising the hands into the signing space and dropping them without signing.
A Timeline (poses frame by frame, plus where each sign proper lies) is built
from the same pieces for clips and long streams, then rendered frame by frame.

Body space: origin at the neck, x to the viewer's right, y down, one unit is
about the length of an arm from shoulder to elbow doubled.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import NamedTuple

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


# OpenCV draws at 1/16 px: the slow sway then glides instead of jumping by whole pixels.
SUBPIXEL_BITS = 4
SUBPIXEL = 1 << SUBPIXEL_BITS


def to_pixels(signer: Signer, point: Point) -> tuple[int, int]:
    """Where a body-space point lands, in OpenCV fixed point (1/SUBPIXEL px; draw with shift=SUBPIXEL_BITS)."""
    return (int(round((signer.centre_x + point[0] * signer.scale) * SUBPIXEL)),
            int(round((signer.centre_y + point[1] * signer.scale) * SUBPIXEL)))


def fixed_point(length_px: float) -> int:
    """A length in pixels as OpenCV fixed point, to go with to_pixels."""
    return int(round(length_px * SUBPIXEL))


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
    palm_radius = max(0.10 * signer.scale, 2.0)
    direction = math.atan2(hand[1] - elbow[1], hand[0] - elbow[0])
    finger_length = fixed_point(0.20 * signer.scale)
    thickness = max(int(0.035 * signer.scale), 1)
    spreads = {"open": (-0.9, -0.45, 0.0, 0.45, 0.9), "point": (0.0,), "vee": (-0.3, 0.3), "fist": ()}[shape]
    for spread in spreads:
        angle = direction + spread
        tip = (int(centre[0] + finger_length * math.cos(angle)), int(centre[1] + finger_length * math.sin(angle)))
        cv2.line(canvas, centre, tip, signer.skin_bgr, thickness, cv2.LINE_AA, SUBPIXEL_BITS)
    radius = fixed_point(palm_radius * (1.25 if shape == "fist" else 1.0))
    cv2.circle(canvas, centre, radius, signer.skin_bgr, -1, cv2.LINE_AA, SUBPIXEL_BITS)
    if shape == "fist":  # knuckle line so a fist differs from a bare palm beyond its size
        darker = tuple(int(c * 0.6) for c in signer.skin_bgr)
        cv2.circle(canvas, centre, max(radius // 2, SUBPIXEL), darker, thickness, cv2.LINE_AA, SUBPIXEL_BITS)


def draw_arm(canvas: np.ndarray, signer: Signer, shoulder: Point, hand: Point, shape: str,
             bend_outward: float) -> None:
    elbow = elbow_position(shoulder, hand, bend_outward)
    sleeve = max(int(0.13 * signer.scale), 2)
    cv2.line(canvas, to_pixels(signer, shoulder), to_pixels(signer, elbow), signer.shirt_bgr, sleeve,
             cv2.LINE_AA, SUBPIXEL_BITS)
    cv2.line(canvas, to_pixels(signer, elbow), to_pixels(signer, hand), signer.skin_bgr,
             max(int(0.09 * signer.scale), 2), cv2.LINE_AA, SUBPIXEL_BITS)
    draw_hand(canvas, signer, hand, elbow, shape)


def draw_figure(background: np.ndarray, signer: Signer, pose: Pose) -> np.ndarray:
    """One frame: torso, head, and both arms in the given pose. Returns BGR uint8."""
    canvas = background.copy()
    torso = np.array([to_pixels(signer, p) for p in [(-0.34, 0.0), (0.34, 0.0), (0.26, 1.05), (-0.26, 1.05)]],
                     np.int32)
    cv2.fillConvexPoly(canvas, torso, signer.shirt_bgr, cv2.LINE_AA, SUBPIXEL_BITS)
    cv2.circle(canvas, to_pixels(signer, (0.0, -0.30)), fixed_point(0.20 * signer.scale), signer.skin_bgr, -1,
               cv2.LINE_AA, SUBPIXEL_BITS)
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


def jitter_pose(pose: Pose, offset: Point, amplitude: float) -> Pose:
    """A repetition's small differences: where the hands are and how big the motion is."""
    def move(point: Point | None) -> Point | None:
        if point is None:
            return None
        return (point[0] * amplitude + offset[0], point[1] * amplitude + offset[1])
    return ((move(pose[0][0]), pose[0][1]), (move(pose[1][0]), pose[1][1]))


def shift_hands(pose: Pose, dominant_offset: Point, other_offset: Point) -> Pose:
    """The pose with each hand moved by its offset; an other hand at rest (None) stays at rest."""
    (dominant, dominant_shape), (other, other_shape) = pose
    moved_dominant = (dominant[0] + dominant_offset[0], dominant[1] + dominant_offset[1])
    moved_other = None if other is None else (other[0] + other_offset[0], other[1] + other_offset[1])
    return ((moved_dominant, dominant_shape), (moved_other, other_shape))


# ---------------------------------------------------------------------------------------------
# Timelines: poses frame by frame, built from rest, signs and idle movements.

# Seconds a hand takes from rest to a sign's start pose, before the signer's speed factor.
TRANSITION_SECONDS = 0.25
# Streams open and close with about a second of rest, so a window at either end sees no sign.
STREAM_LEAD_SECONDS = (0.9, 1.1)
# Share of the gaps between a stream's signs that hold an idle movement instead of plain rest:
# enough that "hands moving" never means "a sign" on its own, few enough that most gaps are calm.
IDLE_GAP_SHARE = 0.4
IDLE_KINDS = ("rest", "fidget", "into_position")
# One idle movement per this many seconds of an idle segment: fidgets are short, rising to
# the signing space and waiting there takes longer.
IDLE_SLOT_SECONDS = {"fidget": 1.6, "into_position": 2.8}
# Lengths of the pieces an idle stream is cut into, per kind (seconds).
IDLE_STREAM_PIECE_SECONDS = {"rest": (1.0, 3.0), "fidget": (2.0, 4.0), "into_position": (2.5, 4.0)}
WAIST: Point = (0.0, 0.88)   # hands folded in front of the body
# Shorter than this, a movement would be a jerk no person makes: such a slot stays at rest.
MIN_MOVEMENT_SECONDS = 0.8


class SignSpan(NamedTuple):
    sign: str
    first_frame: int   # first and last frame of the sign proper: pose_at(t) over t in [0, 1],
    last_frame: int    # transitions from and to rest excluded


@dataclass
class Timeline:
    """One take: the poses frame by frame, where each sign proper lies, and what seeds its looks."""
    seed: int
    key: tuple[int, ...]           # unique per take: seeds its motion and its sway and noise
    poses: list[Pose] = field(default_factory=list)
    signs: list[SignSpan] = field(default_factory=list)

    def motion_rng(self) -> np.random.Generator:
        return np.random.default_rng([*self.key, 0])

    def looks_rng(self) -> np.random.Generator:
        return np.random.default_rng([*self.key, 1])

    def add(self, poses: list[Pose]) -> None:
        self.poses.extend(poses)

    def add_sign(self, name: str, poses: list[Pose], first: int, last: int) -> None:
        """Append a performed sign whose sign proper is poses[first..last]."""
        self.signs.append(SignSpan(name, len(self.poses) + first, len(self.poses) + last))
        self.poses.extend(poses)


def frames_for(seconds: float, fps: float) -> int:
    return max(int(round(seconds * fps)), 0)


def rest_poses(count: int) -> list[Pose]:
    return [rest_pose()] * max(count, 0)


def sign_poses(sign: Sign, signer: Signer, rng: np.random.Generator, fps: int,
               seconds: float) -> tuple[list[Pose], int, int]:
    """Move from rest into the sign, the sign, move back to rest; and the first and last index of the sign proper.

    `seconds` is the nominal sign duration; the signer's speed and +-10 % per performance change it.
    """
    offset = (float(rng.uniform(-0.04, 0.04)), float(rng.uniform(-0.04, 0.04)))
    amplitude = float(rng.uniform(0.92, 1.08))
    sign_frames = max(int(round(fps * seconds / signer.speed * rng.uniform(0.9, 1.1))), 4)
    transition_frames = max(int(round(fps * TRANSITION_SECONDS / signer.speed)), 2)
    performed = [jitter_pose(sign.pose_at(i / (sign_frames - 1)), offset, amplitude) for i in range(sign_frames)]
    poses = transition(rest_pose(), performed[0], transition_frames) + performed
    poses += transition(performed[-1], rest_pose(), transition_frames)
    return poses, transition_frames, transition_frames + sign_frames - 1


def transition(first: Pose, second: Pose, count: int) -> list[Pose]:
    """`count` frames strictly between two poses: neither end repeats, so the hand never stalls a frame."""
    return [blend_poses(first, second, (i + 1) / (count + 1)) for i in range(count)]


def clip_timeline(sign: Sign, signer: Signer, repetition: int, seed: int, fps: int, seconds: float,
                  lead_seconds: tuple[float, float] = (0.3, 1.0)) -> Timeline:
    """One labelled clip: rest for a random lead-in, move into the sign, the sign, move back, rest again."""
    timeline = Timeline(seed, (seed, 2, signer.index, SIGNS.index(sign), repetition))
    rng = timeline.motion_rng()
    timeline.add(rest_poses(frames_for(rng.uniform(*lead_seconds), fps)))
    timeline.add_sign(sign.name, *sign_poses(sign, signer, rng, fps, seconds))
    timeline.add(rest_poses(frames_for(rng.uniform(*lead_seconds), fps)))
    return timeline


def fit_phases(phases: list[int], budget: int) -> list[int]:
    """(rise, hold, lower) frames squeezed into at most `budget` (>= 2): the wait shortens first, then the moves."""
    rise, hold, lower = phases
    hold = min(hold, max(budget - rise - lower, 0))
    if rise + hold + lower <= budget:
        return [rise, hold, lower]
    squeeze = budget / (rise + lower)
    return [max(int(rise * squeeze), 1), 0, max(int(lower * squeeze), 1)]


def excursion(target: Pose, phases: list[int], hold_motion: Callable[[int], tuple[Point, Point]]) -> list[Pose]:
    """Hands leave rest for `target`, stay there moving a little, come back: every idle movement's shape.

    `phases` are the frames to rise, hold and lower; `hold_motion(i)` offsets the hands at the i-th held frame.
    """
    rise, hold, lower = phases
    held = [shift_hands(target, *hold_motion(i)) for i in range(hold)]
    last = held[-1] if held else target
    return transition(rest_pose(), target, rise) + held + transition(last, rest_pose(), lower)


def hovering(rng: np.random.Generator, fps: int, units: float) -> Callable[[int], tuple[Point, Point]]:
    """Hands held still still wander: a slow smooth drift of about `units`, zero at the first held frame."""
    frequencies, phases = rng.uniform(0.4, 1.0, 4), rng.uniform(0.0, 2 * math.pi, 4)

    def offsets(index: int) -> tuple[Point, Point]:
        drift = [units * (math.sin(2 * math.pi * f * index / fps + p) - math.sin(p))
                 for f, p in zip(frequencies, phases)]
        return (drift[0], drift[1]), (drift[2], drift[3])
    return offsets


def scratching(rng: np.random.Generator, fps: int, along: Point) -> Callable[[int], tuple[Point, Point]]:
    """The dominant hand rubbing quickly back and forth along direction `along` (a unit vector)."""
    frequency, amplitude = rng.uniform(3.0, 5.0), rng.uniform(0.025, 0.045)

    def offsets(index: int) -> tuple[Point, Point]:
        stroke = amplitude * math.sin(2 * math.pi * frequency * index / fps)
        return (along[0] * stroke, along[1] * stroke), (0.0, 0.0)
    return offsets


def relaxed_shape(rng: np.random.Generator) -> str:
    return ("open", "fist")[int(rng.integers(2))]


def near(point: Point, rng: np.random.Generator, spread_x: float, spread_y: tuple[float, float]) -> Point:
    return (point[0] + float(rng.uniform(-spread_x, spread_x)), point[1] + float(rng.uniform(*spread_y)))


def fidget_target(kind: str, rng: np.random.Generator) -> tuple[Pose, Point | None]:
    """Where a fidget takes the hands, and for a scratch the direction to rub along."""
    if kind == "shift":        # one or both hands wander a little from rest
        which = ("dominant", "other", "both")[int(rng.integers(3))]
        dominant = near(REST_DOMINANT, rng, 0.14, (-0.20, 0.03)) if which != "other" else REST_DOMINANT
        other = near(REST_OTHER, rng, 0.14, (-0.20, 0.03)) if which != "dominant" else None
        return ((dominant, relaxed_shape(rng)), (other, relaxed_shape(rng))), None
    if kind == "fold":         # hands meet in front of the waist
        dominant = near((WAIST[0] - 0.07, WAIST[1]), rng, 0.04, (-0.05, 0.03))
        other = near((WAIST[0] + 0.07, WAIST[1]), rng, 0.04, (-0.05, 0.03))
        return ((dominant, relaxed_shape(rng)), (other, "open")), None
    if kind == "touch":        # the dominant hand touches the other, resting hand
        return ((near((REST_OTHER[0] - 0.10, REST_OTHER[1] - 0.03), rng, 0.03, (-0.03, 0.03)), "open"),
                (None, "fist")), None
    # scratch: the dominant hand on the other forearm (it is drawn over that arm)
    elbow = elbow_position(SHOULDER_OTHER, REST_OTHER, bend_outward=-1.0)
    share = float(rng.uniform(0.3, 0.7))
    spot = (elbow[0] + (REST_OTHER[0] - elbow[0]) * share, elbow[1] + (REST_OTHER[1] - elbow[1]) * share)
    length = math.hypot(REST_OTHER[0] - elbow[0], REST_OTHER[1] - elbow[1])
    along = ((REST_OTHER[0] - elbow[0]) / length, (REST_OTHER[1] - elbow[1]) / length)
    return ((spot, "vee"), (None, "fist")), along


def fidget_move(signer: Signer, rng: np.random.Generator, fps: int, budget: int,
                vocabulary: tuple[Sign, ...]) -> list[Pose]:
    """One small movement near rest or the waist, at most `budget` frames, from rest back to rest."""
    del vocabulary  # fidgets stay near the body, away from any sign
    kind = ("shift", "fold", "touch", "scratch")[int(rng.integers(4))]
    target, along = fidget_target(kind, rng)
    phases = [max(frames_for(rng.uniform(0.2, 0.45) / signer.speed, fps), 1),
              frames_for(rng.uniform(0.4, 0.9) if kind == "scratch" else rng.uniform(0.1, 0.8), fps),
              max(frames_for(rng.uniform(0.2, 0.45) / signer.speed, fps), 1)]
    motion = scratching(rng, fps, along) if along else hovering(rng, fps, 0.015)
    return excursion(target, fit_phases(phases, budget), motion)


def signing_space_target(rng: np.random.Generator, vocabulary: tuple[Sign, ...]) -> Pose:
    """Where hands wait before signing: a sign's start pose (moved a little), or anywhere at chest height."""
    if vocabulary and rng.random() < 0.5:
        start = vocabulary[int(rng.integers(len(vocabulary)))].pose_at(0.0)
        offset = (float(rng.uniform(-0.05, 0.05)), float(rng.uniform(-0.05, 0.05)))
        return jitter_pose(start, offset, 1.0)
    which = ("dominant", "other", "both")[int(rng.choice(3, p=[0.5, 0.2, 0.3]))]
    dominant = (float(rng.uniform(-0.40, 0.05)), float(rng.uniform(0.15, 0.45))) if which != "other" \
        else REST_DOMINANT
    other = (float(rng.uniform(-0.05, 0.40)), float(rng.uniform(0.15, 0.45))) if which != "dominant" else None
    return ((dominant, any_shape(rng)), (other, any_shape(rng)))


def any_shape(rng: np.random.Generator) -> str:
    return HAND_SHAPES[int(rng.integers(len(HAND_SHAPES)))]


def into_position_move(signer: Signer, rng: np.random.Generator, fps: int, budget: int,
                       vocabulary: tuple[Sign, ...]) -> list[Pose]:
    """Hands rise into the signing space, wait there, and drop back to rest WITHOUT signing."""
    target = signing_space_target(rng, vocabulary)
    phases = [max(frames_for(rng.uniform(0.25, 0.5) / signer.speed, fps), 1),
              frames_for(rng.uniform(0.4, 1.2), fps),
              max(frames_for(rng.uniform(0.3, 0.6) / signer.speed, fps), 1)]
    return excursion(target, fit_phases(phases, budget), hovering(rng, fps, 0.02))


IDLE_MOVES = {"fidget": fidget_move, "into_position": into_position_move}


def idle_poses(kind: str, signer: Signer, rng: np.random.Generator, fps: int, count: int,
               vocabulary: tuple[Sign, ...]) -> list[Pose]:
    """Exactly `count` frames of idle behaviour `kind` (see IDLE_KINDS), starting and ending at rest."""
    if kind == "rest":
        return rest_poses(count)
    slots = max(int(round(count / (IDLE_SLOT_SECONDS[kind] * fps))), 1)
    poses: list[Pose] = []
    for slot in range(slots):
        slot_frames = count * (slot + 1) // slots - count * slot // slots
        poses += movement_in_slot(IDLE_MOVES[kind], signer, rng, fps, slot_frames, vocabulary)
    return poses


def movement_in_slot(move: Callable, signer: Signer, rng: np.random.Generator, fps: int, slot_frames: int,
                     vocabulary: tuple[Sign, ...]) -> list[Pose]:
    """One movement at a random moment of a slot of rest; a slot too short for a natural movement stays rest."""
    if slot_frames < max(frames_for(MIN_MOVEMENT_SECONDS, fps), 3):
        return rest_poses(slot_frames)
    moving = move(signer, rng, fps, slot_frames - 1, vocabulary)
    before = int(rng.integers(0, slot_frames - len(moving) + 1))
    return rest_poses(before) + moving + rest_poses(slot_frames - len(moving) - before)


def idle_clip_kind(signer: Signer, repetition: int) -> str:
    """Idle clips cycle through the kinds, starting elsewhere per signer so that every kind is as common."""
    return IDLE_KINDS[(repetition + signer.index) % len(IDLE_KINDS)]


def idle_clip_timeline(signer: Signer, repetition: int, seed: int, fps: int, seconds: float,
                       vocabulary: tuple[Sign, ...] = SIGNS) -> Timeline:
    """One clip of class "_none": the signer standing, fidgeting, or moving into position."""
    timeline = Timeline(seed, (seed, 4, signer.index, repetition))
    kind = idle_clip_kind(signer, repetition)
    timeline.add(idle_poses(kind, signer, timeline.motion_rng(), fps, max(frames_for(seconds, fps), 1), vocabulary))
    return timeline


@dataclass(frozen=True)
class StreamRecipe:
    """What a continuous sign stream is made of (the generate stage fills it from params.yaml)."""
    vocabulary: tuple[Sign, ...]
    sign_seconds: float = 1.5                         # nominal, before the signer's speed factor
    signs_per_stream: tuple[int, int] = (4, 6)        # fewest, most (inclusive)
    gap_seconds: tuple[float, float] = (0.8, 2.0)     # between one sign's return to rest and the next
    lead_seconds: tuple[float, float] = STREAM_LEAD_SECONDS   # rest before the first sign and after the last


def pick_signs(vocabulary: tuple[Sign, ...], count: int, rng: np.random.Generator) -> list[Sign]:
    """`count` signs at random, never the same twice in a row (a repeat would read as one long sign)."""
    picked: list[Sign] = []
    for _ in range(count):
        choices = [sign for sign in vocabulary if not picked or sign is not picked[-1]] or list(vocabulary)
        picked.append(choices[int(rng.integers(len(choices)))])
    return picked


def gap_poses(signer: Signer, rng: np.random.Generator, fps: int, recipe: StreamRecipe) -> list[Pose]:
    """The pause between two signs: rest, or now and then a fidget or hands moving into position."""
    count = frames_for(rng.uniform(*recipe.gap_seconds), fps)
    kind = "rest"
    if rng.random() < IDLE_GAP_SHARE:
        kind = ("fidget", "into_position")[int(rng.integers(2))]
    return idle_poses(kind, signer, rng, fps, count, recipe.vocabulary)


def sign_stream_timeline(signer: Signer, stream_index: int, seed: int, fps: int, recipe: StreamRecipe) -> Timeline:
    """Continuous signing: rest, then signs separated by gaps, then rest; `signs` says where each sign is."""
    timeline = Timeline(seed, (seed, 5, signer.index, stream_index))
    rng = timeline.motion_rng()
    timeline.add(rest_poses(frames_for(rng.uniform(*recipe.lead_seconds), fps)))
    count = int(rng.integers(recipe.signs_per_stream[0], recipe.signs_per_stream[1] + 1))
    for position, sign in enumerate(pick_signs(recipe.vocabulary, count, rng)):
        if position:
            timeline.add(gap_poses(signer, rng, fps, recipe))
        timeline.add_sign(sign.name, *sign_poses(sign, signer, rng, fps, recipe.sign_seconds))
    timeline.add(rest_poses(frames_for(rng.uniform(*recipe.lead_seconds), fps)))
    return timeline


def idle_stream_timeline(signer: Signer, stream_index: int, seed: int, fps: int, seconds: float,
                         vocabulary: tuple[Sign, ...] = SIGNS) -> Timeline:
    """`seconds` of no signing: rest, fidgeting and moving into position, each kind in every round, random order."""
    timeline = Timeline(seed, (seed, 6, signer.index, stream_index))
    rng = timeline.motion_rng()
    total = max(frames_for(seconds, fps), 1)
    while len(timeline.poses) < total:
        for kind in rng.permutation(IDLE_KINDS):
            count = min(frames_for(rng.uniform(*IDLE_STREAM_PIECE_SECONDS[kind]), fps), total - len(timeline.poses))
            timeline.add(idle_poses(str(kind), signer, rng, fps, count, vocabulary))
    return timeline


# ---------------------------------------------------------------------------------------------
# Rendering: sway, breathing and sensor noise on top of the poses.

SWAY_FRACTION = (0.01, 0.02)        # of the frame width: how far the standing body drifts
SWAY_HZ = (0.08, 0.3)               # a slow drift, one cycle every few seconds
BREATH_HZ = (0.2, 0.33)             # 12-20 breaths a minute
BREATH_UNITS = (0.008, 0.016)       # body units the resting hands rise and fall (~1 px at 240 px)
# Sensor noise comes from a few pre-drawn fields per signer, each frame taking one at a random
# shift: 4 x 33 x 33 different noise frames, for the cost of an add instead of a Gaussian draw per pixel.
NOISE_FIELDS = 4
NOISE_MARGIN = 32                   # px of extra field each way to shift within


@dataclass(frozen=True)
class Sway:
    """How a take's signer moves while standing: smooth slow drift of the body, breathing of the hands."""
    body_px: tuple[float, float]        # drift amplitude in pixels (x, y)
    body_hz: tuple[float, float]
    body_phase: tuple[float, float]
    breath_units: float
    breath_hz: float
    breath_phase: tuple[float, float]   # dominant, other: the hands never move in perfect lockstep


def make_sway(signer: Signer, rng: np.random.Generator) -> Sway:
    amplitude = float(rng.uniform(*SWAY_FRACTION)) * signer.width
    return Sway(body_px=(amplitude, amplitude * float(rng.uniform(0.3, 0.6))),
                body_hz=(float(rng.uniform(*SWAY_HZ)), float(rng.uniform(*SWAY_HZ))),
                body_phase=(float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0, 2 * math.pi))),
                breath_units=float(rng.uniform(*BREATH_UNITS)), breath_hz=float(rng.uniform(*BREATH_HZ)),
                breath_phase=(float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0, 2 * math.pi))))


def swayed_signer(signer: Signer, sway: Sway, seconds: float) -> Signer:
    """The same signer standing where the sway has carried the whole figure at time `seconds`."""
    dx = sway.body_px[0] * math.sin(2 * math.pi * sway.body_hz[0] * seconds + sway.body_phase[0])
    dy = sway.body_px[1] * math.sin(2 * math.pi * sway.body_hz[1] * seconds + sway.body_phase[1])
    return replace(signer, centre_x=signer.centre_x + dx, centre_y=signer.centre_y + dy)


def breathe(pose: Pose, sway: Sway, seconds: float) -> Pose:
    """Both hands rise and fall a little, slightly irregularly (unnoticeable while signing, seen at rest)."""
    def offset(phase: float) -> Point:
        angle = 2 * math.pi * sway.breath_hz * seconds + phase
        rise = (math.sin(angle) + 0.35 * math.sin(2.3 * angle + 1.7)) / 1.35
        return (0.4 * sway.breath_units * math.sin(0.7 * angle), sway.breath_units * rise)
    (dominant, dominant_shape), (other, other_shape) = pose
    return shift_hands(((dominant, dominant_shape), (other or REST_OTHER, other_shape)),
                       offset(sway.breath_phase[0]), offset(sway.breath_phase[1]))


@lru_cache(maxsize=16)
def noise_fields(signer: Signer, seed: int) -> np.ndarray:
    """(NOISE_FIELDS, height + margin, width + margin, 3) int16 Gaussian noise of this signer's camera.

    Drawn once per signer and seed (and cached per process): the costly part of noise.
    """
    rng = np.random.default_rng([seed, 3, signer.index])
    shape = (NOISE_FIELDS, signer.height + NOISE_MARGIN, signer.width + NOISE_MARGIN, 3)
    return np.rint(rng.standard_normal(shape, dtype=np.float32) * signer.noise_sigma).astype(np.int16)


def add_sensor_noise(frame: np.ndarray, fields: np.ndarray, choice: np.ndarray) -> np.ndarray:
    """`frame` (H, W, 3) uint8 plus the noise field choice[0] shifted by (choice[1], choice[2]) px."""
    height, width = frame.shape[:2]
    field_index, top, left = (int(value) for value in choice)
    noise = fields[field_index, top: top + height, left: left + width]     # (H, W, 3) int16, a view
    return np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def timeline_frames(timeline: Timeline, signer: Signer, fps: int) -> Iterator[np.ndarray]:
    """The take's frames one at a time, each (height, width, 3) uint8 BGR: sway, breath and noise added."""
    rng = timeline.looks_rng()
    sway = make_sway(signer, rng)
    background = draw_background(signer)
    fields = noise_fields(signer, timeline.seed) if signer.noise_sigma > 0 else None
    # Which field and shift each frame takes, drawn for the whole take at once.
    choices = rng.integers(0, [NOISE_FIELDS, NOISE_MARGIN + 1, NOISE_MARGIN + 1], size=(len(timeline.poses), 3))
    for index, pose in enumerate(timeline.poses):
        seconds = index / fps
        frame = draw_figure(background, swayed_signer(signer, sway, seconds), breathe(pose, sway, seconds))
        yield frame if fields is None else add_sensor_noise(frame, fields, choices[index])


def render_timeline(timeline: Timeline, signer: Signer, fps: int) -> np.ndarray:
    """All frames of a take: (num_frames, height, width, 3) uint8 BGR."""
    return np.stack(list(timeline_frames(timeline, signer, fps)))


def render_clip(sign: Sign, signer: Signer, repetition: int, seed: int, fps: int, seconds: float,
                lead_seconds: tuple[float, float] = (0.3, 1.0)) -> np.ndarray:
    """All frames of one sign clip: (num_frames, height, width, 3) uint8 BGR, deterministic."""
    return render_timeline(clip_timeline(sign, signer, repetition, seed, fps, seconds, lead_seconds), signer, fps)


def render_idle_clip(signer: Signer, repetition: int, seed: int, fps: int, seconds: float,
                     vocabulary: tuple[Sign, ...] = SIGNS) -> np.ndarray:
    """All frames of one idle clip (class "_none"): (num_frames, height, width, 3) uint8 BGR, deterministic."""
    return render_timeline(idle_clip_timeline(signer, repetition, seed, fps, seconds, vocabulary), signer, fps)
