"""The built-in dataset is a real recognition problem: order matters, signers differ, runs repeat.

Also: every take starts and ends at rest and the resting signer is never still; idle footage
(class "_none") moves without ever performing a sign; streams say truly where their signs are.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from stages.generate import plan_clips
from stages.lib.datasets import NO_SIGN_LABEL
from stages.lib.synthetic import (
    IDLE_KINDS,
    REST_OTHER,
    SIGNS,
    STREAM_LEAD_SECONDS,
    TIME_REVERSED_PAIRS,
    StreamRecipe,
    Timeline,
    clip_timeline,
    draw_background,
    idle_clip_kind,
    idle_clip_timeline,
    idle_stream_timeline,
    make_signer,
    render_clip,
    render_idle_clip,
    render_timeline,
    rest_pose,
    sign_stream_timeline,
)

SETTINGS = {"classes": 12, "signers": 10, "repetitions": 3, "val_signers": 2, "test_signers": 2, "idle_clips": 4}
FPS = 10
# Within this distance (body units) a hand "is at" a point of a sign's path: below the extent
# of the smallest sign (tap_head moves 0.08), so holding still near a sign never counts as it.
PATH_TOLERANCE = 0.025


def sign_named(name: str):
    return next(sign for sign in SIGNS if sign.name == name)


def tiny_signer(index: int = 2, seed: int = 5):
    return make_signer(index, seed=seed, width=96, height=72)


def rest_rendering(timeline: Timeline, signer) -> np.ndarray:
    """The same take with the signer at rest throughout: same sway, breath and noise, frame by frame."""
    return render_timeline(Timeline(timeline.seed, timeline.key, [rest_pose()] * len(timeline.poses)), signer, FPS)


def hands(pose) -> np.ndarray:
    """(4,) dominant xy, other xy; an other hand at rest (None) is where rest puts it."""
    (dominant, _), (other, _) = pose
    return np.array([*dominant, *(other or REST_OTHER)])


def contains_path(poses, sign, tolerance: float = PATH_TOLERANCE, checkpoints: int = 17) -> bool:
    """Whether both hands pass, in order, near every checkpoint of the sign's path."""
    targets = [hands(sign.pose_at(t)) for t in np.linspace(0.0, 1.0, checkpoints)]
    reached = 0
    for pose in poses:
        if reached < len(targets) and np.abs(hands(pose) - targets[reached]).max() <= tolerance:
            reached += 1
    return reached == len(targets)


def is_performance_of(performed, sign) -> bool:
    """Whether poses are the sign's pose_at(t) for t evenly over [0, 1], up to one scale and offset (a repetition's
    jitter) and with the same hand shapes."""
    times = np.linspace(0.0, 1.0, len(performed))
    canonical = np.array([sign.pose_at(t)[0][0] for t in times])              # (n, 2) dominant hand
    seen = np.array([pose[0][0] for pose in performed])
    # seen = amplitude * canonical + offset: solve for (amplitude, offset_x, offset_y)
    design = np.zeros((2 * len(times), 3))
    design[:, 0], design[0::2, 1], design[1::2, 2] = canonical.reshape(-1), 1.0, 1.0
    solution, *_ = np.linalg.lstsq(design, seen.reshape(-1), rcond=None)
    same_shapes = [pose[0][1] for pose in performed] == [sign.pose_at(t)[0][1] for t in times]
    return bool(np.abs(design @ solution - seen.reshape(-1)).max() < 1e-6) and same_shapes


def test_vocabulary_has_ten_or_more_signs_and_two_or_more_reversed_pairs():
    assert len(SIGNS) >= 10
    assert len(TIME_REVERSED_PAIRS) >= 2


def test_reversed_pairs_are_the_same_motion_in_opposite_time_order():
    for forward_name, backward_name in TIME_REVERSED_PAIRS:
        forward, backward = sign_named(forward_name), sign_named(backward_name)
        for t in np.linspace(0, 1, 11):
            (hand_f, shape_f), _ = forward.pose_at(float(t))
            (hand_b, shape_b), _ = backward.pose_at(float(1 - t))
            assert np.allclose(hand_f, hand_b) and shape_f == shape_b
        # ... and not the same motion forwards: otherwise order would not matter.
        assert not np.allclose(forward.pose_at(0.1)[0][0], backward.pose_at(0.1)[0][0])


def test_rendering_is_deterministic_for_a_seed():
    signer = tiny_signer()
    first = render_clip(SIGNS[3], signer, repetition=1, seed=5, fps=FPS, seconds=0.8)
    second = render_clip(SIGNS[3], signer, repetition=1, seed=5, fps=FPS, seconds=0.8)
    other_seed = render_clip(SIGNS[3], tiny_signer(seed=6), 1, seed=6, fps=FPS, seconds=0.8)
    assert np.array_equal(first, second)
    assert not np.array_equal(first[: len(other_seed)], other_seed[: len(first)])


