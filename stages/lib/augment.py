"""On-the-fly clip augmentation in tf.data: new random draws every epoch, never cached.

Usage:
    from stages.lib.augment import augment_clip
    dataset = dataset.map(lambda frames, label, seed: (augment_clip(frames, seed, settings), label))
    # frames: (T, H, W, 3) uint8 RGB -> (T, H, W, 3) uint8 RGB

One draw per window, applied to every frame of it (a sign is one camera, one
light): random resized crop and small rotation in a single affine warp,
brightness and contrast, and an optional horizontal flip, off by default
because it turns a right-handed sign into a left-handed one and swaps
direction-dependent signs. Time (where the window starts, how fast it runs)
is varied by the window sampling itself (stages/lib/windows.py), not here.
Stateless random ops keyed by a per-element seed keep runs reproducible.
"""
from __future__ import annotations

import math

import tensorflow as tf


def uniform(seed: tf.Tensor, index: int, low: float, high: float) -> tf.Tensor:
    """One stateless random scalar; `index` separates the draws made from the same seed."""
    return tf.random.stateless_uniform([], seed=tf.stack([seed, index]), minval=low, maxval=high)


def crop_rotate_matrix(seed: tf.Tensor, height: int, width: int, min_scale: float, max_degrees: float) -> tf.Tensor:
    """Projective transform (8 numbers) mapping output pixels to input pixels: zoom into a random crop, rotate."""
    scale = uniform(seed, 0, min_scale, 1.0)                      # share of the frame the crop keeps
    angle = uniform(seed, 1, -max_degrees, max_degrees) * (math.pi / 180.0)
    centre_x, centre_y = (width - 1) / 2.0, (height - 1) / 2.0
    shift_x = uniform(seed, 2, -1.0, 1.0) * (1.0 - scale) * width / 2.0
    shift_y = uniform(seed, 3, -1.0, 1.0) * (1.0 - scale) * height / 2.0
    cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
    return tf.stack([
        cos, -sin, centre_x + shift_x - (cos * centre_x - sin * centre_y),
        sin, cos, centre_y + shift_y - (sin * centre_x + cos * centre_y),
        0.0, 0.0])


def augment_clip(frames: tf.Tensor, seed: tf.Tensor, settings: dict) -> tf.Tensor:
    """(T, H, W, 3) uint8 -> (T, H, W, 3) uint8, one random draw per clip from `seed` (int32 scalar)."""
    length, height, width = frames.shape[0], frames.shape[1], frames.shape[2]
    seed = tf.cast(seed, tf.int32)
    transform = crop_rotate_matrix(seed, height, width, settings["crop_scale_min"], settings["rotation_degrees"])
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(frames, tf.float32), transforms=tf.tile(transform[None], [length, 1]),
        output_shape=tf.constant([height, width]), fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")            # black fill, like the letterbox bars
    brightness = uniform(seed, 6, -settings["brightness"], settings["brightness"]) * 255.0
    contrast = uniform(seed, 7, 1.0 - settings["contrast"], 1.0 + settings["contrast"])
    mean = tf.reduce_mean(warped)
    adjusted = (warped - mean) * contrast + mean + brightness
    if settings["horizontal_flip"]:
        adjusted = tf.cond(uniform(seed, 8, 0.0, 1.0) < 0.5, lambda: tf.reverse(adjusted, axis=[2]),
                           lambda: adjusted)
    return tf.cast(tf.clip_by_value(tf.round(adjusted), 0.0, 255.0), tf.uint8)
