"""Stage `finetune`: optionally train the whole CNN+LSTM end to end, with the top of MobileNetV2 unfrozen.

Usage:
    python -m stages.finetune                          # reads params.yaml: base.seed, backbone, finetune
    dvc exp run -S finetune.enabled=true               # the end-to-end experiment

`finetune.enabled: false` (default) writes only `{"enabled": false}` into
`paths.finetuned`: the assemble stage then serves the trained head on the
plain backbone. Because that file is byte-identical whatever the other
`finetune.*` params say, changing them while fine-tuning is off re-runs this
stage (a second, no TensorFlow) and nothing after it.

`true` unfreezes the top `finetune.unfreeze_blocks` MobileNetV2 blocks
(BatchNorm kept in inference mode), starts from the trained head, and trains
on windows of frames drawn anew every epoch exactly as the head's training
drew windows of embeddings (position and speed from the head card), each
window augmented anew (crop, rotation, brightness, contrast; flip only if
enabled). The training graph folds time into the batch, (batch x seq_len,
H, W, 3) through the encoder, because Keras 3 traced `TimeDistributed` for
73-110 s here; it is the same function as the served TimeDistributed graph,
with the same layers. Validation picks the kept weights; the test split is
never read. Writes the tuned encoder and head weights into
`paths.finetuned`, curves and summary.json (per-epoch time, trace time, peak
RSS, precision probe) into `paths.finetune_logs`, TensorBoard events into
`paths.finetune_tensorboard`.

Precision (`finetune.mixed_precision`): `auto` takes mixed_float16 on a GPU;
on a CPU it times a trainable step under float32 and mixed_bfloat16 once per
machine (CPU model, TensorFlow version, image size, blocks) and caches the
choice, so two runs on one machine train under the same policy. The global
seed is set after the probe, so the probe cannot shift what training draws.
More than one visible GPU trains under MirroredStrategy.
"""
from __future__ import annotations

import json
import resource
import shutil
import time
from pathlib import Path

import h5py
import numpy as np

from stages.lib.machine import cpu_description
from stages.lib.finetuned import FINETUNED_ENCODER_WEIGHTS, FINETUNED_HEAD_WEIGHTS, FINETUNED_STATUS
from stages.lib.params import load_params
from stages.lib.storage import clip_slice, read_clip_table, read_offsets, write_json

# TensorFlow and Keras are imported inside the functions that train: with fine-tuning off
# (the default) this stage only writes its status file, in a second instead of ten.

CPU_POLICY_CANDIDATES = ("float32", "mixed_bfloat16")
PRECISION_CACHE_FILE = "precision_choice.json"   # in the weights cache folder (~/.cache/signlang)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def inner_mobilenet(encoder):
    """The MobileNetV2 model nested inside the frame encoder."""
    import keras
    return next(layer for layer in encoder.layers if isinstance(layer, keras.Model))


def unfreeze_top_blocks(mobilenet, blocks: int) -> list[str]:
    """Make the last `blocks` inverted-residual blocks and the final 1x1 conv trainable.

    BatchNormalization stays frozen, which in Keras 3 also keeps it in inference
    mode: small fine-tuning batches would otherwise wreck its running statistics.
    Returns the names of the layers that became trainable.
    """
    import keras
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
    import keras

    from stages.lib.backbone import build_frame_encoder
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


def machine_key(image_size: int, blocks: int) -> str:
    import tensorflow as tf
    cpu = cpu_description()
    return (f"{cpu['cpu_model']}|{cpu['machine']}|{cpu['cpu_vector_extensions']}|tf {tf.__version__}|"
            f"{image_size}px|{blocks} blocks")


def resolve_precision_policy(setting: str, image_size: int, blocks: int) -> tuple[str, dict]:
    """The policy to train under, and the probe timings that chose it (for the record).

    auto: mixed_float16 on a GPU; on a CPU, whichever of float32 and
    mixed_bfloat16 is faster *here*, measured once per machine and cached
    (bfloat16 was slower than float32 on this project's AVX-512-BF16 CPU, but
    that is not true of every CPU). A cached decision comes back with its
    timings and `probe_cached: true`.
    """
    import tensorflow as tf

    from stages.lib.backbone import weights_cache_dir
    if setting != "auto":
        return setting, {}
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16", {}
    cache_path = weights_cache_dir() / PRECISION_CACHE_FILE
    key = machine_key(image_size, blocks)
    cached = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    if key in cached:
        return cached[key]["policy"], {**cached[key]["timings"], "probe_cached": True}
    timings = {policy: time_training_step(policy, image_size, blocks) for policy in CPU_POLICY_CANDIDATES}
    policy = min(timings, key=timings.get)
    record = {f"probe_step_seconds_{p}": round(t, 3) for p, t in timings.items()}
    cached[key] = {"policy": policy, "timings": record}
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    write_json(cache_path, cached)
    return policy, {**record, "probe_cached": False}


