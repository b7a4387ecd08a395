"""Load cached embeddings by split, one array per clip, with labels as class indices.

Usage:
    from stages.lib.embeddings import load_split, class_names
    classes = class_names("features/embeddings.h5")          # sorted, the model's output order
    split = load_split("features/embeddings.h5", "train", classes)
    split.clips[0].shape                                      # (frames of clip 0, features) float32
    split.labels, split.paths                                 # (clips,) class indices, (clips,) clip paths
    reuse = served_uses_the_cached_embeddings(bundle, read_attributes("features/embeddings.h5"))
    for embeddings in served_clip_embeddings(bundle, split, "data/frames.h5", reuse): ...   # what the served
                                                              # model's encoder makes of each clip's frames
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from stages.lib.storage import clip_slice, read_clip_table, read_offsets

if TYPE_CHECKING:
    from stages.lib.served import ServedBundle


@dataclass(frozen=True)
class SplitClips:
    clips: list[np.ndarray]      # one (frames, features) float32 array per clip: clips keep their own length
    labels: np.ndarray           # (clips,) int64 class indices
    paths: np.ndarray            # (clips,) clip paths, as in the manifest
    signers: np.ndarray | None = None   # (clips,) signer names ("" where unknown); None where not read

    def __len__(self) -> int:
        return len(self.clips)


def class_names(embeddings_path: str | Path) -> list[str]:
    """Every class with at least one usable clip, sorted: the model's output order."""
    return sorted(set(read_clip_table(embeddings_path)["labels"].tolist()))


def load_split(embeddings_path: str | Path, split: str, classes: list[str]) -> SplitClips:
    """The clips of one split (train, val or test) as per-clip arrays, in file order."""
    table = read_clip_table(embeddings_path)
    offsets = read_offsets(embeddings_path)
    selected = np.flatnonzero(table["splits"] == split)
    class_index = {name: index for index, name in enumerate(classes)}
    with h5py.File(embeddings_path, "r") as handle:
        clips = [handle["embeddings"][clip_slice(offsets, index)].astype(np.float32) for index in selected]
    labels = np.array([class_index[label] for label in table["labels"][selected]], np.int64)
    return SplitClips(clips, labels, table["paths"][selected], table["signers"][selected])


def served_uses_the_cached_embeddings(bundle: ServedBundle, embeddings_attributes: dict) -> bool:
    """True when the served encoder is the very TFLite file that computed the cached embeddings.

    The assemble stage copies extract's converted encoder unless fine-tuning
    changed it; then embedding the frames again would only recompute the cache.
    Keypoints: the bundle holds the same two pinned models that extract ran.
    """
    return (not bundle.card["finetuned"] and embeddings_attributes["engine"] in ("tflite", "keypoints")
            and embeddings_attributes["weights_source"] == bundle.card["weights_source"])


def served_clip_embeddings(bundle: ServedBundle, split: SplitClips, frames_path: str | Path,
                           reuse_embeddings: bool) -> Iterator[np.ndarray]:
    """Each clip of `split` as the served model's frame encoder embeds it: (frames, features) per clip.

    The cached embeddings themselves when `reuse_embeddings` (see served_uses_the_cached_embeddings);
    else the clip's sampled frames through the bundle's TFLite encoder (a fine-tuned one, say).
    """
    if reuse_embeddings:
        yield from split.clips
        return
    table = read_clip_table(frames_path)
    offsets = read_offsets(frames_path)
    row_of = {path: row for row, path in enumerate(table["paths"])}
    with h5py.File(frames_path, "r") as handle:
        for path in split.paths:
            yield bundle.frame_engine.embed(handle["frames"][clip_slice(offsets, row_of[path])])
