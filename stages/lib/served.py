"""The served model: the full CNN+LSTM graph plus everything needed to use it alone.

Usage:
    from stages.lib.served import copy_bundle, load_bundle, predict_video
    bundle = load_bundle("models/model.keras")
    result, frames = predict_video(bundle, "clip.mp4")   # Prediction of the clip's centred window
    bundle.labels, bundle.seq_len, bundle.sampling, bundle.no_sign_label
    copy_bundle("models/model.keras", "models/recordings/rec-1", {"metrics": {...}})   # a kept copy

Files of a bundle, all next to `<name>.keras` (written by the assemble stage,
named in params.yaml `paths`, and listed by the card under "files"):
    <name>.keras                 full graph: (batch, seq_len, H, W, 3) uint8 RGB -> (batch, classes)
    <name>.json                  the card: labels, no-sign class, window, sampling rule, params, files
    <name>.spotting.json         the spotting settings calibrated on this model's validation clips
                                 (the calibrate stage; optional: without it, callers use params.yaml's)
    frame_encoder_tflite         the graph's per-frame part, batch 1 (live path)
    head_tflite                  the graph's head, batch 1 (live path)

With `backbone.name: keypoints` the per-frame part is MediaPipe's pose and hand models (a zip of
the two .tflite files, as MediaPipe's own .task bundles are) run by stages/lib/keypoints.py, and
`<name>.keras` is the head alone: (batch, seq_len, 155) keypoints -> (batch, classes).

The card's `sampling` (rate, image size, minimum frames, longest clip) is the
one rule every consumer applies: the CLI, the app and evaluate sample with it,
so none of them classifies what the pipeline refuses.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from stages.lib.params import KEYPOINTS_BACKBONE
from stages.lib.video import COLOR_ORDER, PREPROCESSING_DESCRIPTION, Sampling, sample_clip
from stages.lib.windows import spread_windows

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


def make_card(head_card: dict, weights_source: str, finetune_status: dict) -> dict:
    """The served model's card: everything needed to use it without re-declaring constants.

    `head_card` is what the train stage wrote beside the head (labels, window,
    sampling, params); `finetune_status` what the finetune stage wrote.
    """
    from stages.lib.backbone import BACKBONE_NAME, EMBEDDING_SIZE
    keys = ("labels", "no_sign_label", "seq_len", "sample_fps", "window_seconds", "sampling", "image_size",
            "train_params", "train_clip_durations")
    return {"kind": CARD_KIND, **{key: head_card[key] for key in keys},
            # A head card without these (made by hand, or before keypoints existed) is a MobileNetV2 head.
            "backbone": head_card.get("backbone", BACKBONE_NAME),
            "feature_size": head_card.get("feature_size", EMBEDDING_SIZE),
            "centre_in_time": head_card.get("centre_in_time", True),
            "color_order": COLOR_ORDER, "frame_preprocessing": PREPROCESSING_DESCRIPTION,
            "weights_source": weights_source,
            "finetuned": bool(finetune_status["enabled"]),
            "precision_policy_trained": finetune_status.get("precision_policy_trained", "float32")}


def card_path_for(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


def spotting_path_for(model_path: str | Path) -> Path:
    """Where a model's calibrated spotting settings sit: beside it, `<name>.spotting.json`."""
    return Path(model_path).with_suffix(".spotting.json")


def bundle_files(model_path: str | Path) -> list[Path]:
    """Every file a served model is made of: the graph, its card, the files the card lists, and the
    calibrated spotting record when there is one (calibrate writes it after assemble)."""
    model_path, card_path = Path(model_path), card_path_for(Path(model_path))
    files = [model_path, card_path]
    if card_path.exists():
        listed = json.loads(card_path.read_text()).get("files", {})
        files += [model_path.with_name(relative) for relative in listed.values()]
    files.append(spotting_path_for(model_path))
    return list(dict.fromkeys(files))


def bundle_version(model_path: str | Path) -> tuple[tuple[str, int, int], ...]:
    """(name, mtime_ns, size) of each bundle file that exists: changes whenever any of them is rewritten,
    so a cache keyed on it reloads after a `spotting.*` experiment (only calibrate re-ran) too."""
    version = []
    for path in bundle_files(model_path):
        if path.exists():
            stat = path.stat()
            version.append((path.name, stat.st_mtime_ns, stat.st_size))
    return tuple(version)


def find_bundles(models_dir: str | Path) -> list[Path]:
    """Every served model under `models_dir` (a .keras file with a full-graph card beside it)."""
    found = []
    for candidate in sorted(Path(models_dir).rglob("*.keras")):
        card = card_path_for(candidate)
        if card.exists() and json.loads(card.read_text()).get("kind") == CARD_KIND:
            found.append(candidate)
    return found


