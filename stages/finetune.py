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
enabled). It trains the served graph itself (`build_full_model`, time folded
into the batch for the encoder: it traces in seconds where Keras 3's
`TimeDistributed` traced for 73-110 s here). Validation picks the kept
weights; the test split is never read. Writes the tuned encoder and head weights into
`paths.finetuned`, curves and summary.json (per-epoch time, trace time, peak
RSS, precision probe) into `paths.finetune_logs`, TensorBoard events into
`paths.finetune_tensorboard`.

Precision (`finetune.mixed_precision`): `auto` takes mixed_float16 on a GPU;
on a CPU it times a trainable step under float32 and mixed_bfloat16 once per
machine (CPU model, TensorFlow version, image size, blocks) and caches the
choice, so two runs on one machine train under the same policy. The global
seed is set after the probe, so the probe cannot shift what training draws.

Distribution (`distribution_strategy`): with TF_CONFIG naming several workers,
training runs under MultiWorkerMirroredStrategy; otherwise more than one
visible GPU trains under MirroredStrategy. `finetune.batch_size` is windows per
replica (a worker, or a GPU), so the global batch is that times the replicas.
Each worker reads and augments only its own share of each epoch's windows
(the input pipeline shards at its source: autoshard OFF), the chief (worker
0) decides the precision policy for all, and only the chief writes
`paths.finetuned`, the logs and the TensorBoard events; the other workers
write theirs to a temporary folder that they delete. Keras 3's `fit` cannot
train under MultiWorkerMirroredStrategy (keras-team/keras#20585), so the
training loop here is our own, the same on every strategy, driving the same
Keras callbacks. On several machines (docs/scale-out.md):

    TF_CONFIG='{"cluster": {"worker": ["a:2222", "b:2222"]}, "task": {"type": "worker", "index": 0}}' \
        dvc repro finetune                              # the chief, on machine a
    TF_CONFIG='{... "index": 1}}' python -m stages.finetune   # machine b, same checkout and data
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from stages.lib.finetuned import FINETUNED_ENCODER_WEIGHTS, FINETUNED_HEAD_WEIGHTS, FINETUNED_STATUS
from stages.lib.machine import cpu_description
from stages.lib.params import KEYPOINTS_BACKBONE, load_params
from stages.lib.storage import clip_slice, read_clip_table, read_offsets, write_json

# TensorFlow and Keras are imported inside the functions that train: with fine-tuning off
# (the default) this stage only writes its status file, in a second instead of ten.

CPU_POLICY_CANDIDATES = ("float32", "mixed_bfloat16")
PRECISION_POLICIES_TRAINED = ("float32", "mixed_float16", "mixed_bfloat16")   # what `auto` can resolve to
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

    from stages.lib.pinned_wheel import cache_dir
    if setting != "auto":
        return setting, {}
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16", {}
    cache_path = cache_dir() / PRECISION_CACHE_FILE
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


TF_CONFIG_TASK_TYPES = ("chief", "worker")   # MultiWorkerMirroredStrategy's: a chief (optional) and workers


@dataclass(frozen=True)
class WorkerRole:
    """This process's place among the TF_CONFIG workers: index 0, the chief, writes every output."""
    index: int = 0
    count: int = 1

    @property
    def is_chief(self) -> bool:
        return self.index == 0


def worker_role(tf_config: str | None = None) -> WorkerRole:
    """From TF_CONFIG (the chief first, then the workers in order); one worker of one when it is not set."""
    text = os.environ.get("TF_CONFIG", "") if tf_config is None else tf_config
    if not text.strip():
        return WorkerRole()
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        chiefs, workers = list(cluster.get("chief", [])), list(cluster.get("worker", []))
        kind, index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise SystemExit(f"finetune: TF_CONFIG is not a cluster and a task ({type(error).__name__}: {error}); "
                         'expected {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", '
                         '"index": 0}}') from None
    if kind not in TF_CONFIG_TASK_TYPES:
        raise SystemExit(f"finetune: TF_CONFIG task type {kind!r}; allowed: {', '.join(TF_CONFIG_TASK_TYPES)}")
    members = chiefs if kind == "chief" else workers
    if not 0 <= index < len(members):
        raise SystemExit(f"finetune: TF_CONFIG task index {index} but the cluster lists {len(members)} {kind}(s)")
    return WorkerRole(index + (len(chiefs) if kind == "worker" else 0), len(chiefs) + len(workers))


def distribution_strategy(role: WorkerRole):
    """MultiWorkerMirroredStrategy across several TF_CONFIG workers; MirroredStrategy over several GPUs; else
    the default strategy. Call it before any other TensorFlow op: collective ops are set up at start-up."""
    import tensorflow as tf
    if role.count > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()


def chiefs_policy(strategy, policy: str | None) -> str:
    """The chief's precision policy, on every worker: variables and all-reduced gradients must share dtypes.

    Each replica contributes a one-hot vote, the chief's for its policy and
    the others' zeros, summed across the cluster; the policy with votes wins.
    """
    import tensorflow as tf
    vote = np.zeros(len(PRECISION_POLICIES_TRAINED), np.float32)
    if policy is not None:
        vote[PRECISION_POLICIES_TRAINED.index(policy)] = 1.0

    @tf.function      # one traced collective, not eager per-replica calls
    def tally():
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(vote)), axis=None)
    votes = tally().numpy()
    if votes.max() <= 0:
        raise RuntimeError("no precision policy came from the chief (worker 0); every worker must run this")
    return PRECISION_POLICIES_TRAINED[int(np.argmax(votes))]


