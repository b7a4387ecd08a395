"""Stage `assemble`: the served CNN+LSTM graph and the two TFLite parts the live path runs.

Usage:
    python -m stages.assemble          # reads params.yaml: backbone

Writes the served model `paths.model`: uint8 RGB frames
(batch, seq_len, image_size, image_size, 3) -> MobileNetV2 preprocessing inside
the graph -> MobileNetV2 on every frame (time folded into the batch) -> the
trained BiLSTM head -> float32 softmax; beside it its card `paths.model_card` (labels, no-sign class, window,
sampling rule, params, files) and batch-1 TFLite files of the frame encoder
and the head, which the live path and the app run.

The encoder and head are the trained head on the plain backbone, or the
weights the finetune stage tuned end to end (`paths.finetuned`). For the plain
backbone the TFLite encoder is the very file the extract stage converted and
ran (cached by weights and image size), copied, not converted again; only the
small head is converted here. Exports nobody in the training loop reads (the
whole graph as one TFLite file, a SavedModel for TF Serving) are the `export`
stage's.

With `backbone.name: keypoints` the served Keras model is the head alone and the per-frame part is
the two pinned MediaPipe models in one archive (stages/lib/keypoints.py); fine-tuning does not apply.
"""
from __future__ import annotations

import json
from pathlib import Path

import keras

from stages.lib.backbone import build_frame_encoder, check_recorded_weights
from stages.lib.engines import cached_tflite, convert_to_tflite, frame_encoder_tflite_path
from stages.lib.finetuned import FINETUNED_ENCODER_WEIGHTS, FINETUNED_HEAD_WEIGHTS, read_finetune_status
from stages.lib.keypoints import KEYPOINT_SOURCE, keypoint_models_archive
from stages.lib.models import build_full_model, build_head_from_card, load_model
from stages.lib.params import KEYPOINTS_BACKBONE, load_params
from stages.lib.served import make_card
from stages.lib.storage import write_json

BUNDLE_FILES = ("model", "frame_encoder_tflite", "head_tflite")   # the paths: keys a bundle consists of


def load_served_parts(head_card: dict, backbone_weights: str,
                      paths: dict) -> tuple[keras.Model, keras.Model, str, dict]:
    """(encoder, head, weights source, finetune status): tuned weights when fine-tuning ran."""
    status = read_finetune_status(paths["finetuned"])
    encoder, weights_source = build_frame_encoder(int(head_card["image_size"]), backbone_weights)
    check_recorded_weights(weights_source, paths["backbone_weights"])
    if weights_source != head_card["weights_source"]:
        raise SystemExit(f"backbone weights now resolve to {weights_source!r} but the head was trained on "
                         f"embeddings from {head_card['weights_source']!r}: run `dvc repro` from extract")
    if status["enabled"]:
        head = build_head_from_card(head_card)
        encoder.load_weights(Path(paths["finetuned"]) / FINETUNED_ENCODER_WEIGHTS)
        head.load_weights(Path(paths["finetuned"]) / FINETUNED_HEAD_WEIGHTS)
    else:
        head = load_model(paths["head"])
    return encoder, head, weights_source, status


def write_bundle(model: keras.Model, encoder_tflite: bytes, head: keras.Model, card: dict, paths: dict) -> None:
    """The served model and everything needed to use it alone, next to each other.

    `paths` maps the names in BUNDLE_FILES (and "model_card") to files; the card
    lists the files relative to the model's folder, so a bundle can be moved.
    """
    model_dir = Path(paths["model"]).parent
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save(paths["model"])
    Path(paths["frame_encoder_tflite"]).write_bytes(encoder_tflite)
    Path(paths["head_tflite"]).write_bytes(
        convert_to_tflite(head, (1, card["seq_len"], head.input_shape[-1])))   # the BiLSTM converts at batch 1
    card["files"] = {name: Path(paths[name]).relative_to(model_dir).as_posix() for name in BUNDLE_FILES}
    write_json(paths["model_card"], card)


def assemble_keypoint_bundle(head_card: dict, paths: dict) -> None:
    """`backbone.name: keypoints`: the head is the Keras model; the two MediaPipe models are the per-frame part."""
    status = read_finetune_status(paths["finetuned"])
    if status["enabled"]:
        raise SystemExit("finetune.enabled is true, but fine-tuning trains MobileNetV2's top blocks and the "
                         "keypoint backbone has none: set finetune.enabled false (or backbone.name mobilenet_v2)")
    head = load_model(paths["head"])
    write_bundle(head, keypoint_models_archive(), head, make_card(head_card, KEYPOINT_SOURCE, status), paths)
    print(f"served model written to {paths['model']} (head on {KEYPOINT_SOURCE}; {len(head_card['labels'])} "
          f"classes, windows of {head_card['seq_len']} frames)")


def main() -> None:
    params = load_params()
    paths = params["paths"]
    head_card = json.loads(Path(paths["labels"]).read_text())
    if head_card["backbone"] == KEYPOINTS_BACKBONE:
        assemble_keypoint_bundle(head_card, paths)
        return
    encoder, head, weights_source, status = load_served_parts(head_card, params["backbone"]["weights"], paths)
    image_size = int(head_card["image_size"])
    batch_shape = (1, image_size, image_size, 3)
    if status["enabled"]:
        encoder_tflite = convert_to_tflite(encoder, batch_shape)      # tuned weights: a new encoder
    else:
        encoder_tflite = cached_tflite(encoder, frame_encoder_tflite_path(weights_source, image_size), batch_shape)
    model = build_full_model(encoder, head, int(head_card["seq_len"]))
    write_bundle(model, encoder_tflite, head, make_card(head_card, weights_source, status), paths)
    print(f"served model written to {paths['model']} ({'fine-tuned' if status['enabled'] else 'trained head'} on "
          f"{weights_source}; {len(head_card['labels'])} classes, windows of {head_card['seq_len']} frames)")


if __name__ == "__main__":
    main()
