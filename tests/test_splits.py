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


def test_adding_clips_to_a_real_folder_never_moves_the_clips_already_there(tmp_path):
    """Growth as a user meets it: sample a folder, add clips and signers, sample again. Every clip
    already there keeps its split in the manifest."""
    import sys

    import numpy as np
    import pandas as pd

    from tests.conftest import gray_ramp_frames, make_stage_workspace, run, write_video
    root = make_stage_workspace(tmp_path / "repo", {"data": {"source": "folder", "path": "mine", "split": "stratified"},
                                                    "sample": {"min_frames": 1}})

    def add_clips(signers: range) -> None:
        for sign in ("hello", "thanks", "wave"):
            for signer in signers:
                write_video(root / "mine" / sign / f"signer{signer:02d}_take.avi", gray_ramp_frames(6, 24, 32), fps=10)

    def manifest() -> pd.DataFrame:
        run([sys.executable, "-m", "stages.sample"], root)
        return pd.read_csv(root / "data/manifest.csv", keep_default_na=False).set_index("path")

    add_clips(range(0, 10))
    before = manifest()
    add_clips(range(10, 40))                                 # the dataset grows fourfold, new signers too
    after = manifest()
    assert len(after) == 4 * len(before)
    assert (after.loc[before.index, "split"] == before["split"]).all()        # nobody moved
    assert set(after["split"]) == {"train", "val", "test"}
    assert np.isin(before["split"].unique(), ["train", "val", "test"]).all()