def distribution_strategy():
    """MirroredStrategy over all GPUs when there are several; the default strategy otherwise."""
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()


def window_dataset(frames_path: str, split: str, classes: list[str], no_sign_label: str | None, seq_len: int,
                   head_train_params: dict, batch_size: int, seed: int, augment_settings: dict | None):
    """tf.data of (frames (batch, seq_len, H, W, 3) uint8, labels (batch,)) windows read lazily from HDF5.

    Training (`augment_settings` given): random windows, planned anew each epoch
    from (seed, epoch), each augmented with its own stateless seed. Validation:
    the centred window of every clip, the same each epoch. Nothing is cached.
    """
    import tensorflow as tf

    from stages.lib.augment import augment_clip
    from stages.lib.windows import WindowJitter, centred_window, random_window
    table = read_clip_table(frames_path)
    offsets = read_offsets(frames_path)
    clips = np.flatnonzero(table["splits"] == split)
    class_index = {name: i for i, name in enumerate(classes)}
    labels = np.array([class_index[label] for label in table["labels"]], np.int64)
    no_sign_index = class_index.get(no_sign_label) if no_sign_label else None
    jitter = WindowJitter(head_train_params["position_jitter"], head_train_params["speed_jitter"])
    with h5py.File(frames_path, "r") as handle:
        frame_shape = handle["frames"].shape[1:]                       # (H, W, 3)
    epoch = [0]

    def windows():
        handle = h5py.File(frames_path, "r")
        try:
            rng = np.random.default_rng([seed, epoch[0]])
            order = rng.permutation(clips) if augment_settings is not None else clips
            for clip in order:
                rows = clip_slice(offsets, clip)
                length = rows.stop - rows.start
                indices = (random_window(length, seq_len, rng, jitter, anywhere=labels[clip] == no_sign_index)
                           if augment_settings is not None else centred_window(length, seq_len))
                unique, inverse = np.unique(indices, return_inverse=True)   # h5py reads increasing rows
                yield handle["frames"][rows.start + unique][inverse], labels[clip]
        finally:
            handle.close()
            epoch[0] += 1

    signature = (tf.TensorSpec((seq_len, *frame_shape), tf.uint8), tf.TensorSpec((), tf.int64))
    dataset = tf.data.Dataset.from_generator(windows, output_signature=signature)
    if augment_settings is not None:
        # One fresh seed per window per epoch: a new augmentation every epoch, reproducible run to run.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            lambda window, s: (augment_clip(window[0], tf.cast(s % (2 ** 31), tf.int32), augment_settings),
                               window[1]),
            num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE), len(clips)


def build_training_graph(encoder, head, seq_len: int):
    """(batch, seq_len, H, W, 3) uint8 -> probabilities, time folded into the batch for the encoder.

    Same layers, same function as `build_full_model`'s TimeDistributed graph,
    but it traces in seconds instead of minutes.
    """
    import keras
    image_size = encoder.input_shape[1]
    frames = keras.Input((seq_len, image_size, image_size, 3), dtype="uint8", name="frames")
    flat = keras.layers.Reshape((image_size, image_size, 3))(keras.ops.reshape(frames, (-1, image_size,
                                                                                       image_size, 3)))
    embeddings = keras.ops.reshape(encoder(flat), (-1, seq_len, encoder.output_shape[-1]))   # (batch, T, 1280)
    return keras.Model(frames, head(embeddings), name="sign_recognizer_training")


def epoch_timer():
    """(Keras callback, list it fills with each epoch's wall seconds; the first includes the trace)."""
    import keras
    seconds: list[float] = []
    started = [0.0]
    callback = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: started.__setitem__(0, time.perf_counter()),
        on_epoch_end=lambda epoch, logs: seconds.append(round(time.perf_counter() - started[0], 1)))
    return callback, seconds


