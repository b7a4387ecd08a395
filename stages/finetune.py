"""Stage `finetune`: assemble the served CNN+LSTM graph, and optionally train it end to end.

Usage:
    python -m stages.finetune                          # reads params.yaml: base.seed, backbone, finetune
    dvc exp run -S finetune.enabled=true               # the end-to-end experiment

Always writes the served model `paths.model`: uint8 RGB frames
(batch, seq_len, image_size, image_size, 3) -> MobileNetV2 preprocessing inside
the graph -> TimeDistributed(MobileNetV2) -> the trained BiLSTM head -> float32
softmax, and beside it its card (labels, seq_len, image size, sampling rate,
params), batch-1 TFLite files of the encoder, the head and the whole graph,
and a SavedModel export for TF Serving.

`finetune.enabled: false` only assembles backbone + trained head. `true`
unfreezes the top `finetune.unfreeze_blocks` MobileNetV2 blocks (BatchNorm kept
in inference mode), starts from the trained head, trains with a lower learning
rate under the chosen precision policy on clips augmented anew every epoch,
and keeps the weights of the best validation epoch. More than one visible GPU
trains under MirroredStrategy.
"""
from __future__ import annotations

import json
import resource
import shutil
import time
from pathlib import Path

import h5py
import keras
import numpy as np
import tensorflow as tf
from dvclive import Live
from dvclive.keras import DVCLiveCallback

from stages.lib.augment import augment_clip
from stages.lib.backbone import build_frame_encoder
from stages.lib.engines import convert_to_tflite
from stages.lib.models import build_full_model, build_head, load_model
from stages.lib.params import load_params
from stages.lib.served import make_card
from stages.lib.storage import read_attributes, read_clip_table, write_json

CPU_POLICY_CANDIDATES = ("float32", "mixed_bfloat16")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def inner_mobilenet(encoder: keras.Model) -> keras.Model:
    """The MobileNetV2 model nested inside the frame encoder."""
    return next(layer for layer in encoder.layers if isinstance(layer, keras.Model))


def unfreeze_top_blocks(mobilenet: keras.Model, blocks: int) -> list[str]:
    """Make the last `blocks` inverted-residual blocks and the final 1x1 conv trainable.

    BatchNormalization stays frozen, which in Keras 3 also keeps it in inference
    mode: small fine-tuning batches would otherwise wreck its running statistics.
    Returns the names of the layers that became trainable.
    """
    block_numbers = sorted({int(layer.name.split("_")[1]) for layer in mobilenet.layers
                            if layer.name.startswith("block_")})
    top_blocks = {f"block_{n}_" for n in block_numbers[-blocks:]} if blocks > 0 else set()
    mobilenet.trainable = True
    unfrozen = []
    for layer in mobilenet.layers:
        in_top = layer.name.startswith("Conv_1") or any(layer.name.startswith(p) for p in top_blocks)
        trainable = blocks > 0 and in_top and not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = trainable
        if trainable and layer.weights:
            unfrozen.append(layer.name)
    return unfrozen


