"""The fine-tuned weights folder (`paths.finetuned`): what the finetune stage leaves for the assemble stage.

Usage:
    from stages.lib.finetuned import read_finetune_status, FINETUNED_ENCODER_WEIGHTS
    status = read_finetune_status("models/finetuned")     # {"enabled": False} or {"enabled": True, ...}

With fine-tuning off the folder holds only the status file, byte-identical
whatever the other finetune params say, so changing them re-runs nothing
downstream. With it on, the tuned encoder and head weights (float32) sit
beside it. No TensorFlow here: the disabled finetune stage stays a second.
"""
from __future__ import annotations

import json
from pathlib import Path

FINETUNED_STATUS = "status.json"
FINETUNED_ENCODER_WEIGHTS = "encoder.weights.h5"
FINETUNED_HEAD_WEIGHTS = "head.weights.h5"


def read_finetune_status(folder: str | Path) -> dict:
    return json.loads((Path(folder) / FINETUNED_STATUS).read_text())
