"""Load cached embeddings by split, with labels as class indices.

Usage:
    from stages.lib.embeddings import load_split, class_names
    classes = class_names("features/embeddings.h5")          # sorted, the model's output order
    x_train, y_train, paths = load_split("features/embeddings.h5", "train", classes)
    x_train.shape                                             # (clips, seq_len, 1280) float32
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from stages.lib.storage import read_clip_table


def class_names(embeddings_path: str | Path) -> list[str]:
    """Every class with at least one usable clip, sorted: the model's output order."""
    return sorted(set(read_clip_table(embeddings_path)["labels"].tolist()))


def load_split(embeddings_path: str | Path, split: str, classes: list[str]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(embeddings (n, seq_len, 1280) float32, class indices (n,) int64, clip paths (n,))."""
    table = read_clip_table(embeddings_path)
    selected = np.flatnonzero(table["splits"] == split)
    class_index = {name: index for index, name in enumerate(classes)}
    with h5py.File(embeddings_path, "r") as handle:
        # h5py fancy indexing needs increasing indices; flatnonzero gives exactly that.
        embeddings = handle["embeddings"][selected] if len(selected) else \
            np.zeros((0,) + handle["embeddings"].shape[1:], np.float32)
    labels = np.array([class_index[label] for label in table["labels"][selected]], np.int64)
    return embeddings.astype(np.float32), labels, table["paths"][selected]
