"""Run Keras models fast on a CPU: TFLite with XNNPACK, or one traced tf.function.

Usage:
    from stages.lib.engines import TFLiteModel, convert_to_tflite, make_frame_engine
    engine = make_frame_engine(encoder, "tflite", batch_size=32)
    embeddings = engine.embed(frames)            # (n, H, W, 3) uint8 RGB -> (n, 1280) float32
    head = TFLiteModel(convert_to_tflite(head_model, batch_shape=(1, 20, 1280)))
    probabilities = head.run(embeddings[None])   # (1, 20, 1280) -> (1, classes)
    recipe = FrameEngineRecipe.from_encoder(encoder, "tflite", 32, tflite_cache=path)   # picklable
    same_engine = recipe.build(threads=1)        # in any process: a Ray worker builds what the driver ran

Measured on this 2-core CPU (MobileNetV2 at 224, fp32): TFLite + XNNPACK at
batch 1 ~300-350 frames/s, a traced tf.function at batch 32 ~120, `predict` ~95,
eager calls ~9. TFLite matches Keras to ~1e-5. XLA and int8 were slower here.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from stages.lib.storage import atomic_path

ENGINES = ("tflite", "keras")


def convert_to_tflite(model: keras.Model, batch_shape: tuple[int, ...] | None = None) -> bytes:
    """TFLite flatbuffer of a Keras model, optionally rebuilt with a fixed input shape.

    A fixed batch of 1 is what the BiLSTM needs to convert (its dynamic-batch
    version does not) and what a live, frame-by-frame path uses anyway.
    """
    if batch_shape is not None:
        fixed_input = keras.Input(batch_shape=batch_shape, dtype=model.inputs[0].dtype)
        model = keras.Model(fixed_input, model(fixed_input))
    # from_keras_model, not from_concrete_functions: the latter gave NaN outputs here.
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def convert_to_int8_tflite(encoder: keras.Model, calibration_frames: np.ndarray) -> bytes:
    """Full-integer post-training quantisation of a frame encoder, batch 1, uint8 in, float32 out.

    Calibrated on `calibration_frames` (n, H, W, 3) uint8 RGB: the dataset's own
    frames, so activation ranges match what the encoder will see. Runs on
    XNNPACK's int8 kernels. Measured by the benchmark stage against fp32
    (speed and cosine similarity); not used by the pipeline unless it passes.
    """
    image_size = encoder.input_shape[1]
    fixed_input = keras.Input(batch_shape=(1, image_size, image_size, 3), dtype="uint8")
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(fixed_input, encoder(fixed_input)))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([frame[None]] for frame in calibration_frames)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.float32
    return converter.convert()


def frame_encoder_tflite_path(weights_source: str, image_size: int) -> Path:
    """Where the converted frame encoder is kept: keyed by all it depends on (weights, size, converter).

    A machine-wide cache beside the fallback weights (`~/.cache/signlang`, or
    $SIGNLANG_CACHE): the extract stage converts the encoder once and runs it,
    the assemble and benchmark stages use the very same file instead of
    converting again, and so does every other checkout on the machine. The
    weights source names a weights file's content, so a new file is a new key.
    """
    from stages.lib.pinned_wheel import cache_dir
    key = hashlib.sha256(f"{weights_source}|{image_size}|tf {tf.__version__}".encode()).hexdigest()[:16]
    return cache_dir() / "frame_encoders" / f"{key}.tflite"


def cached_tflite(model: keras.Model, cache_path: Path, batch_shape: tuple[int, ...]) -> bytes:
    """Convert once and keep the flatbuffer at `cache_path` (its name must encode the weights)."""
    if cache_path.exists():
        return cache_path.read_bytes()
    flatbuffer = convert_to_tflite(model, batch_shape)
    with atomic_path(cache_path) as partial:
        partial.write_bytes(flatbuffer)
    return flatbuffer


class TFLiteModel:
    """One TFLite interpreter (XNNPACK delegate by default) with a single input and output."""

    def __init__(self, flatbuffer: bytes, num_threads: int | None = None):
        self.interpreter = Interpreter(model_content=flatbuffer, num_threads=num_threads or os.cpu_count())
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.input_shape = tuple(self.input["shape"])

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """Inputs of exactly the converted shape -> a copy of the output."""
        self.interpreter.set_tensor(self.input["index"], np.ascontiguousarray(inputs, dtype=self.input["dtype"]))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"]).copy()


class TFLiteFrameEngine:
    """Frame encoder through TFLite, one frame per call (batch 1 is XNNPACK's fastest here)."""

    name = "tflite-xnnpack"

    def __init__(self, flatbuffer: bytes, num_threads: int | None = None):
        self.model = TFLiteModel(flatbuffer, num_threads)

    def embed(self, frames: np.ndarray) -> np.ndarray:
        """(n, H, W, 3) uint8 RGB -> (n, 1280) float32."""
        return np.stack([self.model.run(frame[None])[0] for frame in frames]).astype(np.float32)


class KerasFrameEngine:
    """Frame encoder behind one traced tf.function: the plain-Keras reference path."""

    name = "keras-tf.function"

    def __init__(self, encoder: keras.Model, batch_size: int = 32):
        self.batch_size = batch_size
        image_size = encoder.input_shape[1]
        signature = [tf.TensorSpec((None, image_size, image_size, 3), tf.uint8)]
        self._call = tf.function(lambda frames: encoder(frames, training=False), input_signature=signature)

    def embed(self, frames: np.ndarray) -> np.ndarray:
        """(n, H, W, 3) uint8 RGB -> (n, 1280) float32, in batches of `batch_size`."""
        outputs = [self._call(frames[start:start + self.batch_size]).numpy()
                   for start in range(0, len(frames), self.batch_size)]
        return np.concatenate(outputs).astype(np.float32)


def make_frame_engine(encoder: keras.Model, engine: str, batch_size: int = 32,
                      tflite_cache: Path | None = None):
    """The requested engine for a frame encoder; TFLite conversions are cached when a path is given."""
    if engine == "keras":
        return KerasFrameEngine(encoder, batch_size)
    if engine == "tflite":
        image_size = encoder.input_shape[1]
        batch_shape = (1, image_size, image_size, 3)
        flatbuffer = (cached_tflite(encoder, tflite_cache, batch_shape) if tflite_cache
                      else convert_to_tflite(encoder, batch_shape))
        return TFLiteFrameEngine(flatbuffer)
    raise ValueError(f"engine {engine!r}; allowed values: {', '.join(ENGINES)}")


@dataclass(frozen=True)
class FrameEngineRecipe:
    """What any process needs to build the very frame engine the driver would run: picklable.

    TFLite: the converted flatbuffer itself, so every worker runs the same bytes
    (no weights download, no converter version of its own). Keras: the encoder's
    weights, loaded into a MobileNetV2 built anew. Thread counts do not change
    TFLite's results here (checked: 1 and 2 threads give identical bits).
    """
    engine: str                                   # tflite | keras | keypoints
    image_size: int
    batch_size: int = 32                          # keras: frames per call
    tflite_flatbuffer: bytes | None = None        # tflite: the encoder; keypoints: the two models' archive
    keras_weights: tuple[np.ndarray, ...] | None = None

    @classmethod
    def from_encoder(cls, encoder: keras.Model, engine: str, batch_size: int = 32,
                     tflite_cache: Path | None = None) -> FrameEngineRecipe:
        image_size = encoder.input_shape[1]
        if engine == "tflite":
            batch_shape = (1, image_size, image_size, 3)
            flatbuffer = (cached_tflite(encoder, tflite_cache, batch_shape) if tflite_cache
                          else convert_to_tflite(encoder, batch_shape))
            return cls(engine, image_size, batch_size, tflite_flatbuffer=flatbuffer)
        if engine == "keras":
            return cls(engine, image_size, batch_size, keras_weights=tuple(encoder.get_weights()))
        raise ValueError(f"engine {engine!r}; allowed values: {', '.join(ENGINES)}")

    @classmethod
    def for_keypoints(cls, image_size: int) -> FrameEngineRecipe:
        """MediaPipe body and hand keypoints (stages/lib/keypoints.py) instead of MobileNetV2."""
        from stages.lib.keypoints import keypoint_models_archive
        return cls("keypoints", image_size, tflite_flatbuffer=keypoint_models_archive())

    @property
    def engine_name(self) -> str:
        if self.engine == "keypoints":
            from stages.lib.keypoints import KeypointExtractor
            return KeypointExtractor.name
        return TFLiteFrameEngine.name if self.engine == "tflite" else KerasFrameEngine.name

    @property
    def feature_size(self) -> int:
        """Numbers per frame this engine's `embed` returns."""
        if self.engine == "keypoints":
            from stages.lib.keypoints import KEYPOINT_FEATURES
            return KEYPOINT_FEATURES
        from stages.lib.backbone import EMBEDDING_SIZE
        return EMBEDDING_SIZE

    def build(self, threads: int | None = None):
        """The engine, in this process; TFLite runs `threads` threads (None: every core)."""
        if self.engine == "tflite":
            return TFLiteFrameEngine(self.tflite_flatbuffer, threads)
        if self.engine == "keypoints":
            from stages.lib.keypoints import KeypointExtractor
            return KeypointExtractor.from_archive(self.tflite_flatbuffer, threads)
        from stages.lib.backbone import build_frame_encoder
        encoder, _ = build_frame_encoder(self.image_size, "random")
        encoder.set_weights(list(self.keras_weights))
        return KerasFrameEngine(encoder, self.batch_size)