def test_idle_clips_and_streams_are_deterministic_for_a_seed():
    signer, other_signer = tiny_signer(), tiny_signer(seed=6)
    idle = render_idle_clip(signer, repetition=1, seed=5, fps=FPS, seconds=1.5)
    assert np.array_equal(idle, render_idle_clip(signer, repetition=1, seed=5, fps=FPS, seconds=1.5))
    assert not np.array_equal(idle, render_idle_clip(other_signer, repetition=1, seed=6, fps=FPS, seconds=1.5))
    recipe = StreamRecipe(SIGNS[:4], sign_seconds=0.8, signs_per_stream=(2, 2))
    stream = render_timeline(sign_stream_timeline(signer, 0, seed=5, fps=FPS, recipe=recipe), signer, FPS)
    again = render_timeline(sign_stream_timeline(signer, 0, seed=5, fps=FPS, recipe=recipe), signer, FPS)
    other = render_timeline(sign_stream_timeline(other_signer, 0, seed=6, fps=FPS, recipe=recipe), other_signer, FPS)
    assert np.array_equal(stream, again)
    assert not np.array_equal(stream[: len(other)], other[: len(stream)])


def test_signers_differ_in_looks_size_place_and_speed():
    signers = [make_signer(index, seed=42, width=320, height=240) for index in range(SETTINGS["signers"])]
    assert len({s.skin_bgr for s in signers}) >= 6
    assert len({s.shirt_bgr for s in signers}) == len(signers)
    assert len({s.background_pattern for s in signers}) >= 3
    speeds = [s.speed for s in signers]
    assert min(speeds) >= 0.7 and max(speeds) <= 1.3 and max(speeds) - min(speeds) > 0.2
    assert max(s.scale for s in signers) / min(s.scale for s in signers) > 1.1
    assert max(s.centre_x for s in signers) - min(s.centre_x for s in signers) > 10


def test_split_holds_out_whole_signers():
    rows = plan_clips(SETTINGS, seed=42)
    signers_by_split = {split: {r["signer"] for r in rows if r["split"] == split} for split in ("train", "val", "test")}
    assert len(signers_by_split["test"]) == 2 and len(signers_by_split["val"]) == 2
    assert not signers_by_split["train"] & signers_by_split["val"]
    assert not signers_by_split["train"] & signers_by_split["test"]
    assert not signers_by_split["val"] & signers_by_split["test"]
    idle_rows = [r for r in rows if r["label"] == NO_SIGN_LABEL]
    assert len(rows) == 12 * 10 * 3 + 10 * 4 and len(idle_rows) == 10 * 4
    assert {r["signer"] for r in idle_rows} == {r["signer"] for r in rows}   # every split has "no sign"


def test_every_sign_clip_begins_and_ends_at_rest():
    signer = tiny_signer(index=4)
    for sign in SIGNS:
        timeline = clip_timeline(sign, signer, repetition=0, seed=5, fps=FPS, seconds=0.8, lead_seconds=(0.3, 1.0))
        frames, at_rest = render_timeline(timeline, signer, FPS), rest_rendering(timeline, signer)
        lead = round(0.3 * FPS)
        assert np.array_equal(frames[:lead], at_rest[:lead]), sign.name
        assert np.array_equal(frames[-lead:], at_rest[-lead:]), sign.name
        (span,) = timeline.signs
        middle = (span.first_frame + span.last_frame) // 2
        assert not np.array_equal(frames[middle], at_rest[middle]), sign.name


def test_lead_in_and_out_are_drawn_per_clip_within_the_range():
    signer = tiny_signer()
    leads = set()
    for repetition in range(8):
        timeline = clip_timeline(SIGNS[0], signer, repetition, seed=5, fps=FPS, seconds=0.8, lead_seconds=(0.3, 1.0))
        (span,) = timeline.signs
        moving = [index for index, pose in enumerate(timeline.poses) if pose != rest_pose()]
        lead_in, lead_out = moving[0], len(timeline.poses) - 1 - moving[-1]
        assert 0.3 * FPS <= lead_in <= 1.0 * FPS and 0.3 * FPS <= lead_out <= 1.0 * FPS
        assert moving[0] < span.first_frame <= span.last_frame < moving[-1]   # transitions around the sign
        leads.add(lead_in)
    assert len(leads) > 1


