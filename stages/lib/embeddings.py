"""Load cached embeddings by split, one array per clip, with labels as class indices.

Usage:
    from stages.lib.embeddings import load_split, class_names
    classes = class_names("features/embeddings.h5")          # sorted, the model's output order
    split = load_split("features/embeddings.h5", "train", classes)
    split.clips[0].shape                                      # (frames of clip 0, 1280) float32
    split.labels, split.paths                                 # (clips,) class indices, (clips,) clip paths
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from stages.lib.storage import clip_slice, read_clip_table, read_offsets


@dataclass(frozen=True)
class SplitClips:
    clips: list[np.ndarray]      # one (frames, 1280) float32 array per clip: clips keep their own length
    labels: np.ndarray           # (clips,) int64 class indices
    paths: np.ndarray            # (clips,) clip paths, as in the manifest

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
    return SplitClips(clips, labels, table["paths"][selected])
