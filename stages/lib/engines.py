"""Run the frame encoder fast: a compiled Keras call with fixed batch shapes.

Usage:
    from stages.lib.engines import KerasFrameEngine
    engine = KerasFrameEngine(encoder, batch_size=32)
    embeddings = engine.embed(frames)      # (n, H, W, 3) uint8 RGB -> (n, 1280) float32

`model.predict` rebuilds its data pipeline on every call and eager calls are
~10x slower; one `tf.function` traced once for a (None, H, W, 3) input is the
fastest plain-Keras path measured here (see docs/measurements).
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


class KerasFrameEngine:
    """The Keras frame encoder behind one traced tf.function."""

    name = "keras-tf.function"

    def __init__(self, encoder: keras.Model, batch_size: int = 32):
        self.encoder = encoder
        self.batch_size = batch_size
        image_size = encoder.input_shape[1]
        signature = [tf.TensorSpec((None, image_size, image_size, 3), tf.uint8)]
        self._call = tf.function(lambda frames: encoder(frames, training=False), input_signature=signature)

    def embed(self, frames: np.ndarray) -> np.ndarray:
        """(n, H, W, 3) uint8 RGB -> (n, 1280) float32, in batches of `batch_size`."""
        outputs = [self._call(frames[start:start + self.batch_size]).numpy()
                   for start in range(0, len(frames), self.batch_size)]
        return np.concatenate(outputs).astype(np.float32) if outputs else np.zeros((0, 1280), np.float32)
