"""Why a dataset is hard for the model: figures read from a pipeline workspace (used by stages/tools/devset.py).

Usage:
    from stages.lib.diagnosis import diagnose_workspace
    figures = diagnose_workspace(Path("~/.cache/signlang/devset/wlasl50").expanduser())

- face size: how many of the model's pixels a signer's face gets (a hand is about
  a face's size) when the frame is letterboxed, and when it is cut to the signing space;
- embedding variance: how much of the embeddings' variance lies between clips (what
  stays constant through a clip: signer, clothes, room, framing) rather than within
  them (what moves: the hands). Temporal centring removes the between-clip part;
- same-sign similarity: whether two clips of one sign are closer than clips of two
  signs, before and after centring (if not, nothing downstream can separate them);
- loss curves: where validation loss stopped improving while training loss fell.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from stages.lib.storage import clip_slice, read_clip_table, read_offsets
from stages.lib.video import iterate_video_frames, reduce_frame

FACE_PROBE_CLIPS = 60       # clips whose first frame is searched for a face


def face_sizes(manifest: pd.DataFrame, image_size: int) -> dict:
    """Median face height in the model's input pixels: letterboxed vs cut to the signing space."""
    from stages.lib.faces import find_face, signing_space
    usable = manifest[manifest["status"] == "ok"]
    heights_letterbox, heights_crop, found = [], [], 0
    for path in usable["path"].iloc[:: max(len(usable) // FACE_PROBE_CLIPS, 1)][:FACE_PROBE_CLIPS]:
        _, frame = next(iterate_video_frames(path))
        reduced = reduce_frame(frame, image_size)
        face = find_face(reduced)
        if face is None:
            continue
        found += 1
        height, width = reduced.shape[:2]
        heights_letterbox.append(face[3] * image_size / max(height, width))
        heights_crop.append(face[3] * image_size / signing_space(face, width, height).side)
    probed = min(len(usable), FACE_PROBE_CLIPS)
    return {"clips_probed": probed, "faces_found": found,
            "face_height_px_letterboxed": round(float(np.median(heights_letterbox)), 1) if found else None,
            "face_height_px_signing_space": round(float(np.median(heights_crop)), 1) if found else None}


def variance_shares(clips: list[np.ndarray]) -> dict:
    """Share of embedding variance between clip means vs within clips (summed over dimensions)."""
    everything = np.concatenate(clips)
    total = everything.var(axis=0).sum()
    means = np.stack([clip.mean(axis=0) for clip in clips])
    between = (np.repeat(means, [len(clip) for clip in clips], axis=0).var(axis=0)).sum()
    return {"between_clip_share": round(float(between / total), 3),
            "within_clip_share": round(float(1 - between / total), 3)}


def same_sign_similarity(clips: list[np.ndarray], labels: np.ndarray, centred: bool) -> dict:
    """Mean cosine similarity of clip descriptors (mean, or mean absolute deviation when centred) of
    two clips of one sign vs two clips of different signs."""
    descriptors = np.stack([np.abs(clip - clip.mean(axis=0)).mean(axis=0) if centred else clip.mean(axis=0)
                            for clip in clips])
    descriptors = descriptors - descriptors.mean(axis=0)
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True) + 1e-12
    similarity = descriptors @ descriptors.T
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    prefix = "centred_" if centred else ""
    return {f"{prefix}same_sign_cosine": round(float(similarity[same & off_diagonal].mean()), 3),
            f"{prefix}other_sign_cosine": round(float(similarity[~same].mean()), 3)}


def loss_curves(train_logs: Path) -> dict:
    """Epoch of the best validation loss, and the two losses there and at the end."""
    train = pd.read_csv(train_logs / "plots/metrics/train/loss.tsv", sep="\t")
    validation = pd.read_csv(train_logs / "plots/metrics/eval/loss.tsv", sep="\t")
    best = int(validation["loss"].idxmin())
    return {"epochs": int(len(validation)), "best_val_loss_epoch": best + 1,
            "train_loss_at_best": round(float(train["loss"].iloc[best]), 3),
            "val_loss_at_best": round(float(validation["loss"].iloc[best]), 3),
            "train_loss_last": round(float(train["loss"].iloc[-1]), 3),
            "val_loss_last": round(float(validation["loss"].iloc[-1]), 3)}


def diagnose_workspace(workspace: Path) -> dict:
    """Every figure above for a workspace that has run at least up to `train`."""
    import yaml
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    paths = params["paths"]
    embeddings_path = workspace / paths["embeddings"]
    table, offsets = read_clip_table(embeddings_path), read_offsets(embeddings_path)
    train_rows = np.flatnonzero(table["splits"] == "train")
    with h5py.File(embeddings_path, "r") as handle:
        clips = [handle["embeddings"][clip_slice(offsets, row)] for row in train_rows]
    names = sorted(set(table["labels"]))
    labels = np.array([names.index(label) for label in table["labels"][train_rows]])
    manifest = pd.read_csv(workspace / paths["manifest"], keep_default_na=False)
    manifest["path"] = [str(workspace / path) if not Path(path).is_absolute() else path for path in manifest["path"]]
    return {"face_size": face_sizes(manifest, int(params["base"]["image_size"])),
            "embedding_variance": variance_shares(clips),
            "similarity": {**same_sign_similarity(clips, labels, centred=False),
                           **same_sign_similarity(clips, labels, centred=True)},
            "loss_curves": loss_curves(workspace / paths["train_logs"])}
