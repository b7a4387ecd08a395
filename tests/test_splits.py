"""Splits: given splits kept, signers never shared, stable when the dataset grows."""
from __future__ import annotations

import pytest

from stages.lib.splits import assign_split


def split_of(signer: str, clip: str = "c.mp4", label: str = "hello", given: str = "") -> str:
    return assign_split(label, signer, clip, given, val_fraction=0.2, test_fraction=0.2, seed=7)


def test_a_given_split_is_kept():
    assert split_of("anyone", given="test") == "test"


def test_a_bad_given_split_names_the_allowed_values():
    with pytest.raises(ValueError, match="allowed: train, val, test"):
        split_of("anyone", given="holdout")


def test_every_clip_of_a_signer_lands_in_one_split():
    for signer_index in range(50):
        signer = f"person{signer_index}"
        splits = {split_of(signer, clip=f"{label}/{k}.mp4", label=label)
                  for label in ("a", "b", "c") for k in range(5)}
        assert len(splits) == 1


def test_signers_spread_over_all_three_splits_roughly_by_fraction():
    splits = [split_of(f"person{index}") for index in range(1000)]
    assert 150 < splits.count("test") < 250 and 150 < splits.count("val") < 250


def test_adding_clips_never_moves_existing_ones():
    before = {f"hello/{k}.mp4": split_of("", clip=f"hello/{k}.mp4") for k in range(40)}
    for k in range(40, 400):                      # the dataset grows ...
        split_of("", clip=f"hello/{k}.mp4")
    after = {path: split_of("", clip=path) for path in before}
    assert before == after                         # ... and nobody moved
    assert set(before.values()) == {"train", "val", "test"}