@dataclass(frozen=True)
class OutputFolders:
    """Where this worker writes: the params' paths on the chief, a temporary folder on the others."""
    finetuned: Path
    logs: Path
    tensorboard: Path
    scratch: Path | None = None      # the temporary folder to delete when done (not the chief)


def output_folders(paths: dict, role: WorkerRole) -> OutputFolders:
    """Emptied folders for this worker's outputs; only the chief's are the DVC outs."""
    if role.is_chief:
        folders = OutputFolders(Path(paths["finetuned"]), Path(paths["finetune_logs"]),
                                Path(paths["finetune_tensorboard"]))
    else:
        scratch = Path(tempfile.mkdtemp(prefix=f"finetune-worker{role.index}-"))
        folders = OutputFolders(scratch / "finetuned", scratch / "logs", scratch / "tensorboard", scratch)
    for folder in (folders.finetuned, folders.logs, folders.tensorboard):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    return folders


def window_dataset(frames_path: str, split: str, classes: list[str], no_sign_label: str | None, seq_len: int,
                   head_train_params: dict, batch_size: int, seed: int, augment_settings: dict | None,
                   shard: tuple[int, int] = (0, 1), step_windows: int | None = None):
    """tf.data of (frames (batch, seq_len, H, W, 3) uint8, labels (batch,), weights (batch,)) windows read
    lazily from HDF5.

    Training (`augment_settings` given): random windows, planned anew each epoch
    from (seed, epoch), each augmented with its own stateless seed. Validation:
    the centred window of every clip, the same each epoch. Nothing is cached.
    `shard` (index, count): this input pipeline's share, every count-th clip of
    the epoch's order (the same order on every worker, from the same seed), so
    each worker reads and augments only its own windows. Every pipeline then
    pads its share with weight-0 windows to the same length, a multiple of
    `step_windows` (the windows one step takes from it; default `batch_size`):
    every step is full on every replica, so no replica ever steps on an empty
    batch (which MobileNetV2 under bfloat16 refuses) and the weights keep the
    losses exact.
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
    step = step_windows or batch_size
    share = -(-len(clips) // shard[1])                                 # the largest pipeline's share
    padded_share = -(-share // step) * step                            # ... rounded up to whole steps
    epoch = [0]

    def windows():
        handle = h5py.File(frames_path, "r")
        try:
            rng = np.random.default_rng([seed, epoch[0]])
            order = rng.permutation(clips) if augment_settings is not None else clips
            mine = order[shard[0]::shard[1]]
            padding = np.resize(order, padded_share - len(mine)) if len(order) else order
            for clip, weight in [(clip, 1.0) for clip in mine] + [(clip, 0.0) for clip in padding]:
                rows = clip_slice(offsets, clip)
                length = rows.stop - rows.start
                indices = (random_window(length, seq_len, rng, jitter, anywhere=labels[clip] == no_sign_index)
                           if augment_settings is not None else centred_window(length, seq_len))
                unique, inverse = np.unique(indices, return_inverse=True)   # h5py reads increasing rows
                yield handle["frames"][rows.start + unique][inverse], labels[clip], np.float32(weight)
        finally:
            handle.close()
            epoch[0] += 1

    signature = (tf.TensorSpec((seq_len, *frame_shape), tf.uint8), tf.TensorSpec((), tf.int64),
                 tf.TensorSpec((), tf.float32))
    dataset = tf.data.Dataset.from_generator(windows, output_signature=signature)
    if augment_settings is not None:
        # One fresh seed per window per epoch: a new augmentation every epoch, reproducible run to run.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            lambda window, s: (augment_clip(window[0], tf.cast(s % (2 ** 31), tf.int32), augment_settings),
                               window[1], window[2]),
            num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    # Sharded at the source (`shard`): DATA would have every worker read and augment every window and
    # drop all but its share; FILE has no files to split in a generator.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(options), len(clips)


def distributed_windows(strategy, global_batch: int, **window_settings):
    """`window_dataset` for every worker of `strategy`: its own share, batched per replica."""
    def per_input_pipeline(context):   # called once per worker, with where it stands among them
        per_replica = context.get_per_replica_batch_size(global_batch)
        replicas_here = strategy.num_replicas_in_sync // context.num_input_pipelines
        dataset, _ = window_dataset(**window_settings, batch_size=per_replica,
                                    shard=(context.input_pipeline_id, context.num_input_pipelines),
                                    step_windows=per_replica * replicas_here)
        return dataset
    return strategy.distribute_datasets_from_function(per_input_pipeline)


def epoch_timer():
    """(Keras callback, list it fills with each epoch's wall seconds; the first includes the trace)."""
    import keras
    seconds: list[float] = []
    started = [0.0]
    callback = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: started.__setitem__(0, time.perf_counter()),
        on_epoch_end=lambda epoch, logs: seconds.append(round(time.perf_counter() - started[0], 1)))
    return callback, seconds


