"""Stage `train`: fit the BiLSTM head on windows of cached embeddings (no CNN in the loop).

Usage:
    python -m stages.train             # reads params.yaml: base.seed, base.seq_len, train (train.seed: the head's own)

Each epoch draws new windows of `base.seq_len` embeddings from every training
clip (stages/lib/windows.py): at random positions around the clip's middle and
at slightly random speeds, the way the live ring buffer sees a sign; clips of
the no-sign class (`_none`, idle footage) give windows from anywhere in them,
and `train.edge_windows` windows per sign clip come from its rest lead-in or
lead-out, labelled no sign (a person holding still before or after a sign), and
`train.neighbour_windows` (off by default) windows per sign clip joined to half a
neighbouring sign each side, labelled the clip's sign (signing without pauses), and
`train.pose_hold_windows` (off by default) windows per sign clip where the hands rise
to the sign's start (or end) pose, wait there and drop, labelled no sign (a person
getting into position without signing).
Validation uses fixed windows (the centred one plus a few jittered ones drawn
once with the seed) for EarlyStopping, ReduceLROnPlateau and the best
checkpoint; the test split is never read here.

Writes `paths.head` (best-by-validation model), `paths.labels` (class names in
output order and everything the head needs to be used alone: window, rate,
no-sign class), dvclive curves under `paths.train_logs` and TensorBoard events
under `paths.train_tensorboard`.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from dvclive import Live
from dvclive.keras import DVCLiveCallback

from stages.lib.datasets import NO_SIGN_LABEL
from stages.lib.embeddings import SplitClips, class_names, load_split
from stages.lib.keypoint_augment import KeypointAugment
from stages.lib.models import build_head, head_loss
from stages.lib.params import KEYPOINTS_BACKBONE, load_params
from stages.lib.storage import read_attributes, write_json
from stages.lib.windows import WindowJitter, centred_window, random_window, window_indices

VALIDATION_JITTERED_WINDOWS = 2   # per validation clip, besides the centred one: validation sees off-centre windows too
EDGE_SHARE = 0.15                 # edge windows reach this share of a clip in from either end
NEIGHBOUR_REACH = 0.2             # a neighbour window's centre strays up to this share of its clip from the middle
# A pose-hold window's pose: where the clip's step-to-step feature change has summed to this share of its total
# (from the start for the start pose, from the end for the end pose): past the rise from rest, before most of the
# sign's own movement, whatever the clip's lead-in and the features (pixels' embeddings or keypoints).
POSE_MOTION_SHARE = (0.15, 0.35)
POSE_HOLD_SHARE = (0.2, 0.5)      # ... held for this share of a window: a wait long enough to look like a sign
PLAIN, EDGE, NEIGHBOURS, POSE_HOLD = 0, 1, 2, 3   # the kinds of training window an epoch's plan holds


def head_seed(params: dict) -> int:
    """The head's seed: `train.seed`, or `base.seed` when that is null (the same data, another head)."""
    seed = params["train"].get("seed")
    return int(params["base"]["seed"] if seed is None else seed)


