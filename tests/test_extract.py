"""Cached embeddings are exactly what the backbone computes; the cache resumes and shards merge."""
from __future__ import annotations

import shutil
import sys

import h5py
import numpy as np
import pytest

from stages.extract import parse_shard
from stages.lib.backbone import build_frame_encoder
from tests.conftest import run, set_params

STAGE = [sys.executable, "-m"]


@pytest.fixture
def sampled_workspace(workspace):
    """Tiny workspace with pretrained weights (random ones give near-constant features)."""
    set_params(workspace, {"backbone": {"weights": "imagenet"}})
    run(STAGE + ["stages.generate"], workspace)
    run(STAGE + ["stages.sample"], workspace)
    return workspace


def read_embeddings(root):
    with h5py.File(root / "features/embeddings.h5", "r") as handle:
        return handle["embeddings"][...], dict(handle.attrs)


def test_embeddings_equal_the_backbone_on_the_sampled_frames(sampled_workspace):
    root = sampled_workspace
    run(STAGE + ["stages.extract"], root)
    embeddings, attributes = read_embeddings(root)
    encoder, source = build_frame_encoder(image_size=64, weights="imagenet")
    assert attributes["weights_source"] == source and "imagenet" in source
    with h5py.File(root / "data/frames.h5", "r") as handle:
        frames = handle["frames"][:3]                                   # (3, seq_len, 64, 64, 3) uint8
    expected = encoder.predict(frames.reshape(-1, 64, 64, 3), verbose=0).reshape(3, frames.shape[1], 1280)
    assert embeddings[:3].std() > 1e-3                                  # real features, not a constant
    np.testing.assert_allclose(embeddings[:3], expected, atol=1e-4, rtol=1e-4)


def test_second_run_reuses_the_cache_and_shards_merge_into_the_same_file(sampled_workspace):
    root = sampled_workspace
    first = run(STAGE + ["stages.extract"], root)
    assert "embedded 16 clips, reused 0" in first.stdout
    whole, _ = read_embeddings(root)

    again = run(STAGE + ["stages.extract"], root)
    assert "embedded 0 clips, reused 16" in again.stdout

    shutil.rmtree(root / "features/cache")
    (root / "features/embeddings.h5").unlink()
    shard_zero = run(STAGE + ["stages.extract", "--shard", "0/2"], root)
    shard_one = run(STAGE + ["stages.extract", "--shard", "1/2"], root)
    assert "embedded 8 clips" in shard_zero.stdout and "embedded 8 clips" in shard_one.stdout
    assert not (root / "features/embeddings.h5").exists()             # shards only fill the cache
    merged = run(STAGE + ["stages.extract"], root)
    assert "embedded 0 clips, reused 16" in merged.stdout
    np.testing.assert_array_equal(read_embeddings(root)[0], whole)


@pytest.mark.parametrize("text,expected", [(None, (0, 1)), ("0/4", (0, 4)), ("3/4", (3, 4))])
def test_parse_shard(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["4/4", "a/b", "1"])
def test_parse_shard_rejects_bad_values(text):
    with pytest.raises(SystemExit, match="--shard"):
        parse_shard(text)
