"""MobileNetV2 on the hands: each hand's crop embedded beside the keypoints, probed by cross-validation.

Usage:
    python -m stages.tools.devset /path/to/wlasl50 --folds 5 --rows keypoints-probe-hand-crops
    from stages.tools.hand_crops import embed_hand_crops, with_hand_crops
    embed_hand_crops(Path("data/frames.h5"), Path("features/hand_crops.h5"))   # (frames, 2, 1280) float16
    clips = with_hand_crops(clips, train_indices, Path("features/hand_crops.h5"))  # (T, 155) -> (T, 155 + 2 x 16)

Issue 33's last lever: the product's MobileNetV2 embedding, given the hands' pixels instead of the
room's. Every sampled frame goes through the keypoint path's pose model; the square it would hand to
the hand landmark model around each wrist (stages/lib/keypoints.py `hand_crop_to_frame`, fingers up,
224 px: MobileNetV2's own input) goes through MobileNetV2 (TFLite, the extract stage's weights), so a
hand the landmark model misses (blurred, turned, half out of the frame) still has its pixels seen.
A frame without a person gets zeros. 1280 numbers a hand are far more than ~6 clips a sign can fit,
so each fold reduces them to HAND_CROP_COMPONENTS whitened principal components, fitted on that fold's
training frames only, before they join the keypoints. Like the other probes, it enters the served
model only if it beats the folds' spread.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from stages.lib.embeddings import SplitClips
from stages.lib.keypoints import HAND_INPUT, KeypointLane, crop_hand, fetch_keypoint_models, hand_crop_affines
from stages.lib.storage import atomic_path

HAND_CROP_COMPONENTS = 16       # per hand, after PCA: about the keypoints' own hand-shape numbers per hand (42)
EMBEDDING_SIZE = 1280


def hand_crops(lane: KeypointLane, frame: np.ndarray) -> np.ndarray | None:
    """(S, S, 3) uint8 RGB -> (2, HAND_INPUT, HAND_INPUT, 3) uint8: the signer's left and right hand crops,
    or None where the pose model finds no person."""
    found = lane.body(frame)
    if found is None:
        return None
    return np.stack([crop_hand(frame, affine) for affine in hand_crop_affines(found[0])])   # the hand model's crops


def mobilenet_engine(weights: str = "imagenet"):
    """The extract stage's MobileNetV2 frame engine at the hand crop's size (TFLite, converted once per machine)."""
    from stages.lib.backbone import build_frame_encoder
    from stages.lib.engines import frame_encoder_tflite_path, make_frame_engine
    encoder, source = build_frame_encoder(HAND_INPUT, weights)
    return make_frame_engine(encoder, "tflite", tflite_cache=frame_encoder_tflite_path(source, HAND_INPUT))


def embed_hand_crops(frames_path: Path, output_path: Path, weights: str = "imagenet") -> None:
    """Every frame of a sample stage's frames file -> its two hand crops' embeddings, with the clips' paths
    and offsets, in `output_path` (written whole or not at all)."""
    models = {name: path.read_bytes() for name, path in fetch_keypoint_models().items()}
    lane, engine = KeypointLane(models), mobilenet_engine(weights)
    with h5py.File(frames_path, "r") as frames:
        offsets, paths = frames["offsets"][:], frames["paths"][:]
        embeddings = np.zeros((len(frames["frames"]), 2, EMBEDDING_SIZE), np.float16)
        for row in tqdm(range(len(frames["frames"])), desc="hand crops", unit="frame"):
            crops = hand_crops(lane, frames["frames"][row])
            if crops is not None:
                embeddings[row] = engine.embed(crops)                               # (2, 1280)
    with atomic_path(output_path) as partial:
        with h5py.File(partial, "w") as output:
            output["embeddings"], output["offsets"], output["paths"] = embeddings, offsets, paths


def read_hand_crops(path: Path) -> dict[str, np.ndarray]:
    """{clip path: (frames, 2, 1280) float32} from `embed_hand_crops`' file."""
    with h5py.File(path, "r") as crops:
        embeddings, offsets = crops["embeddings"][:].astype(np.float32), crops["offsets"][:]
        names = [name.decode() if isinstance(name, bytes) else str(name) for name in crops["paths"][:]]
    return {name: embeddings[offsets[i]:offsets[i + 1]] for i, name in enumerate(names)}


def with_hand_crops(clips: SplitClips, train_indices: np.ndarray, crops_path: Path,
                    components: int = HAND_CROP_COMPONENTS) -> SplitClips:
    """Each clip's keypoints (T, F) beside its hands' embeddings reduced to `components` whitened principal
    components each, scaled to the keypoints' typical spread, (T, F + 2 x components); the reduction and
    the scale fitted on the training clips' frames where a person was found (a frame without one keeps zeros)."""
    from sklearn.decomposition import PCA
    crops = read_hand_crops(crops_path)
    per_clip = [crops[str(path)] for path in clips.paths]                          # each (T, 2, 1280)
    for clip, hands in zip(clips.clips, per_clip):
        if len(clip) != len(hands):
            raise ValueError(f"hand crops hold {len(hands)} frames of a clip with {len(clip)}: made from "
                             "another sampling; remove the crops file and run again")
    training = np.concatenate([per_clip[i].reshape(-1, EMBEDDING_SIZE) for i in train_indices])
    pca = PCA(components, whiten=True, random_state=0).fit(training[training.any(axis=1)])
    # Whitened components on the keypoints' own scale (their median channel sd on training frames with a person):
    # at unit variance, 32 numbers a frame of mostly who and where the hand is drowned the keypoints (0.131 top-1
    # against 0.310, docs/real-clips.md).
    keypoints = np.concatenate([clips.clips[i] for i in train_indices])
    scale = float(np.median(keypoints[keypoints.any(axis=1)].std(axis=0)))
    prepared = []
    for clip, hands in zip(clips.clips, per_clip):
        flat = hands.reshape(-1, EMBEDDING_SIZE)                                  # (T x 2, 1280)
        reduced = np.where(flat.any(axis=1, keepdims=True), scale * pca.transform(flat), 0.0)
        prepared.append(np.concatenate([clip, reduced.reshape(len(clip), -1)], axis=1).astype(np.float32))
    return SplitClips(prepared, clips.labels, clips.paths)