def test_a_signer_at_rest_sways_and_breathes_but_stays_in_place():
    signer = replace(tiny_signer(), noise_sigma=0.0)       # noise would hide what is measured here
    timeline = Timeline(5, (5, 99), [rest_pose()] * (10 * FPS))
    frames = render_timeline(timeline, signer, FPS)        # (100, 72, 96, 3) uint8 BGR
    figure = np.abs(frames.astype(np.int16) - draw_background(signer)).max(axis=-1) > 30   # (100, 72, 96)
    centre_x = [np.nonzero(mask)[1].mean() for mask in figure]
    assert all(not np.array_equal(a, b) for a, b in zip(frames[:-1], frames[1:]))   # never two equal frames
    drift = (max(centre_x) - min(centre_x)) / signer.width
    assert 0.005 < drift < 0.05                             # a sway of about 1-2 % of the frame each way
    assert np.abs(np.diff(centre_x)).max() < 0.01 * signer.width    # smooth: no jumps between frames


def test_sensor_noise_has_the_signers_strength_and_changes_every_frame():
    signer = replace(tiny_signer(), noise_sigma=6.0)
    timeline = Timeline(5, (5, 98), [rest_pose()] * 6)
    noisy = render_timeline(timeline, signer, FPS).astype(np.int16)
    clean = render_timeline(timeline, replace(signer, noise_sigma=0.0), FPS).astype(np.int16)
    noise = (noisy - clean)[:, 8:-8, 8:-8]                 # away from clipping at the frame's edge
    assert 4.5 < noise.std() < 7.5
    assert all(not np.array_equal(a, b) for a, b in zip(noise[:-1], noise[1:]))


def test_idle_clips_cycle_through_the_kinds_and_never_perform_a_sign():
    assert contains_path([rest_pose()] + [SIGNS[0].pose_at(t) for t in np.linspace(0, 1, 400)], SIGNS[0])
    kinds, moved = set(), 0
    for signer_index in range(3):
        signer = make_signer(signer_index, seed=5, width=96, height=72)
        for repetition in range(6):
            kinds.add(idle_clip_kind(signer, repetition))
            poses = idle_clip_timeline(signer, repetition, seed=5, fps=25, seconds=3.0).poses
            assert len(poses) == 75
            for sign in SIGNS:
                assert not contains_path(poses, sign), (signer_index, repetition, sign.name)
            moved += any(np.abs(hands(pose) - hands(rest_pose())).max() > 0.1 for pose in poses)
    assert kinds == set(IDLE_KINDS)
    assert moved >= 6          # fidgeting and moving into position (two thirds of the clips) really move


def test_idle_stream_is_long_mixes_kinds_and_never_performs_a_sign():
    signer = tiny_signer()
    timeline = idle_stream_timeline(signer, 0, seed=5, fps=25, seconds=30.0, vocabulary=SIGNS)
    assert len(timeline.poses) == 30 * 25 and timeline.signs == []
    positions = np.array([hands(pose) for pose in timeline.poses])          # (750, 4)
    away = np.abs(positions - hands(rest_pose())).max(axis=1)
    assert (away == 0).mean() > 0.2                                          # stands at rest a good part
    assert ((away > 0.02) & (positions[:, 1] > 0.6) & (positions[:, 3] > 0.6)).any()   # fidgets near rest
    assert (np.minimum(positions[:, 1], positions[:, 3]) < 0.5).any()        # a hand up in the signing space
    for sign in SIGNS:
        assert not contains_path(timeline.poses, sign), sign.name


def test_sign_stream_spans_are_the_signs_in_order_with_rest_around():
    signer = tiny_signer()
    recipe = StreamRecipe(SIGNS[:3], sign_seconds=0.8, signs_per_stream=(4, 6), gap_seconds=(0.8, 2.0))
    for stream_index in range(3):
        timeline = sign_stream_timeline(signer, stream_index, seed=5, fps=FPS, recipe=recipe)
        spans = timeline.signs
        assert 4 <= len(spans) <= 6
        assert all(a.sign != b.sign for a, b in zip(spans[:-1], spans[1:]))
        assert all(a.last_frame + 0.8 * FPS < b.first_frame for a, b in zip(spans[:-1], spans[1:]))
        lead = int(STREAM_LEAD_SECONDS[0] * FPS)
        assert timeline.poses[:lead] == [rest_pose()] * lead and timeline.poses[-lead:] == [rest_pose()] * lead
        for span in spans:
            performed = timeline.poses[span.first_frame: span.last_frame + 1]
            assert is_performance_of(performed, sign_named(span.sign))
            assert not any(is_performance_of(performed, sign) for sign in recipe.vocabulary if sign.name != span.sign)
