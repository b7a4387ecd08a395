"""Stage `evaluate`: test-split metrics, per-class table, confusion matrix.

Usage:
    python -m stages.evaluate          # reads params.yaml: evaluate

The only stage that reads the test split. It scores, side by side, the served
model (`paths.model`, the full CNN+LSTM graph run on the test clips' sampled
frames) and the head on the same clips' cached embeddings, and writes
- `paths.metrics`: accuracy, top-k accuracy, macro F1 of the served model at
  the top level and of both models under `served_model` and `head`; class and
  clip counts, the backbone weights, the precision policy the served model
  was trained under, and how many files the sample stage refused;
- `paths.per_class`: precision, recall, F1 and support for every class (served model);
- `paths.confusion_png`: a seaborn heat map of the served model's confusion matrix;
- `paths.predictions`: actual,predicted per test clip (served model), drawn by
  `dvc plots` with its `confusion` template.
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from stages.lib.embeddings import load_split
from stages.lib.models import load_model
from stages.lib.served import load_bundle
from stages.lib.params import load_params
from stages.lib.storage import atomic_path, read_attributes, read_clip_table, write_json

CLIPS_PER_BATCH = 8  # test clips through the full graph at once: 8 x seq_len frames in memory


def top_k_accuracy(y_true: np.ndarray, probabilities: np.ndarray, k: int) -> float:
    """Share of clips whose true class is among the k most probable."""
    if len(y_true) == 0:
        return 0.0
    top_k = np.argsort(-probabilities, axis=1)[:, :k]
    return float(np.mean([truth in row for truth, row in zip(y_true, top_k)]))


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray, num_classes: int,
                           top_k: int) -> dict:
    """The headline numbers for one model on one split."""
    predicted = probabilities.argmax(axis=1)
    labels = list(range(num_classes))
    return {
        "test_accuracy": float(np.mean(predicted == y_true)) if len(y_true) else 0.0,
        f"test_top{top_k}_accuracy": top_k_accuracy(y_true, probabilities, top_k),
        "test_macro_f1": float(f1_score(y_true, predicted, labels=labels, average="macro", zero_division=0)),
        "num_test_clips": int(len(y_true)),
    }


def per_class_table(y_true: np.ndarray, predicted: np.ndarray, classes: list[str]) -> pd.DataFrame:
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, predicted, labels=list(range(len(classes))), zero_division=0)
    return pd.DataFrame({"class": classes, "precision": precision.round(4), "recall": recall.round(4),
                         "f1": f1.round(4), "support": support})


def plot_confusion_matrix(y_true: np.ndarray, predicted: np.ndarray, classes: list[str], title: str,
                          output_path: str | Path) -> None:
    """Row-normalised heat map with counts in the cells: rows are true classes."""
    counts = confusion_matrix(y_true, predicted, labels=list(range(len(classes))))
    row_share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(6.0, 0.55 * len(classes) + 2)
    figure, axes = plt.subplots(figsize=(size + 1.5, size))
    sns.heatmap(row_share, annot=counts, fmt="d", cmap="Blues", vmin=0, vmax=1, square=True,
                xticklabels=classes, yticklabels=classes, cbar_kws={"label": "share of true class"}, ax=axes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    plt.setp(axes.get_xticklabels(), rotation=45, ha="right")
    figure.tight_layout()
    with atomic_path(output_path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    plt.close(figure)


def refusal_counts(manifest_path: str | Path) -> dict:
    """How many files the sample stage found and refused, and why (nothing is dropped silently).

    `refused_by_reason` counts by the kind of reason (its text before the first
    colon, e.g. "too short"), so clips refused for one cause add up in one entry.
    """
    from stages.lib.video import refusal_kind   # the one home of the reason convention

    manifest = pd.read_csv(manifest_path, keep_default_na=False, dtype=str)
    refused = manifest[manifest["status"] != "ok"]
    by_reason = refused["reason"].map(refusal_kind).value_counts()
    return {"num_files_found": int(len(manifest)), "num_clips_used": int(len(manifest) - len(refused)),
            "num_files_refused": int(len(refused)),
            "refused_by_reason": {str(kind): int(count) for kind, count in sorted(
                by_reason.items(), key=lambda item: (-item[1], item[0]))}}


def served_model_probabilities(model_path: str, frames_path: str, clip_paths: np.ndarray) -> np.ndarray:
    """The full graph on the sampled frames of the given clips, streamed a few clips at a time."""
    model = load_bundle(model_path).keras_model
    table = read_clip_table(frames_path)
    row_of = {path: row for row, path in enumerate(table["paths"])}
    rows = [row_of[path] for path in clip_paths]
    outputs = []
    with h5py.File(frames_path, "r") as handle:
        for start in range(0, len(rows), CLIPS_PER_BATCH):
            frames = handle["frames"][rows[start:start + CLIPS_PER_BATCH]]      # (b, T, H, W, 3) uint8
            outputs.append(model.predict_on_batch(frames))
    return np.concatenate(outputs)


def main() -> None:
    params = load_params()
    paths, top_k = params["paths"], params["evaluate"]["top_k"]
    classes = json.loads(Path(paths["labels"]).read_text())["labels"]
    x_test, y_test, clip_paths = load_split(paths["embeddings"], "test", classes)  # (n, seq_len, 1280)
    if len(x_test) == 0:
        raise SystemExit("no clip in the test split: nothing to evaluate (see data/manifest.csv)")

    head_probabilities = load_model(paths["head"]).predict(x_test, batch_size=64, verbose=0)  # (n, classes)
    served_probabilities = served_model_probabilities(paths["model"], paths["frames"], clip_paths)
    predicted = served_probabilities.argmax(axis=1)
    served = classification_metrics(y_test, served_probabilities, len(classes), top_k)
    finetune_summary = json.loads((Path(paths["finetune_logs"]) / "summary.json").read_text())
    metrics = {
        **served,
        "num_classes": len(classes),
        "backbone_weights": read_attributes(paths["embeddings"])["weights_source"],
        "finetune_enabled": finetune_summary["finetune_enabled"],
        "precision_policy": finetune_summary["precision_policy"],
        "served_model": served,
        "head": classification_metrics(y_test, head_probabilities, len(classes), top_k),
        # With fine-tuning off the two are the same function: this should be ~1e-6.
        "served_vs_head_max_abs_diff": float(np.abs(served_probabilities - head_probabilities).max()),
        **refusal_counts(paths["manifest"]),
    }
    write_json(paths["metrics"], metrics)
    table = per_class_table(y_test, predicted, classes)
    with atomic_path(paths["per_class"]) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(paths["predictions"]) as tmp:
        pd.DataFrame({"path": clip_paths, "actual": [classes[i] for i in y_test],
                      "predicted": [classes[i] for i in predicted]}).to_csv(tmp, index=False)
    plot_confusion_matrix(y_test, predicted, classes,
                          f"Test split, served model (accuracy {served['test_accuracy']:.3f})",
                          paths["confusion_png"])
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
