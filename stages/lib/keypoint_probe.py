"""Keypoints instead of MobileNetV2 embeddings, measured on a pipeline workspace (used by stages/devset.py).

Usage:
    from stages.lib.keypoint_probe import keypoint_row
    row = keypoint_row(Path("~/.cache/signlang/devset/wlasl50").expanduser())   # after the default run
    row["val_accuracy"], row["test_top3_accuracy"]

The question it answers: with everything else the pipeline's own (its sampled frames, its split,
its windows and jitter, its head, its training loop and early stopping on validation), how much do
body and hand keypoints (stages/lib/keypoints.py) give instead of the ImageNet embedding? It reads
the frames `sample` cached (`paths.frames`), writes per-frame keypoint features beside the
embeddings in the same layout (`features/keypoints.h5`, made once per frames file), trains the
default head (without its temporal centring, see build_head) on them with `train.*` from the
workspace's params, and scores the centred window of
every validation and test clip, as `evaluate` does. Not a pipeline backbone yet: the served model
and the live path still run MobileNetV2.
"""
from __future__ import annotations

import time
from pathlib import Path

import h5py
import keras
import numpy as np
import yaml
from tqdm import tqdm

from stages.lib.datasets import NO_SIGN_LABEL
from stages.lib.embeddings import class_names, load_split
from stages.lib.keypoints import KEYPOINT_FEATURES, KEYPOINT_SOURCE, KeypointExtractor
from stages.lib.storage import CLIP_COLUMNS, clip_slice, read_clip_table, read_offsets, write_clip_columns
from stages.lib.windows import centred_window
from stages.train import (
    TrainingWindows,
    fitting_callbacks,
    seed_everything,
    train_head,
    validation_windows,
    window_settings,
)

KEYPOINTS_FILE = "features/keypoints.h5"


def frames_identity(frames_path: Path) -> str:
    """What the keypoints were computed from: the frames file's size and modification time."""
    status = frames_path.stat()
    return f"{status.st_size}:{status.st_mtime_ns}"


def write_keypoint_features(frames_path: Path, output_path: Path) -> None:
    """(total frames, KEYPOINT_FEATURES) float32 per sampled frame, the frames file's offsets and clip columns."""
    identity = frames_identity(frames_path)
    if output_path.exists():
        with h5py.File(output_path, "r") as handle:
            if handle.attrs.get("frames_identity") == identity:
                return
    extractor = KeypointExtractor()
    offsets = read_offsets(frames_path)
    partial = output_path.with_name(output_path.name + ".partial")
    with h5py.File(frames_path, "r") as source, h5py.File(partial, "w") as handle:
        features = handle.create_dataset("embeddings", shape=(int(offsets[-1]), KEYPOINT_FEATURES),
                                         dtype="float32", track_times=False)
        for clip in tqdm(range(len(offsets) - 1), desc="keypoints", unit="clip"):
            rows = clip_slice(offsets, clip)
            features[rows] = extractor.features(source["frames"][rows])     # (clip frames, KEYPOINT_FEATURES)
        handle.create_dataset("offsets", data=offsets, track_times=False)
        write_clip_columns(handle, {name: list(values) for name, values in read_clip_table(frames_path).items()
                                    if name in CLIP_COLUMNS})
        handle.attrs.update({"frames_identity": identity, "source": KEYPOINT_SOURCE})
    partial.replace(output_path)


def top_k_accuracy(probabilities: np.ndarray, labels: np.ndarray, k: int) -> float:
    top = np.argsort(probabilities, axis=1)[:, ::-1][:, :k]
    return float(np.mean([label in row for label, row in zip(labels, top)]))


def centred_windows(clips: list[np.ndarray], seq_len: int) -> np.ndarray:
    return np.stack([clip[centred_window(len(clip), seq_len)] for clip in clips])   # (clips, seq_len, features)


def keypoint_row(workspace: Path) -> dict:
    """Validation and test top-1 / top-3 of the default head on keypoints; the workspace has run `sample`."""
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    settings, seq_len, seed = params["train"], int(params["base"]["seq_len"]), int(params["base"]["seed"])
    started = time.perf_counter()
    features_path = workspace / KEYPOINTS_FILE
    write_keypoint_features(workspace / params["paths"]["frames"], features_path)
    extracted = time.perf_counter()

    seed_everything(seed)
    classes = class_names(features_path)
    no_sign_index = classes.index(NO_SIGN_LABEL) if NO_SIGN_LABEL in classes else None
    splits = {name: load_split(features_path, name, classes) for name in ("train", "val", "test")}
    jitter = window_settings(settings)
    windows = TrainingWindows(splits["train"], seq_len, settings["batch_size"], settings["windows_per_clip"],
                              jitter, seed, no_sign_index, settings["edge_windows"])
    validation = validation_windows(splits["val"], seq_len, jitter, seed, no_sign_index)
    # No temporal centring: keypoints are in body coordinates already, and where the hands are is part
    # of the sign (with centring: validation top-1 0.129 and 0.048 for seeds 42 and 1; without: 0.242, 0.274).
    head = train_head(windows, validation, len(classes), settings, fitting_callbacks(settings), centre_in_time=False)
    row = {"row": "body and hand keypoints (MediaPipe) instead of MobileNetV2 embeddings, the default head "
                  "without temporal centring"}
    for name, prefix in (("val", "val_"), ("test", "test_")):
        probabilities = head.predict(centred_windows(splits[name].clips, seq_len), verbose=0)
        row[prefix + "accuracy"] = top_k_accuracy(probabilities, splits[name].labels, 1)
        row[prefix + "top3_accuracy"] = top_k_accuracy(probabilities, splits[name].labels, 3)
    keras.backend.clear_session()
    return {**row, "seconds": round(time.perf_counter() - started),
            "extraction_seconds": round(extracted - started)}