def finetune_end_to_end(params: dict, head_card: dict, policy: str) -> dict:
    """Unfreeze the top of the backbone and train encoder + head on frame windows; best validation kept."""
    import keras
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    from stages.lib.backbone import build_frame_encoder
    from stages.lib.models import build_head, load_model
    settings, paths, seed = params["finetune"], params["paths"], params["base"]["seed"]
    seq_len, image_size = int(head_card["seq_len"]), int(head_card["image_size"])
    keras.mixed_precision.set_global_policy(policy)
    with distribution_strategy().scope():
        encoder, weights_source = build_frame_encoder(image_size, params["backbone"]["weights"])
        if weights_source != head_card["weights_source"]:
            raise SystemExit(f"backbone weights now resolve to {weights_source!r} but the head was trained on "
                             f"embeddings from {head_card['weights_source']!r}: run `dvc repro` from extract")
        train_settings = head_card["train_params"]
        head = build_head(seq_len, len(head_card["labels"]), train_settings["lstm_units"],
                          train_settings["dropout"])
        head.set_weights(load_model(paths["head"]).get_weights())
        unfrozen = unfreeze_top_blocks(inner_mobilenet(encoder), settings["unfreeze_blocks"])
        model = build_training_graph(encoder, head, seq_len)
        model.compile(optimizer=keras.optimizers.Adam(settings["learning_rate"]),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    common = dict(frames_path=paths["frames"], classes=head_card["labels"], no_sign_label=head_card["no_sign_label"],
                  seq_len=seq_len, head_train_params=train_settings, batch_size=settings["batch_size"], seed=seed)
    train_data, train_count = window_dataset(split="train", augment_settings=settings["augment"], **common)
    val_data, val_count = window_dataset(split="val", augment_settings=None, **common)
    output_dir = Path(paths["finetuned"])
    best_weights = output_dir / "best.weights.h5"
    timer, epoch_seconds = epoch_timer()
    with Live(dir=paths["finetune_logs"], dvcyaml=None, save_dvc_exp=False, report=None) as live:
        live.log_params({key: value for key, value in settings.items() if key != "augment"})
        callbacks = [
            DVCLiveCallback(live=live), timer,
            keras.callbacks.TensorBoard(log_dir=paths["finetune_tensorboard"]),
            # Validation picks the weights we keep; the test split is never read here.
            keras.callbacks.ModelCheckpoint(best_weights, monitor="val_loss", save_best_only=True,
                                            save_weights_only=True),
        ]
        history = model.fit(train_data, validation_data=val_data, epochs=settings["epochs"],
                            callbacks=callbacks, verbose=2)
    model.load_weights(best_weights)
    best_weights.unlink()
    keras.mixed_precision.set_global_policy("float32")
    # Stored in float32 whatever the training policy: the assemble stage serves float32.
    save_float32_weights(encoder, output_dir / FINETUNED_ENCODER_WEIGHTS, lambda: build_frame_encoder(image_size, "random")[0])
    save_float32_weights(head, output_dir / FINETUNED_HEAD_WEIGHTS,
                         lambda: build_head(seq_len, len(head_card["labels"]), train_settings["lstm_units"],
                                            train_settings["dropout"]))
    steady = epoch_seconds[1:] or epoch_seconds
    return {"unfrozen_layers": len(unfrozen), "train_clips": train_count, "val_clips": val_count,
            "epochs_run": len(history.history["loss"]), "epoch_seconds": epoch_seconds,
            "first_epoch_extra_seconds_trace": round(epoch_seconds[0] - float(np.median(steady)), 1),
            "best_val_loss": float(min(history.history["val_loss"])),
            "best_val_accuracy": float(max(history.history["val_accuracy"]))}


def save_float32_weights(trained, path: Path, build_float32) -> None:
    """Copy trained weights (any policy) into a float32 twin and save that twin's weights."""
    twin = build_float32()
    twin.set_weights([np.asarray(value, np.float32) for value in trained.get_weights()])
    twin.save_weights(path)


def main() -> None:
    params = load_params()
    settings, paths, seed = params["finetune"], params["paths"], params["base"]["seed"]
    output_dir = Path(paths["finetuned"])
    for folder in (output_dir, Path(paths["finetune_logs"]), Path(paths["finetune_tensorboard"])):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    summary: dict = {"finetune_enabled": bool(settings["enabled"])}
    if settings["enabled"]:
        import keras
        head_card = json.loads(Path(paths["labels"]).read_text())
        started = time.perf_counter()
        policy, probe = resolve_precision_policy(settings["mixed_precision"], int(head_card["image_size"]),
                                                 settings["unfreeze_blocks"])
        keras.utils.set_random_seed(seed)      # after the probe: it must not shift what training draws
        summary.update(precision_policy=policy, **probe)
        summary.update(finetune_end_to_end(params, head_card, policy))
        summary.update(stage_seconds=round(time.perf_counter() - started, 1), peak_rss_mb=round(peak_rss_mb(), 1))
    # The status file is all the assemble stage reads besides the weights: byte-identical while disabled.
    write_json(output_dir / FINETUNED_STATUS, {"enabled": bool(settings["enabled"]),
                                          **({"precision_policy_trained": summary["precision_policy"]}
                                             if settings["enabled"] else {})})
    write_json(Path(paths["finetune_logs"]) / "summary.json", summary)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
