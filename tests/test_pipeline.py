"""The whole DVC pipeline on tiny data: repro, no-op repro, an experiment that skips the CNN stages."""
from __future__ import annotations

import json
import sys

import h5py
import pandas as pd

from tests.conftest import run, set_params

DVC = [sys.executable, "-m", "dvc"]
REQUIRED_METRICS = {"test_accuracy", "test_top3_accuracy", "test_macro_f1", "num_classes",
                    "num_test_clips", "backbone_weights"}


def stages_run(dvc_output: str) -> set[str]:
    return {line.split("'")[1] for line in dvc_output.splitlines() if line.startswith("Running stage '")}


def test_repro_then_experiment_reruns_only_train_and_after(workspace):
    set_params(workspace, {"backbone": {"weights": "random"}})  # features are not the point here
    first = run(DVC + ["repro"], workspace)
    assert stages_run(first.stdout) == {"generate", "sample", "extract", "train", "finetune", "evaluate",
                                        "benchmark"}

    metrics = json.loads((workspace / "reports/metrics.json").read_text())
    assert REQUIRED_METRICS <= metrics.keys()
    assert metrics["num_classes"] == 4 and metrics["num_test_clips"] == 4   # 4 signs x 1 test signer
    assert metrics["backbone_weights"].startswith("random")
    manifest = pd.read_csv(workspace / "data/manifest.csv", keep_default_na=False)
    assert list(manifest.columns[:6]) == ["path", "label", "split", "signer", "status", "reason"]
    assert len(manifest) == 16 and (manifest["status"] == "ok").all()
    with h5py.File(workspace / "features/embeddings.h5", "r") as handle:
        assert handle["embeddings"].shape == (16, 6, 1280)
        assert handle["paths"].asstr()[...].tolist() == manifest["path"].tolist()
        assert handle.attrs["weights_source"].startswith("random")
    for artifact in ("models/head.keras", "models/labels.json", "reports/per_class.csv",
                     "reports/confusion_matrix.png", "reports/predictions.csv",
                     "reports/train/metrics.json", "models/model.keras", "models/model.json",
                     "reports/benchmark.json"):
        assert (workspace / artifact).exists(), artifact

    again = run(DVC + ["repro"], workspace)
    assert stages_run(again.stdout) == set()

    run(["git", "add", "-A"], workspace)
    run(["git", "commit", "-qm", "baseline results"], workspace)
    experiment = run(DVC + ["exp", "run", "-S", "train.learning_rate=0.01"], workspace)
    assert stages_run(experiment.stdout) == {"train", "finetune", "evaluate", "benchmark"}

    # The baseline's metrics come from the commit (so they must be in git), the new ones from the workspace.
    diff = json.loads(run(DVC + ["metrics", "diff", "--all", "--json"], workspace).stdout)
    accuracy = diff["reports/metrics.json"]["test_accuracy"]
    assert accuracy["old"] == metrics["test_accuracy"] and accuracy["new"] is not None
    assert diff["reports/train/metrics.json"]["train.loss"]["old"] is not None

    plots = run(DVC + ["plots", "show", "--json"], workspace)
    shown = json.loads(plots.stdout)["data"]
    assert any("predictions.csv" in key for key in shown)
    assert any("train/plots/metrics" in key for key in shown)
