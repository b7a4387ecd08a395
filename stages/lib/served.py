"""The served model: the full CNN+LSTM graph plus everything needed to use it alone.

Usage:
    from stages.lib.served import load_bundle, predict_video
    bundle = load_bundle("models/model.keras")
    result = predict_video(bundle, "clip.mp4")     # Prediction: label, top-k, all probabilities
    bundle.labels, bundle.seq_len, bundle.image_size, bundle.sample_fps

Files of a bundle, all next to `<name>.keras` (written by the finetune stage,
named in params.yaml `paths`, and listed by the card under "files"):
    <name>.keras                 full graph: (batch, T, H, W, 3) uint8 RGB -> (batch, classes)
    <name>.json                  the card: labels, seq_len, image_size, sample_fps, params, files
    frame_encoder_tflite         the graph's per-frame part, batch 1 (live path)
    head_tflite                  the graph's head, batch 1 (live path)
    model_tflite                 the whole graph, batch 1 (absent when exported for the app only)
    saved_model                  SavedModel export for TF Serving (likewise)
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from stages.lib.video import COLOR_ORDER, PREPROCESSING_DESCRIPTION, sample_video

CARD_KIND = "sign-recognizer-full-graph"


@dataclass(frozen=True)
class Prediction:
    label: str                               # most probable class
    top: list[tuple[str, float]]             # the k most probable, best first
    probabilities: dict[str, float]          # every class

    def as_json(self) -> dict:
        return {"label": self.label, "top": [[name, prob] for name, prob in self.top],
                "probs": self.probabilities}


def prediction_from_probabilities(probabilities: np.ndarray, labels: list[str], top_k: int = 3) -> Prediction:
    """(classes,) probabilities -> Prediction with the top-k best first."""
    order = np.argsort(-probabilities)[:top_k]
    return Prediction(label=labels[int(order[0])],
                      top=[(labels[int(i)], float(probabilities[i])) for i in order],
                      probabilities={label: float(p) for label, p in zip(labels, probabilities)})


def make_card(labels: list[str], seq_len: int, image_size: int, sample_fps: float, weights_source: str,
              train_params: dict, finetune_params: dict, precision_policy_trained: str) -> dict:
    """The served model's card: everything needed to use it without re-declaring constants."""
    from stages.lib.backbone import BACKBONE_NAME
    return {"kind": CARD_KIND, "labels": list(labels), "seq_len": int(seq_len), "image_size": int(image_size),
            "sample_fps": float(sample_fps), "color_order": COLOR_ORDER,
            "frame_preprocessing": PREPROCESSING_DESCRIPTION, "backbone": BACKBONE_NAME,
            "weights_source": weights_source, "train_params": train_params, "finetune_params": finetune_params,
            "precision_policy_trained": precision_policy_trained}


def card_path_for(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


def find_bundles(models_dir: str | Path) -> list[Path]:
    """Every served model under `models_dir` (a .keras file with a full-graph card beside it)."""
    found = []
    for candidate in sorted(Path(models_dir).rglob("*.keras")):
        card = card_path_for(candidate)
        if card.exists() and json.loads(card.read_text()).get("kind") == CARD_KIND:
            found.append(candidate)
    return found


@dataclass
class ServedBundle:
    """A served model; its Keras graph and TFLite interpreters load on first use.

    Not thread-safe: an interpreter serves one call at a time, so callers sharing
    one bundle across threads (the app) hold a lock around predictions.
    """

    model_path: Path
    card: dict = field(repr=False)

    @property
    def labels(self) -> list[str]:
        return self.card["labels"]

    @property
    def seq_len(self) -> int:
        return int(self.card["seq_len"])

    @property
    def image_size(self) -> int:
        return int(self.card["image_size"])

    @property
    def sample_fps(self) -> float:
        """Frames per second at which training sampled clips; live frames enter at this rate."""
        return float(self.card["sample_fps"])

    @cached_property
    def keras_model(self):
        from stages.lib.models import load_model  # TensorFlow loads only when a caller needs it
        return load_model(self.model_path)

    def file(self, name: str) -> Path:
        """A file of the bundle by its card name (e.g. "head_tflite"), next to the model."""
        return self.model_path.with_name(self.card["files"][name])

    @cached_property
    def frame_engine(self):
        from stages.lib.engines import TFLiteFrameEngine
        return TFLiteFrameEngine(self.file("frame_encoder_tflite").read_bytes())

    @cached_property
    def head_engine(self):
        from stages.lib.engines import TFLiteModel
        return TFLiteModel(self.file("head_tflite").read_bytes())

    def predict_frames(self, frames: np.ndarray) -> np.ndarray:
        """(seq_len, H, W, 3) uint8 RGB sampled frames -> (classes,) probabilities, full Keras graph."""
        return self.keras_model(frames[None], training=False).numpy()[0]

    def predict_frames_fast(self, frames: np.ndarray) -> np.ndarray:
        """The same through the TFLite parts of the same graph (~1e-5 apart, several times faster)."""
        embeddings = self.frame_engine.embed(frames)                   # (seq_len, 1280)
        return self.head_engine.run(embeddings[None])[0]              # (classes,)


def load_bundle(model_path: str | Path) -> ServedBundle:
    """A served model and its card; a clear error when the pipeline has not produced it yet."""
    model_path = Path(model_path)
    card_path = card_path_for(model_path)
    if not model_path.exists() or not card_path.exists():
        raise FileNotFoundError(f"{model_path} (and its card {card_path.name}) not found: run `dvc repro` first")
    card = json.loads(card_path.read_text())
    if card.get("kind") != CARD_KIND:
        raise ValueError(f"{card_path} is not a served-model card (kind {card.get('kind')!r})")
    return ServedBundle(model_path, card)


def classify_frames(bundle: ServedBundle, frames: np.ndarray, top_k: int = 3, fast: bool = False) -> Prediction:
    """(seq_len, H, W, 3) uint8 RGB sampled frames -> Prediction (full Keras graph, or its TFLite parts)."""
    probabilities = bundle.predict_frames_fast(frames) if fast else bundle.predict_frames(frames)
    return prediction_from_probabilities(probabilities, bundle.labels, top_k)


def predict_video(bundle: ServedBundle, video_path: str | Path, top_k: int = 3, fast: bool = False,
                  min_frames: int = 1) -> tuple[Prediction, np.ndarray]:
    """Sample a clip exactly as training did and classify it; returns (prediction, sampled frames)."""
    clip = sample_video(video_path, bundle.seq_len, bundle.image_size, min_frames=min_frames)
    return classify_frames(bundle, clip.frames, top_k, fast), clip.frames