def time_training_step(policy: str, image_size: int, blocks: int, frames: int = 8, repeats: int = 3) -> float:
    """Seconds per trainable step of the backbone under `policy` (median of a few, after warm-up)."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        encoder, _ = build_frame_encoder(image_size, "random")
        unfreeze_top_blocks(inner_mobilenet(encoder), blocks)
        probe = keras.Sequential([encoder, keras.layers.Dense(4, dtype="float32")])
        probe.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        x = np.zeros((frames, image_size, image_size, 3), np.uint8)
        y = np.zeros((frames,), np.int64)
        probe.train_on_batch(x, y)                                     # trace + warm-up
        durations = []
        for _ in range(repeats):
            start = time.perf_counter()
            probe.train_on_batch(x, y)
            durations.append(time.perf_counter() - start)
        return float(np.median(durations))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def resolve_precision_policy(setting: str, image_size: int, blocks: int) -> tuple[str, dict]:
    """The policy to train under, and the probe timings that chose it (for the record).

    auto: mixed_float16 on a GPU; on a CPU, whichever of float32 and
    mixed_bfloat16 is faster *here*, measured (bfloat16 was slower than float32 on
    this machine's AVX-512-BF16 CPU, but that is not true of every CPU).
    """
    if setting != "auto":
        return setting, {}
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16", {}
    timings = {policy: time_training_step(policy, image_size, blocks) for policy in CPU_POLICY_CANDIDATES}
    return min(timings, key=timings.get), {f"probe_step_seconds_{p}": round(t, 3) for p, t in timings.items()}


def distribution_strategy() -> tf.distribute.Strategy:
    """MirroredStrategy over all GPUs when there are several; the default strategy otherwise."""
    gpus = tf.config.list_physical_devices("GPU")
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()


def clip_dataset(frames_path: str, split: str, classes: list[str], batch_size: int, seed: int,
                 augment_settings: dict | None) -> tuple[tf.data.Dataset, int]:
    """(frames (batch, T, H, W, 3) uint8, labels (batch,)) from the sampled-frames HDF5, read lazily.

    Training data is reshuffled and re-augmented every epoch; nothing is cached.
    """
    table = read_clip_table(frames_path)
    indices = np.flatnonzero(table["splits"] == split)
    class_index = {name: i for i, name in enumerate(classes)}
    labels = np.array([class_index[label] for label in table["labels"]], np.int64)
    with h5py.File(frames_path, "r") as handle:
        clip_shape = handle["frames"].shape[1:]                        # (T, H, W, 3)
    handle = h5py.File(frames_path, "r")                              # kept open for the dataset's life

    def read_clip(index: np.int64) -> tuple[np.ndarray, np.int64]:
        return handle["frames"][int(index)], labels[int(index)]

    dataset = tf.data.Dataset.from_tensor_slices(indices)
    if augment_settings is not None:
        dataset = dataset.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(lambda i: tf.numpy_function(read_clip, [i], (tf.uint8, tf.int64)))
    dataset = dataset.map(lambda frames, label: (tf.ensure_shape(frames, clip_shape), tf.ensure_shape(label, [])))
    if augment_settings is not None:
        # One fresh seed per clip per epoch: a new augmentation every epoch, reproducible run to run.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            lambda clip, s: (augment_clip(clip[0], tf.cast(s % (2 ** 31), tf.int32), augment_settings), clip[1]),
            num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE), len(indices)


def assemble_graph(image_size: int, weights: str, seq_len: int, head_card: dict,
                   trained_head: keras.Model) -> tuple[keras.Model, keras.Model, keras.Model, str]:
    """Frame encoder + a head rebuilt under the current dtype policy with the trained weights."""
    encoder, weights_source = build_frame_encoder(image_size, weights)
    settings = head_card["train_params"]
    head = build_head(seq_len, len(head_card["labels"]), settings["lstm_units"], settings["dropout"])
    head.set_weights(trained_head.get_weights())
    return build_full_model(encoder, head, seq_len), encoder, head, weights_source


def finetune_end_to_end(model: keras.Model, encoder: keras.Model, settings: dict, paths: dict,
                        frames_path: str, classes: list[str], seed: int) -> dict:
    """Unfreeze the top of the backbone and train the whole graph; best validation weights kept."""
    unfrozen = unfreeze_top_blocks(inner_mobilenet(encoder), settings["unfreeze_blocks"])
    train_data, train_count = clip_dataset(frames_path, "train", classes, settings["batch_size"], seed,
                                           settings["augment"])
    val_data, val_count = clip_dataset(frames_path, "val", classes, settings["batch_size"], seed, None)
    model.compile(optimizer=keras.optimizers.Adam(settings["learning_rate"]),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    best_weights = Path(paths["finetune_logs"]) / "best.weights.h5"
    with Live(dir=paths["finetune_logs"], dvcyaml=None, save_dvc_exp=False, report=None) as live:
        live.log_params({key: value for key, value in settings.items() if key != "augment"})
        callbacks = [
            DVCLiveCallback(live=live),
            keras.callbacks.TensorBoard(log_dir=paths["tensorboard"] + "/finetune"),
            # Validation picks the weights we keep; the test split is never read here.
            keras.callbacks.ModelCheckpoint(best_weights, monitor="val_loss", save_best_only=True,
                                            save_weights_only=True),
        ]
        started = time.perf_counter()
        history = model.fit(train_data, validation_data=val_data, epochs=settings["epochs"],
                            callbacks=callbacks, verbose=2)
    model.load_weights(best_weights)
    best_weights.unlink()
    return {"unfrozen_layers": len(unfrozen), "train_clips": train_count, "val_clips": val_count,
            "epochs_run": len(history.history["loss"]), "train_seconds": round(time.perf_counter() - started, 1),
            "best_val_loss": float(min(history.history["val_loss"]))}


def export_bundle(model: keras.Model, encoder: keras.Model, head: keras.Model, card: dict, paths: dict,
                  serving_exports: bool = True) -> None:
    """The served model and everything needed to use it alone, next to each other.

    `serving_exports=False` skips the whole-graph TFLite file and the SavedModel
    (most of the export time; neither the app nor the live path reads them).
    """
    seq_len, image_size = card["seq_len"], card["image_size"]
    model_dir = Path(paths["model"]).parent
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save(paths["model"])
    Path(paths["frame_encoder_tflite"]).write_bytes(convert_to_tflite(encoder, (1, image_size, image_size, 3)))
    Path(paths["head_tflite"]).write_bytes(convert_to_tflite(head, (1, seq_len, head.input_shape[-1])))
    written = ["model", "frame_encoder_tflite", "head_tflite"]
    if serving_exports:
        Path(paths["model_tflite"]).write_bytes(convert_to_tflite(model, (1, seq_len, image_size, image_size, 3)))
        shutil.rmtree(paths["saved_model"], ignore_errors=True)
        model.export(paths["saved_model"], format="tf_saved_model", verbose=False)
        written += ["model_tflite", "saved_model"]
    card["files"] = {name: Path(paths[name]).relative_to(model_dir).as_posix() for name in written}
    write_json(paths["model_card"], card)


def main() -> None:
    params = load_params()
    settings, paths, seed = params["finetune"], params["paths"], params["base"]["seed"]
    keras.utils.set_random_seed(seed)
    head_card = json.loads(Path(paths["labels"]).read_text())
    frame_attributes = read_attributes(paths["frames"])
    seq_len, image_size = int(frame_attributes["seq_len"]), int(frame_attributes["image_size"])
    trained_head = load_model(paths["head"])
    summary: dict = {"finetune_enabled": bool(settings["enabled"])}
    shutil.rmtree(paths["finetune_logs"], ignore_errors=True)
    Path(paths["finetune_logs"]).mkdir(parents=True)

    if settings["enabled"]:
        policy, probe = resolve_precision_policy(settings["mixed_precision"], image_size, settings["unfreeze_blocks"])
        summary.update(precision_policy=policy, **probe)
        keras.mixed_precision.set_global_policy(policy)
        with distribution_strategy().scope():
            model, encoder, head, weights_source = assemble_graph(
                image_size, params["backbone"]["weights"], seq_len, head_card, trained_head)
            summary.update(finetune_end_to_end(model, encoder, settings, paths, paths["frames"],
                                               head_card["labels"], seed))
        # Serve in float32 whatever the training policy: same weights, no half-precision surprises on CPUs.
        keras.mixed_precision.set_global_policy("float32")
        served, served_encoder, served_head, _ = assemble_graph(
            image_size, "random", seq_len, head_card, head)
        served.set_weights(model.get_weights())
        model, encoder, head = served, served_encoder, served_head
    else:
        summary["precision_policy"] = "float32"
        model, encoder, head, weights_source = assemble_graph(
            image_size, params["backbone"]["weights"], seq_len, head_card, trained_head)
    if weights_source != head_card["weights_source"]:
        raise SystemExit(f"backbone weights now resolve to {weights_source!r} but the head was trained on "
                         f"embeddings from {head_card['weights_source']!r}: run `dvc repro` from extract")

    card = make_card(head_card["labels"], seq_len, image_size, frame_attributes["sample_fps"], weights_source,
                     head_card["train_params"], settings, summary["precision_policy"])
    export_bundle(model, encoder, head, card, paths)
    summary["peak_rss_mb"] = round(peak_rss_mb(), 1)
    write_json(Path(paths["finetune_logs"]) / "summary.json", summary)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
