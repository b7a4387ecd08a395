"""Stage `train`: fit the BiLSTM head on cached embeddings (no CNN in the loop).

Usage:
    python -m stages.train             # reads params.yaml: base.seed, train

Keras `fit` on the train split with the validation split for EarlyStopping,
ReduceLROnPlateau and the best checkpoint; the test split is never read here.
Writes `paths.head` (best-by-validation model), `paths.labels` (class names in
output order, with what the head needs to be used alone), dvclive curves under
`paths.train_logs` and TensorBoard events under `paths.tensorboard`.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from dvclive import Live
from dvclive.keras import DVCLiveCallback

from stages.lib.embeddings import class_names, load_split
from stages.lib.models import build_head
from stages.lib.params import load_params
from stages.lib.storage import read_attributes, write_json


def seed_everything(seed: int) -> None:
    """Same data, same params, same model: seeds plus deterministic TF ops."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def training_callbacks(settings: dict, paths: dict, live: Live) -> list[keras.callbacks.Callback]:
    """Everything watches `val_loss`: validation picks the checkpoint, never test."""
    return [
        DVCLiveCallback(live=live),
        keras.callbacks.TensorBoard(log_dir=paths["tensorboard"] + "/train_head"),
        keras.callbacks.ModelCheckpoint(paths["head"], monitor="val_loss", save_best_only=True),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=settings["patience"],
                                      restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                          patience=max(settings["patience"] // 3, 1), min_lr=1e-6),
    ]


def train_head(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
               num_classes: int, settings: dict, callbacks: list) -> keras.Model:
    """Build and fit the head; returns it with the best validation weights restored."""
    head = build_head(x_train.shape[1], num_classes, settings["lstm_units"], settings["dropout"])
    head.compile(optimizer=keras.optimizers.Adam(settings["learning_rate"]),
                 loss="sparse_categorical_crossentropy",
                 metrics=["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(k=3, name="top3")])
    head.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=settings["epochs"],
             batch_size=settings["batch_size"], shuffle=True, callbacks=callbacks, verbose=2)
    return head


def main() -> None:
    params = load_params()
    settings, paths = params["train"], params["paths"]
    seed_everything(params["base"]["seed"])
    embeddings_path = paths["embeddings"]
    classes = class_names(embeddings_path)
    x_train, y_train, _ = load_split(embeddings_path, "train", classes)   # (n, seq_len, 1280)
    x_val, y_val, _ = load_split(embeddings_path, "val", classes)
    if len(x_train) == 0 or len(x_val) == 0:
        raise SystemExit(f"train needs clips in both the train ({len(x_train)}) and val ({len(x_val)}) splits; "
                         "see data/manifest.csv")
    missing = sorted(set(range(len(classes))) - set(y_train.tolist()))
    if missing:
        print(f"WARNING: no training clip for {[classes[i] for i in missing]}; the head cannot learn them")

    for folder in (paths["train_logs"], paths["tensorboard"]):
        shutil.rmtree(folder, ignore_errors=True)  # curves of an earlier run must not mix in
    Path(paths["head"]).parent.mkdir(parents=True, exist_ok=True)
    with Live(dir=paths["train_logs"], dvcyaml=None, save_dvc_exp=False, report=None) as live:
        live.log_params(settings)
        train_head(x_train, y_train, x_val, y_val, len(classes), settings,
                   training_callbacks(settings, paths, live))

    attributes = read_attributes(embeddings_path)
    write_json(paths["labels"], {
        "labels": classes,                       # index i is the head's output i
        "seq_len": int(x_train.shape[1]),
        "image_size": attributes["image_size"],
        "sample_fps": attributes["sample_fps"],  # live frames enter at this rate
        "backbone": attributes["backbone"],
        "weights_source": attributes["weights_source"],
        "train_params": settings,
        "train_clips": int(len(x_train)), "val_clips": int(len(x_val)),
    })
    print(f"head saved to {paths['head']} ({len(classes)} classes, {len(x_train)} train / {len(x_val)} val clips)")


if __name__ == "__main__":
    main()
