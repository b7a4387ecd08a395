"""Fixed stratified folds for cross-validation on small real datasets, and the validation part carved from training."""
from __future__ import annotations

import numpy as np
import pytest

from stages.lib.folds import carve_validation, stratified_folds


def labels_of(counts: dict[int, int]) -> np.ndarray:
    return np.concatenate([np.full(count, label) for label, count in counts.items()])


def test_every_clip_is_held_out_once_and_each_class_spreads_over_the_folds():
    labels = labels_of({0: 6, 1: 7, 2: 4, 3: 15, 4: 5})            # WLASL-like: 4 to 15 clips a sign
    folds = stratified_folds(labels, 5)
    assert folds.shape == labels.shape and set(folds.tolist()) == set(range(5))
    for label in range(5):
        per_fold = np.bincount(folds[labels == label], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1                 # as even as the class's clips allow
    sizes = np.bincount(folds, minlength=5)
    assert sizes.max() - sizes.min() <= 1                           # folds within one clip of each other


def test_the_folds_are_fixed_and_another_seed_deals_others():
    labels = labels_of({0: 6, 1: 6, 2: 6})
    assert stratified_folds(labels, 5).tolist() == stratified_folds(labels, 5).tolist()
    assert stratified_folds(labels, 5, seed=1).tolist() != stratified_folds(labels, 5).tolist()


def test_classes_smaller_than_the_fold_count_still_fill_every_fold():
    labels = labels_of({label: 2 for label in range(10)})           # 2 clips a class, 5 folds
    assert np.bincount(stratified_folds(labels, 5), minlength=5).tolist() == [4, 4, 4, 4, 4]


def test_validation_is_carved_from_training_clips_only_and_keeps_every_class_trainable():
    labels = labels_of({0: 6, 1: 7, 2: 1, 3: 2})
    folds = stratified_folds(labels, 5)
    held_out = np.flatnonzero(folds == 0)
    train, validation = carve_validation(np.flatnonzero(folds != 0), labels, share=0.2)
    assert not set(validation.tolist()) & set(held_out.tolist())
    assert sorted(train.tolist() + validation.tolist()) == np.flatnonzero(folds != 0).tolist()
    assert set(labels[train].tolist()) == set(labels[np.flatnonzero(folds != 0)].tolist())


@pytest.mark.parametrize("labels, folds, message", [
    (np.zeros(10), 1, "at least 2 folds"),
    (np.arange(3), 5, "3 clips cannot fill 5 folds"),
])
def test_impossible_folds_are_refused(labels, folds, message):
    with pytest.raises(ValueError, match=message):
        stratified_folds(labels, folds)