def copy_bundle(model_path: str | Path, target_dir: str | Path, card_updates: dict | None = None) -> Path:
    """A served model and the files its card lists, copied into `target_dir`; the copy's model path.

    `card_updates` are added to the copy's card (e.g. the metrics of the run that made it). The
    copy is assembled in a sibling folder and renamed into place, so a reader never sees half a bundle.
    """
    model_path, target_dir = Path(model_path), Path(target_dir)
    card = json.loads(card_path_for(model_path).read_text())
    if card.get("kind") != CARD_KIND:
        raise ValueError(f"{card_path_for(model_path)} is not a served-model card")
    if target_dir.exists():
        raise FileExistsError(f"{target_dir} exists already")
    partial = target_dir.with_name(target_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        shutil.copy2(model_path, partial / model_path.name)
        for relative in card["files"].values():
            if relative != model_path.name:
                (partial / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(model_path.with_name(relative), partial / relative)
        if spotting_path_for(model_path).exists():        # written after the card, so not in its files
            shutil.copy2(spotting_path_for(model_path), partial / spotting_path_for(model_path).name)
        (partial / card_path_for(model_path).name).write_text(json.dumps({**card, **(card_updates or {})}, indent=2))
        os.replace(partial, target_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target_dir / model_path.name


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
    def no_sign_label(self) -> str | None:
        """The idle class ("_none") when the model has one; None when it always names a sign."""
        return self.card.get("no_sign_label")

    @property
    def seq_len(self) -> int:
        return int(self.card["seq_len"])

    @property
    def sampling(self) -> Sampling:
        """The pipeline's sampling rule: rate, image size, minimum frames, longest clip."""
        return Sampling.from_dict(self.card["sampling"])

    @property
    def image_size(self) -> int:
        return self.sampling.image_size

    @property
    def sample_fps(self) -> float:
        """Frames per second of stream time that enter the model, in training and live alike (always > 0)."""
        return self.sampling.fps

    @property
    def window_seconds(self) -> float:
        return self.seq_len / self.sample_fps

    @cached_property
    def spotting_record(self) -> dict | None:
        """The calibrate stage's record beside the model (settings, and how the threshold was chosen); None
        for a model without one (assembled by hand, or before calibration existed)."""
        path = spotting_path_for(self.model_path)
        return json.loads(path.read_text()) if path.exists() else None

    @property
    def uses_keypoints(self) -> bool:
        """`backbone.name: keypoints`: frames become MediaPipe keypoints, and `keras_model` is the head alone."""
        return self.card.get("backbone") == KEYPOINTS_BACKBONE

    @cached_property
    def keras_model(self):
        """The full graph (frames -> probabilities); with keypoints, the head (keypoint windows -> probabilities)."""
        from stages.lib.models import load_model  # TensorFlow loads only when a caller needs it
        return load_model(self.model_path)

    def file(self, name: str) -> Path:
        """A file of the bundle by its card name (e.g. "head_tflite"), next to the model."""
        return self.model_path.with_name(self.card["files"][name])

    @cached_property
    def frame_engine(self):
        """Per frame: MobileNetV2's TFLite encoder, or the keypoint models the same file holds (a zip)."""
        flatbuffer = self.file("frame_encoder_tflite").read_bytes()
        if self.uses_keypoints:
            from stages.lib.keypoints import KeypointExtractor
            return KeypointExtractor.from_archive(flatbuffer)
        from stages.lib.engines import TFLiteFrameEngine
        return TFLiteFrameEngine(flatbuffer)

    @cached_property
    def head_engine(self):
        from stages.lib.engines import TFLiteModel
        return TFLiteModel(self.file("head_tflite").read_bytes())

    def predict_window(self, frames: np.ndarray) -> np.ndarray:
        """(seq_len, H, W, 3) uint8 RGB window -> (classes,) probabilities, full Keras graph."""
        if self.uses_keypoints:                                        # keypoints (seq_len, 155), Keras head
            return self.keras_model(self.frame_engine.embed(frames)[None], training=False).numpy()[0]
        return self.keras_model(frames[None], training=False).numpy()[0]

    def predict_window_fast(self, frames: np.ndarray) -> np.ndarray:
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
    if card.get("kind") != CARD_KIND or "sampling" not in card:
        raise ValueError(f"{card_path} is not a served-model card of this version (kind {card.get('kind')!r}); "
                         "re-create it with `dvc repro`")
    return ServedBundle(model_path, card)


def classify_clip_frames(bundle: ServedBundle, frames: np.ndarray, top_k: int = 3, fast: bool = False,
                         windows: int = 1, reach: float = 0.0) -> Prediction:
    """A sampled clip (frames, H, W, 3) -> Prediction of its centred window, or the mean of `windows`
    windows spread over +-`reach` of it (test-time averaging)."""
    predict = bundle.predict_window_fast if fast else bundle.predict_window
    indices = spread_windows(len(frames), bundle.seq_len, windows, reach)   # windows 1: the centred one
    probabilities = np.mean([predict(frames[window]) for window in indices], axis=0)
    return prediction_from_probabilities(probabilities, bundle.labels, top_k)


def predict_video(bundle: ServedBundle, video_path: str | Path, top_k: int = 3, fast: bool = False
                  ) -> tuple[Prediction, np.ndarray]:
    """Sample a clip exactly as training did (the card's rule) and classify it; (prediction, sampled frames)."""
    clip = sample_clip(video_path, bundle.sampling)
    return classify_clip_frames(bundle, clip.frames, top_k, fast), clip.frames
