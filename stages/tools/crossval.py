"""Stratified k-fold cross-validation of the head on a workspace's cached features (used by devset --folds).

Usage:
    from stages.tools.crossval import cross_validate_head, cross_validate_floor
    figures = cross_validate_head(workspace, folds=5, seeds=[0, 1])
    figures["top1_mean"], figures["top1_sd"], figures["top3_mean"], figures["top3_sd"]

Every clip of the folder (whatever split `sample` gave it) is pooled, dealt into fixed
stratified folds (stages/lib/folds.py), and each fold is held out once: a head is trained
on the rest exactly as the train stage trains it (its windows, its params from the
workspace's params.yaml), stopped early on a validation part carved from those training
clips, and scored on the held-out fold's centred windows. The floor is a logistic
regression on clip statistics of the same features (per feature: mean, sd, min, max and
the means of the clip's three time-thirds), scored on the same folds: any head must beat it.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from stages.lib.datasets import NO_SIGN_LABEL
from stages.lib.embeddings import SplitClips, class_names, load_split
from stages.lib.folds import carve_validation, stratified_folds
from stages.lib.storage import read_attributes
from stages.lib.windows import centred_window

VALIDATION_SHARE = 0.15     # of each class's training clips, for early stopping (one clip of ~6)


def load_all_clips(embeddings_path: Path) -> tuple[SplitClips, list[str]]:
    """Every usable clip of every split, pooled: (clips, class names)."""
    classes = class_names(embeddings_path)
    parts = [load_split(embeddings_path, split, classes) for split in ("train", "val", "test")]
    return SplitClips([clip for part in parts for clip in part.clips],
                      np.concatenate([part.labels for part in parts]),
                      np.concatenate([part.paths for part in parts])), classes


def subset(clips: SplitClips, indices: np.ndarray) -> SplitClips:
    return SplitClips([clips.clips[i] for i in indices], clips.labels[indices], clips.paths[indices])


def top_k_hits(labels: np.ndarray, probabilities: np.ndarray, k: int) -> np.ndarray:
    """(clips,) True where the true class is among the k most probable."""
    top = np.argsort(-probabilities, axis=1)[:, :k]
    return np.array([label in row for label, row in zip(labels, top)])


def summarise(top1: list[float], top3: list[float], seconds: float, folds: int, seeds: list[int]) -> dict:
    return {"top1_mean": float(np.mean(top1)), "top1_sd": float(np.std(top1, ddof=1)) if len(top1) > 1 else 0.0,
            "top3_mean": float(np.mean(top3)), "top3_sd": float(np.std(top3, ddof=1)) if len(top3) > 1 else 0.0,
            "folds": folds, "seeds": list(seeds), "seconds": round(seconds)}


def fit_fold_head(train: SplitClips, validation: SplitClips, num_classes: int, no_sign_index: int | None,
                  params: dict, attributes: dict, seed: int):
    """The train stage's head and windows on one fold's training clips; early stopping on `validation`."""
    import keras

    from stages.train import (
        centres_in_time,
        seed_everything,
        train_head,
        training_windows,
        validation_windows,
        window_settings,
    )
    settings, seq_len = params["train"], int(params["base"]["seq_len"])
    seed_everything(seed)
    windows = training_windows(train, settings, seq_len, seed, no_sign_index, attributes)
    fixed = validation_windows(validation, seq_len, window_settings(settings), seed, no_sign_index)
    callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=settings["patience"],
                                               restore_best_weights=True),
                 keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                                   patience=max(settings["patience"] // 3, 1), min_lr=1e-6)]
    return train_head(windows, fixed, num_classes, settings, callbacks, centres_in_time(attributes))


def member_seed(seed: int, member: int, ensemble: int) -> int:
    """A lone head keeps its seed (rows stay comparable); an ensemble's member m trains with seed x 1000 + m."""
    return seed if ensemble == 1 else seed * 1000 + member


