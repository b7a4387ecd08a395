"""Stratified k-fold cross-validation over a folder's clips: fixed folds, and a validation part carved from training.

Usage:
    from stages.lib.folds import stratified_folds, carve_validation
    fold_of_clip = stratified_folds(labels, folds=5, seed=0)        # (clips,) fold index 0..4, the same every run
    held_out = np.flatnonzero(fold_of_clip == 2)                     # the test part of fold 2
    train, val = carve_validation(np.flatnonzero(fold_of_clip != 2), labels, share=0.15, seed=0)

On a development set of about 6 clips a sign, one validation split of 62 clips moves
by 0.016 a clip and the head's seed alone moved test top-1 by up to 0.13: a lever
cannot be judged on one split. Every clip is held out once across the folds, each
class spread over the folds as evenly as its clips allow. Early stopping uses a
validation part carved from that fold's training clips, never the held-out fold.
"""
from __future__ import annotations

import numpy as np

FOLDS_SEED = 0   # the folds stay fixed across levers and runs, so rows differ only by the lever


def stratified_folds(labels: np.ndarray, folds: int, seed: int = FOLDS_SEED) -> np.ndarray:
    """(clips,) fold index per clip: each class's clips shuffled (seeded) and dealt round the folds.

    The deal continues from fold to fold across classes, so folds stay within one clip of each
    other in size even when every class has fewer clips than there are folds.
    """
    labels = np.asarray(labels)
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    if len(labels) < folds:
        raise ValueError(f"{len(labels)} clips cannot fill {folds} folds")
    rng = np.random.default_rng(seed)
    fold_of_clip = np.empty(len(labels), np.int64)
    next_fold = 0
    for label in sorted(set(labels.tolist())):
        members = rng.permutation(np.flatnonzero(labels == label))
        fold_of_clip[members] = (next_fold + np.arange(len(members))) % folds
        next_fold = (next_fold + len(members)) % folds
    return fold_of_clip


def carve_validation(train_indices: np.ndarray, labels: np.ndarray, share: float, seed: int = FOLDS_SEED
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices: about `share` of each class's training clips for early stopping.

    A class keeps at least one clip for training; a class with a single training clip gives
    none to validation.
    """
    rng = np.random.default_rng([seed, 1])
    labels = np.asarray(labels)
    train, validation = [], []
    for label in sorted(set(labels[train_indices].tolist())):
        members = rng.permutation(train_indices[labels[train_indices] == label])
        count = min(int(round(share * len(members))), len(members) - 1) if len(members) > 1 else 0
        validation += members[:count].tolist()
        train += members[count:].tolist()
    return np.array(sorted(train), np.int64), np.array(sorted(validation), np.int64)
