"""Stage `export`: the served model in shipping formats, when asked for (`export.enabled`).

Usage:
    dvc exp run -S export.enabled=true       # or set it in params.yaml, then `dvc repro`
    python -m stages.export                  # reads params.yaml: export

Nobody in the training loop reads these files, and converting the whole
graph costs tens of seconds to minutes on a CPU, so by default (`enabled:
false`) the stage only writes `export.json` saying nothing was exported; an
experiment then pays nothing for it. With `enabled: true` it writes into
`paths.export`:
- `model.tflite`: the whole graph, batch 1, (1, seq_len, H, W, 3) uint8 -> (1, classes);
- `saved_model/`: a SavedModel for TF Serving
  (`docker run -p 8501:8501 -v $PWD/models/export/saved_model:/models/signs/1 -e MODEL_NAME=signs tensorflow/serving`);
- `model.json`: the served model's card, so the exports describe themselves.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from stages.lib.params import KEYPOINTS_BACKBONE, load_params
from stages.lib.storage import write_json

EXPORT_RECORD = "export.json"


def export_model(model_path: str, card_path: str, folder: Path) -> dict:
    """Whole-graph TFLite + SavedModel of the served model into `folder`; returns what was written."""
    from stages.lib.engines import convert_to_tflite
    from stages.lib.models import load_model
    card = json.loads(Path(card_path).read_text())
    if card["backbone"] == KEYPOINTS_BACKBONE:
        raise SystemExit("export writes the whole CNN+LSTM graph as one TFLite file and a SavedModel; a keypoint "
                         "model has no such graph (MediaPipe's models run beside the head): ship the bundle in "
                         f"{Path(model_path).parent}/ as it is (docs/real-clips.md)")
    model = load_model(model_path)
    seq_len, image_size = int(card["seq_len"]), int(card["image_size"])
    (folder / "model.tflite").write_bytes(convert_to_tflite(model, (1, seq_len, image_size, image_size, 3)))
    model.export(str(folder / "saved_model"), format="tf_saved_model", verbose=False)
    write_json(folder / "model.json", card)
    return {"enabled": True, "files": ["model.tflite", "saved_model", "model.json"],
            "input": f"(batch, {seq_len}, {image_size}, {image_size}, 3) uint8 RGB", "labels": card["labels"]}


def main() -> None:
    params = load_params()
    paths = params["paths"]
    folder = Path(paths["export"])
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    record = export_model(paths["model"], paths["model_card"], folder) if params["export"]["enabled"] \
        else {"enabled": False, "how": "dvc exp run -S export.enabled=true"}
    write_json(folder / EXPORT_RECORD, record)
    print(json.dumps(record))


if __name__ == "__main__":
    main()