def seed_everything(seed: int) -> None:
    """Same data, same params, same model: seeds plus deterministic TF ops."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


class TrainingWindows(keras.utils.PyDataset):
    """Batches of windows (batch, seq_len, 1280) drawn anew every epoch from the training clips.

    Which clip, where and how fast is planned at the start of each epoch from
    a generator seeded by (seed, epoch), so runs repeat exactly; windows are cut
    per batch, so memory holds one batch, not an epoch.
    """

    def __init__(self, split: SplitClips, seq_len: int, batch_size: int, windows_per_clip: int,
                 jitter: WindowJitter, seed: int, no_sign_index: int | None, edge_windows: int = 0,
                 no_sign_windows_per_clip: int | None = None, keypoint_augment: KeypointAugment | None = None,
                 neighbour_windows: int = 0, pose_hold_windows: int = 0):
        super().__init__()
        # Per sign clip and epoch: the hands rise to its start or end pose, wait and drop (pose_hold_window),
        # labelled no sign.
        self.pose_hold_windows = pose_hold_windows if no_sign_index is not None else 0
        # Per sign clip and epoch: windows of the clip joined to the end of another sign before it and the start of
        # one after it (neighbour_window), labelled the clip's sign: signing without pauses.
        self.neighbour_windows = neighbour_windows
        self.neighbours = neighbour_candidates(split, no_sign_index) if neighbour_windows else {}
        self.keypoint_augment = keypoint_augment      # keypoint windows augmented (stages/lib/keypoint_augment)
        self.split, self.seq_len, self.batch_size = split, seq_len, batch_size
        self.windows_per_clip, self.jitter, self.seed = windows_per_clip, jitter, seed
        self.no_sign_index = no_sign_index
        # Per sign clip and epoch: windows cut from its rest lead-in or lead-out, labelled no sign.
        self.edge_windows = edge_windows if no_sign_index is not None else 0
        self.no_sign_windows_per_clip = no_sign_windows_per_clip or windows_per_clip
        self.epoch = 0
        self.plan_epoch()

    def plan_epoch(self) -> None:
        rng = np.random.default_rng([self.seed, self.epoch])
        per_clip = np.where(self.split.labels == self.no_sign_index, self.no_sign_windows_per_clip,
                            self.windows_per_clip)
        clips = np.repeat(np.arange(len(self.split)), per_clip)
        signs = np.flatnonzero(self.split.labels != self.no_sign_index)
        edges = np.repeat(signs, self.edge_windows)
        joined = np.repeat([index for index in signs if self.neighbours.get(index)], self.neighbour_windows)
        holds = np.repeat(signs, self.pose_hold_windows)
        plan = np.concatenate([np.stack([clips, np.full_like(clips, PLAIN)], 1),
                               np.stack([edges, np.full_like(edges, EDGE)], 1),
                               np.stack([joined, np.full_like(joined, NEIGHBOURS)], 1),
                               np.stack([holds, np.full_like(holds, POSE_HOLD)], 1)]).astype(np.int64)
        self.order = plan[rng.permutation(len(plan))]                  # (windows, 2): clip index, window kind
        self.window_seeds = rng.integers(0, 2**63 - 1, size=len(self.order))

    def __len__(self) -> int:
        return math.ceil(len(self.order) / self.batch_size)

    def __getitem__(self, batch_index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = slice(batch_index * self.batch_size, (batch_index + 1) * self.batch_size)
        windows, labels = [], []
        for (clip_index, kind), window_seed in zip(self.order[rows], self.window_seeds[rows]):
            clip, label = self.split.clips[clip_index], self.split.labels[clip_index]
            rng = np.random.default_rng(window_seed)
            if kind == NEIGHBOURS:
                window = neighbour_window(self.split, clip_index, self.neighbours[clip_index], self.seq_len, rng,
                                          self.jitter)
            elif kind == EDGE:
                window, label = clip[edge_window(len(clip), self.seq_len, rng, self.jitter)], self.no_sign_index
            elif kind == POSE_HOLD:
                window, label = clip[pose_hold_window(clip, self.seq_len, rng, self.jitter)], self.no_sign_index
            else:
                window = clip[random_window(len(clip), self.seq_len, rng, self.jitter,
                                            anywhere=label == self.no_sign_index)]    # (seq_len, features)
            if self.keypoint_augment is not None and self.keypoint_augment.active:
                window = self.keypoint_augment.window(window, rng)
            windows.append(window)
            labels.append(label)
        return np.stack(windows), np.array(labels, np.int64)

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.plan_epoch()


def training_windows(split: SplitClips, settings: dict, seq_len: int, seed: int, no_sign_index: int | None,
                     embedding_attributes: dict) -> TrainingWindows:
    """The windows `train.*` settings ask for, drawn from `split`: the one reading of those settings, for the
    stage and for cross-validation's fold heads (stages/tools/crossval.py)."""
    return TrainingWindows(split, seq_len, settings["batch_size"], settings["windows_per_clip"],
                           window_settings(settings), seed, no_sign_index, settings["edge_windows"],
                           settings.get("no_sign_windows_per_clip"), keypoint_augment(settings, embedding_attributes),
                           int(settings.get("neighbour_windows") or 0), int(settings.get("pose_hold_windows") or 0))