def train_on_windows(model, strategy, train_data, val_data, epochs: int, callbacks: list) -> dict[str, list]:
    """Train `model` (compiled) on distributed window batches; Keras callbacks at each epoch; the history.

    What `fit` did here, on any strategy: each replica's step averages its
    windows' losses over the whole global batch (the all-reduced count of
    windows of weight 1; padding weighs 0), the optimizer sums the replicas'
    gradients, and loss and accuracy are summed over the epoch.
    """
    import keras
    import tensorflow as tf
    optimizer = model.optimizer
    with strategy.scope():
        optimizer.build(model.trainable_variables)     # its variables mirrored before the first step

    def replica_step(frames, labels, weights, training: bool):
        # frames (batch, seq_len, H, W, 3) uint8, labels (batch,) int64, weights (batch,): 0 for padding
        count = tf.reduce_sum(weights)
        windows = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, count)
        with tf.GradientTape() as tape:
            probabilities = model(frames, training=training)                          # (batch, classes) float32
            losses = keras.losses.sparse_categorical_crossentropy(labels, probabilities) * weights  # (batch,)
            loss = tf.reduce_sum(losses) / tf.maximum(windows, 1.0)
        if training:
            gradients = tape.gradient(optimizer.scale_loss(loss), model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        hits = tf.cast(tf.equal(tf.argmax(probabilities, axis=-1), labels), tf.float32) * weights
        return tf.reduce_sum(losses), tf.reduce_sum(hits), count

    def step_function(training: bool):
        @tf.function(reduce_retracing=True)
        def step(frames, labels, weights):
            sums = strategy.run(replica_step, args=(frames, labels, weights, training))
            return [strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) for value in sums]
        return step

    def run_epoch(step, data) -> tuple[float, float]:
        loss_sum = correct = windows = 0.0
        for frames, labels, weights in data:
            batch_loss, batch_correct, batch_windows = (float(value) for value in step(frames, labels, weights))
            loss_sum, correct, windows = loss_sum + batch_loss, correct + batch_correct, windows + batch_windows
        return loss_sum / max(windows, 1.0), correct / max(windows, 1.0)

    train_step, val_step = step_function(True), step_function(False)
    callback_list = keras.callbacks.CallbackList(callbacks, model=model, epochs=epochs, verbose=0)
    history: dict[str, list] = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
    callback_list.on_train_begin()
    for epoch in range(epochs):
        callback_list.on_epoch_begin(epoch)
        started = time.perf_counter()
        loss, accuracy = run_epoch(train_step, train_data)
        val_loss, val_accuracy = run_epoch(val_step, val_data)
        logs = {"loss": loss, "accuracy": accuracy, "val_loss": val_loss, "val_accuracy": val_accuracy}
        for key, value in logs.items():
            history[key].append(value)
        print(f"Epoch {epoch + 1}/{epochs} - {time.perf_counter() - started:.0f}s - "
              + " - ".join(f"{key}: {value:.4f}" for key, value in logs.items()), flush=True)
        callback_list.on_epoch_end(epoch, logs)
    callback_list.on_train_end()
    return history