def cross_validate_head(workspace: Path, folds: int, seeds: list[int],
                        prepare: Callable[[SplitClips, np.ndarray], SplitClips] | None = None,
                        ensemble: int = 1) -> dict:
    """Mean and sd over folds x seeds of held-out top-1 and top-3, with the workspace's params and features.

    `prepare(clips, training_indices)`, when given, turns every clip's features into what that fold's head
    learns from and is scored on (a probe of stages/tools/keypoint_probes.py), fitted on training clips only.
    `ensemble` > 1 trains that many heads per fold and scores their mean log-probability."""
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    embeddings_path = workspace / params["paths"]["embeddings"]
    clips, classes = load_all_clips(embeddings_path)
    no_sign_index = classes.index(NO_SIGN_LABEL) if NO_SIGN_LABEL in classes else None
    attributes = read_attributes(embeddings_path)
    seq_len = int(params["base"]["seq_len"])
    fold_of_clip = stratified_folds(clips.labels, folds)
    started, top1, top3 = time.perf_counter(), [], []
    for seed in seeds:
        for fold in range(folds):
            held_out = np.flatnonzero(fold_of_clip == fold)
            train, validation = carve_validation(np.flatnonzero(fold_of_clip != fold), clips.labels, VALIDATION_SHARE)
            fold_clips = prepare(clips, train) if prepare else clips
            windows = np.stack([fold_clips.clips[i][centred_window(len(fold_clips.clips[i]), seq_len)]
                                for i in held_out])
            # An ensemble's members differ by seed only; they vote by their mean log-probability (logits up to
            # a constant per member), so one sure member cannot outvote the rest on its own.
            members = [fit_fold_head(subset(fold_clips, train), subset(fold_clips, validation), len(classes),
                                     no_sign_index, params, attributes, member_seed(seed, member, ensemble))
                       for member in range(ensemble)]
            probabilities = np.exp(np.mean([np.log(np.maximum(head.predict(windows, batch_size=256, verbose=0), 1e-12))
                                            for head in members], axis=0))      # (held-out clips, classes)
            top1.append(float(top_k_hits(clips.labels[held_out], probabilities, 1).mean()))
            top3.append(float(top_k_hits(clips.labels[held_out], probabilities, 3).mean()))
            print(f"  seed {seed} fold {fold}: top-1 {top1[-1]:.3f}, top-3 {top3[-1]:.3f} "
                  f"({len(train)} train, {len(validation)} val, {len(held_out)} held out)", flush=True)
    return summarise(top1, top3, time.perf_counter() - started, folds, seeds)


def clip_statistics(clip: np.ndarray) -> np.ndarray:
    """(frames, features) -> (7 x features,): mean, sd, min, max, and the means of the three time-thirds."""
    thirds = np.array_split(clip, 3) if len(clip) >= 3 else [clip] * 3
    return np.concatenate([clip.mean(0), clip.std(0), clip.min(0), clip.max(0), *[part.mean(0) for part in thirds]])


def cross_validate_floor(workspace: Path, folds: int) -> dict:
    """The floor on the same folds: a standardised logistic regression on clip statistics (no windows)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    clips, _ = load_all_clips(workspace / params["paths"]["embeddings"])
    features = np.stack([clip_statistics(clip) for clip in clips.clips])       # (clips, 7 x features)
    fold_of_clip = stratified_folds(clips.labels, folds)
    started, top1, top3 = time.perf_counter(), [], []
    for fold in range(folds):
        held_out, train = np.flatnonzero(fold_of_clip == fold), np.flatnonzero(fold_of_clip != fold)
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        model.fit(features[train], clips.labels[train])
        probabilities = np.zeros((len(held_out), int(clips.labels.max()) + 1))
        probabilities[:, model.classes_] = model.predict_proba(features[held_out])
        top1.append(float(top_k_hits(clips.labels[held_out], probabilities, 1).mean()))
        top3.append(float(top_k_hits(clips.labels[held_out], probabilities, 3).mean()))
    return summarise(top1, top3, time.perf_counter() - started, folds, [])


def feature_summary(workspace: Path) -> dict:
    """For keypoint features, how often the hand model found each hand (presence above one half), over
    every cached frame; and the frames file's size per clip-second (the pixels' cost on disk)."""
    import h5py

    from stages.lib.keypoints import HAND_PRESENCE, KEYPOINT_FEATURES
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    paths = params["paths"]
    summary = {}
    with h5py.File(workspace / paths["frames"], "r") as frames:
        seconds = len(frames["frames"]) / float(frames.attrs["sample_fps"])
    summary["frames_mb_per_clip_second"] = round((workspace / paths["frames"]).stat().st_size / 2**20 / seconds, 3)
    with h5py.File(workspace / paths["embeddings"], "r") as embeddings:
        if embeddings["embeddings"].shape[1] == KEYPOINT_FEATURES:
            present = embeddings["embeddings"][:, list(HAND_PRESENCE)]    # (frames, 2): left, right presence
            summary["hand_found_share"] = [round(float(value), 3) for value in (present > 0.5).mean(axis=0)]
    return summary