def neighbour_candidates(split: SplitClips, no_sign_index: int | None) -> dict[int, list[int]]:
    """For each sign clip, the sign clips that may stand beside it in a joined window: another sign, by the same
    signer where the split knows signers (one person's fast signing; another person would be a jump in looks)."""
    signers = split.signers if split.signers is not None else np.full(len(split), "")
    by_signer: dict[str, list[int]] = {}
    for index in range(len(split)):
        if split.labels[index] != no_sign_index:
            by_signer.setdefault(str(signers[index]), []).append(index)
    return {index: [other for other in same if split.labels[other] != split.labels[index]]
            for same in by_signer.values() for index in same}


def neighbour_window(split: SplitClips, clip_index: int, candidates: list[int], seq_len: int,
                     rng: np.random.Generator, jitter: WindowJitter) -> np.ndarray:
    """A window on the clip's sign as fast signing shows it: the later half of one neighbour before it and the
    earlier half of another after it, joined to the clip with up to EDGE_SHARE of its rest cut from either end
    (a fast signer barely rests), the window's centre up to NEIGHBOUR_REACH of the clip from its middle.
    Where the plain window would hold the clip's first or last frame still, this one holds the neighbouring
    signs. (seq_len, features)."""
    before, after = (split.clips[int(index)] for index in rng.choice(candidates, size=2))
    whole = split.clips[clip_index]
    cut_start, cut_end = (int(rng.uniform(0.0, EDGE_SHARE) * len(whole)) for _ in range(2))
    clip = whole[cut_start:len(whole) - cut_end]
    head, tail = before[len(before) // 2:], after[:(len(after) + 1) // 2]
    joined = np.concatenate([head, clip, tail])                                   # (frames, features)
    speed = rng.uniform(1.0 - jitter.speed, 1.0 + jitter.speed)
    centre = len(head) + (len(clip) - 1) / 2.0 + rng.uniform(-1.0, 1.0) * NEIGHBOUR_REACH * len(clip)
    return joined[window_indices(len(joined), seq_len, centre, speed)]


def edge_window(length: int, seq_len: int, rng: np.random.Generator, jitter: WindowJitter) -> np.ndarray:
    """A window ending in the clip's first EDGE_SHARE or starting in its last: mostly the person holding
    still before or after the sign (the clip's own first or last frame repeated), plus a little rest."""
    speed = rng.uniform(1.0 - jitter.speed, 1.0 + jitter.speed)
    reach = EDGE_SHARE * (length - 1)
    half = speed * (seq_len - 1) / 2.0
    if rng.random() < 0.5:
        centre = rng.uniform(0.0, reach) - half                         # the window's last frame in the lead-in
    else:
        centre = (length - 1) - rng.uniform(0.0, reach) + half          # its first frame in the lead-out
    return window_indices(length, seq_len, centre, speed)


def pose_hold_window(clip: np.ndarray, seq_len: int, rng: np.random.Generator, jitter: WindowJitter) -> np.ndarray:
    """(seq_len,) frame indices of a sign clip, (frames, features), that show no sign: from rest up to the sign's
    start pose, held there, and back down the same way (or the same about its end pose, from the clip's end).
    What a person does who gets into position for a sign and does not make it (generate's "into position"
    idle movement, the false signs of docs/recognition.md), built from the person's own sign clips."""
    change = np.linalg.norm(np.diff(clip, axis=0), axis=1)                        # (frames - 1,)
    share = np.concatenate([[0.0], np.cumsum(change)]) / max(float(change.sum()), 1e-12)   # (frames,) 0 .. 1
    reach = rng.uniform(*POSE_MOTION_SHARE)
    from_start = rng.random() < 0.5
    pose = int(np.searchsorted(share, reach if from_start else 1.0 - reach))
    pose = min(pose, len(clip) - 1)
    rise = np.arange(0, pose + 1) if from_start else np.arange(len(clip) - 1, pose - 1, -1)   # rest -> the pose
    hold = np.full(max(int(round(rng.uniform(*POSE_HOLD_SHARE) * seq_len)), 1), pose)
    movement = np.concatenate([rise, hold, rise[::-1]])                            # up, wait, down the same way
    speed = rng.uniform(1.0 - jitter.speed, 1.0 + jitter.speed)
    centre = len(rise) + (len(hold) - 1) / 2.0 + rng.uniform(-1.0, 1.0) * jitter.position * seq_len
    return movement[window_indices(len(movement), seq_len, centre, speed)]


def validation_windows(split: SplitClips, seq_len: int, jitter: WindowJitter, seed: int,
                       no_sign_index: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Fixed windows for validation: (windows (n, seq_len, 1280), labels (n,)), the same every epoch."""
    rng = np.random.default_rng([seed, 10**6])
    windows, labels = [], []
    for clip, label in zip(split.clips, split.labels):
        indices = [centred_window(len(clip), seq_len)]
        indices += [random_window(len(clip), seq_len, rng, jitter, anywhere=label == no_sign_index)
                    for _ in range(VALIDATION_JITTERED_WINDOWS)]
        windows += [clip[i] for i in indices]
        labels += [label] * len(indices)
    return np.stack(windows), np.array(labels, np.int64)


def training_callbacks(settings: dict, paths: dict, live: Live) -> list[keras.callbacks.Callback]:
    """Everything watches `val_loss`: validation picks the checkpoint, never test."""
    return [
        DVCLiveCallback(live=live),
        keras.callbacks.TensorBoard(log_dir=paths["train_tensorboard"]),
        keras.callbacks.ModelCheckpoint(paths["head"], monitor="val_loss", save_best_only=True),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=settings["patience"],
                                      restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                          patience=max(settings["patience"] // 3, 1), min_lr=1e-6),
    ]


def window_settings(settings: dict) -> WindowJitter:
    return WindowJitter(position=settings["position_jitter"], speed=settings["speed_jitter"])


def train_head(train: TrainingWindows, validation: tuple[np.ndarray, np.ndarray], num_classes: int,
               settings: dict, callbacks: list, centre_in_time: bool = True) -> keras.Model:
    """Build and fit the head; returns it with the best validation weights restored."""
    feature_size = train.split.clips[0].shape[-1]                       # 1280 for MobileNetV2 embeddings
    head = build_head(train.seq_len, num_classes, settings["lstm_units"], settings["dropout"], feature_size,
                      centre_in_time, settings["projection_units"], bool(settings.get("motion_channels", False)))
    head.compile(optimizer=keras.optimizers.Adam(settings["learning_rate"]),
                 loss=head_loss(float(settings.get("label_smoothing") or 0.0)),
                 metrics=["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(k=3, name="top3")])
    head.fit(train, validation_data=validation, epochs=settings["epochs"], callbacks=callbacks, verbose=2)
    return head


def keypoint_augment(settings: dict, embedding_attributes: dict) -> KeypointAugment | None:
    """`train.keypoint_*` for keypoint features; None for ImageNet embeddings, which have no points to move."""
    if embedding_attributes["backbone"] != KEYPOINTS_BACKBONE:
        return None
    return KeypointAugment.from_params(settings)


def centres_in_time(embedding_attributes: dict) -> bool:
    """Temporal centring for ImageNet embeddings, not for keypoints (build_head says why)."""
    return embedding_attributes["backbone"] != KEYPOINTS_BACKBONE


def clip_duration_summary(split: SplitClips, sample_fps: float, seq_len: int) -> dict:
    """How long the training clips are at the sampling rate, and how many the window holds whole."""
    lengths = np.array([len(clip) for clip in split.clips])
    return {"median_seconds": round(float(np.median(lengths)) / sample_fps, 2),
            "p90_seconds": round(float(np.percentile(lengths, 90)) / sample_fps, 2),
            "share_within_window": round(float(np.mean(lengths <= seq_len)), 3)}


def main() -> None:
    params = load_params()
    settings, paths, seq_len = params["train"], params["paths"], int(params["base"]["seq_len"])
    seed = head_seed(params)
    seed_everything(seed)
    embeddings_path = paths["embeddings"]
    attributes = read_attributes(embeddings_path)
    classes = class_names(embeddings_path)
    no_sign_index = classes.index(NO_SIGN_LABEL) if NO_SIGN_LABEL in classes else None
    train_split = load_split(embeddings_path, "train", classes)
    val_split = load_split(embeddings_path, "val", classes)
    if len(train_split) == 0 or len(val_split) == 0:
        raise SystemExit(f"train needs clips in both the train ({len(train_split)}) and val ({len(val_split)}) "
                         "splits; see data/manifest.csv")
    missing = sorted(set(range(len(classes))) - set(train_split.labels.tolist()))
    if missing:
        print(f"WARNING: no training clip for {[classes[i] for i in missing]}; the head cannot learn them")
    if no_sign_index is None:
        print(f"WARNING: no '{NO_SIGN_LABEL}' class (idle footage): the model has no no-sign output, so live "
              "recognition always names a sign; record idle clips into a folder named " + NO_SIGN_LABEL)

    centre_in_time = centres_in_time(attributes)
    jitter = window_settings(settings)
    train_windows = training_windows(train_split, settings, seq_len, seed, no_sign_index, attributes)
    # Validation windows come from base.seed whatever train.seed is: heads of different seeds are compared
    # (and their checkpoints picked) on the very same windows.
    validation = validation_windows(val_split, seq_len, jitter, params["base"]["seed"], no_sign_index)
    for folder in (paths["train_logs"], paths["train_tensorboard"]):
        shutil.rmtree(folder, ignore_errors=True)  # curves of an earlier run must not mix in
    Path(paths["head"]).parent.mkdir(parents=True, exist_ok=True)
    with Live(dir=paths["train_logs"], dvcyaml=None, save_dvc_exp=False, report=None) as live:
        live.log_params(settings)
        train_head(train_windows, validation, len(classes), settings, training_callbacks(settings, paths, live),
                   centre_in_time=centre_in_time)
    Path(paths["train_tensorboard"]).mkdir(parents=True, exist_ok=True)

    sample_fps = float(attributes["sample_fps"])
    write_json(paths["labels"], {
        "labels": classes,                       # index i is the head's output i
        "no_sign_label": NO_SIGN_LABEL if no_sign_index is not None else None,
        "seq_len": seq_len,
        "sample_fps": sample_fps,                # live frames enter at this rate
        "window_seconds": round(seq_len / sample_fps, 3),
        "sampling": json.loads(attributes["sampling"]),
        "image_size": attributes["image_size"],
        "backbone": attributes["backbone"],
        "weights_source": attributes["weights_source"],
        "feature_size": int(attributes["embedding_size"]),
        "centre_in_time": centre_in_time,
        "train_params": settings,
        "train_clips": len(train_split), "val_clips": len(val_split),
        "train_clip_durations": clip_duration_summary(train_split, sample_fps, seq_len),
    })
    print(f"head saved to {paths['head']} ({len(classes)} classes, {len(train_split)} train / "
          f"{len(val_split)} val clips, windows of {seq_len} frames = {seq_len / sample_fps:.1f} s)")


if __name__ == "__main__":
    main()