def finetune_end_to_end(params: dict, head_card: dict, policy: str, strategy, folders: OutputFolders) -> dict:
    """Unfreeze the top of the backbone and train encoder + head on frame windows; best validation kept."""
    import keras
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    from stages.lib.backbone import build_frame_encoder, check_recorded_weights
    from stages.lib.models import build_full_model, build_head_from_card, load_model
    settings, paths, seed = params["finetune"], params["paths"], params["base"]["seed"]
    seq_len, image_size = int(head_card["seq_len"]), int(head_card["image_size"])
    keras.mixed_precision.set_global_policy(policy)
    with strategy.scope():
        encoder, weights_source = build_frame_encoder(image_size, params["backbone"]["weights"])
        check_recorded_weights(weights_source, paths["backbone_weights"])
        if weights_source != head_card["weights_source"]:
            raise SystemExit(f"backbone weights now resolve to {weights_source!r} but the head was trained on "
                             f"embeddings from {head_card['weights_source']!r}: run `dvc repro` from extract")
        train_settings = head_card["train_params"]
        head = build_head_from_card(head_card)
        head.set_weights(load_model(paths["head"]).get_weights())
        unfrozen = unfreeze_top_blocks(inner_mobilenet(encoder), settings["unfreeze_blocks"])
        model = build_full_model(encoder, head, seq_len)   # the served graph itself
        model.compile(optimizer=keras.optimizers.Adam(settings["learning_rate"]),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    # finetune.batch_size windows per replica (a worker, or a GPU): more replicas, a larger global batch.
    global_batch = int(settings["batch_size"]) * strategy.num_replicas_in_sync
    common = dict(frames_path=paths["frames"], classes=head_card["labels"], no_sign_label=head_card["no_sign_label"],
                  seq_len=seq_len, head_train_params=train_settings, seed=seed)
    train_data = distributed_windows(strategy, global_batch, split="train", augment_settings=settings["augment"],
                                     **common)
    val_data = distributed_windows(strategy, global_batch, split="val", augment_settings=None, **common)
    splits = read_clip_table(paths["frames"])["splits"]
    best_weights = folders.finetuned / "best.weights.h5"
    timer, epoch_seconds = epoch_timer()
    with Live(dir=str(folders.logs), dvcyaml=None, save_dvc_exp=False, report=None) as live:
        live.log_params({key: value for key, value in settings.items() if key != "augment"})
        callbacks = [
            DVCLiveCallback(live=live), timer,
            keras.callbacks.TensorBoard(log_dir=str(folders.tensorboard)),
            # Validation picks the weights we keep; the test split is never read here.
            keras.callbacks.ModelCheckpoint(best_weights, monitor="val_loss", save_best_only=True,
                                            save_weights_only=True),
        ]
        history = train_on_windows(model, strategy, train_data, val_data, settings["epochs"], callbacks)
    model.load_weights(best_weights)
    best_weights.unlink()
    keras.mixed_precision.set_global_policy("float32")
    # Stored in float32 whatever the training policy: the assemble stage serves float32.
    save_float32_weights(encoder, folders.finetuned / FINETUNED_ENCODER_WEIGHTS,
                         lambda: build_frame_encoder(image_size, "random")[0])
    save_float32_weights(head, folders.finetuned / FINETUNED_HEAD_WEIGHTS,
                         lambda: build_head_from_card(head_card))
    steady = epoch_seconds[1:] or epoch_seconds
    return {"unfrozen_layers": len(unfrozen), "train_clips": int((splits == "train").sum()),
            "val_clips": int((splits == "val").sum()), "replicas": strategy.num_replicas_in_sync,
            "global_batch_size": global_batch,
            "epochs_run": len(history["loss"]), "epoch_seconds": epoch_seconds,
            "first_epoch_extra_seconds_trace": round(epoch_seconds[0] - float(np.median(steady)), 1),
            "best_val_loss": float(min(history["val_loss"])),
            "best_val_accuracy": float(max(history["val_accuracy"]))}


def save_float32_weights(trained, path: Path, build_float32) -> None:
    """Copy trained weights (any policy) into a float32 twin and save that twin's weights."""
    twin = build_float32()
    twin.set_weights([np.asarray(value, np.float32) for value in trained.get_weights()])
    twin.save_weights(path)


def main() -> None:
    params = load_params()
    settings, paths = params["finetune"], params["paths"]
    role = worker_role()
    # First of all: MultiWorkerMirroredStrategy must exist before any other TensorFlow op runs.
    strategy = distribution_strategy(role) if settings["enabled"] else None
    folders = output_folders(paths, role)
    try:
        summary = finetune_stage(params, role, strategy, folders)
    finally:
        if folders.scratch is not None:          # a worker's own outputs, never read: gone, even after a failure
            shutil.rmtree(folders.scratch, ignore_errors=True)
    if not role.is_chief:
        print(f"finetune: worker {role.index} of {role.count} done, trained under {summary.get('precision_policy')}; "
              "the chief (worker 0) writes the outputs")
        return
    # The status file is all the assemble stage reads besides the weights: byte-identical while disabled.
    write_json(folders.finetuned / FINETUNED_STATUS, {"enabled": bool(settings["enabled"]),
                                                     **({"precision_policy_trained": summary["precision_policy"]}
                                                        if settings["enabled"] else {})})
    write_json(folders.logs / "summary.json", summary)
    print(json.dumps(summary, indent=2))


def finetune_stage(params: dict, role: WorkerRole, strategy, folders: OutputFolders) -> dict:
    """The summary of this stage's run: only {"finetune_enabled": false} while fine-tuning is off."""
    settings, paths, seed = params["finetune"], params["paths"], params["base"]["seed"]
    summary: dict = {"finetune_enabled": bool(settings["enabled"])}
    if settings["enabled"]:
        import keras
        head_card = json.loads(Path(paths["labels"]).read_text())
        if head_card["backbone"] == KEYPOINTS_BACKBONE:
            raise SystemExit("finetune.enabled is true, but fine-tuning trains MobileNetV2's top blocks and the "
                             "head was trained on keypoints (backbone.name keypoints), which have none to tune")
        started = time.perf_counter()
        policy, probe = (resolve_precision_policy(settings["mixed_precision"], int(head_card["image_size"]),
                                                  settings["unfreeze_blocks"]) if role.is_chief else (None, {}))
        if role.count > 1:
            policy = chiefs_policy(strategy, policy)
        keras.utils.set_random_seed(seed)      # after the probe: it must not shift what training draws
        summary.update(precision_policy=policy, **probe, workers=role.count)
        summary.update(finetune_end_to_end(params, head_card, policy, strategy, folders))
        summary.update(stage_seconds=round(time.perf_counter() - started, 1), peak_rss_mb=round(peak_rss_mb(), 1))
    return summary


if __name__ == "__main__":
    main()
