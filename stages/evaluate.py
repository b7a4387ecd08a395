"""Stage `evaluate`: clip metrics on the held-out split, and sign spotting on continuous streams.

Usage:
    python -m stages.evaluate          # reads params.yaml: evaluate (spotting: the model's calibrated settings)

Clips. Each validation and test clip is classified on its centred window
(stages/lib/windows.py; or the mean of `evaluate.windows` windows spread
over it, test-time averaging) by the served model's own TFLite parts (the
engines the app runs) and, side by side, by the head on the same window of
cached embeddings. Validation figures come first: they are the ones to pick
experiments by; test figures are for the final report.

Streams. Every validation and test stream (`paths.streams`, written by the
generate stage with its ground truth) is fed frame by frame, with its own
timestamps, through the live path (StreamingRecognizer, the code behind the
Live page and `--mode signs`), and its per-step probabilities through the
SignSpotter with the model's spotting settings (params.yaml's `spotting`, with the
threshold the calibrate stage kept for this model: `<model>.spotting.json`). Reported: the sign error rate (edit
distance between emitted and true sign sequences over the number of true
signs), false signs per minute on idle-only streams with its exact 95 % Poisson
interval, and latency from a sign's true end to its emission; streams signed
without pauses (kind "fast") are scored apart, as `fast_stream_*`. The frames the live path took from each
stream are kept by the library (stages/lib/streaming.py `stream_steps`): the
validation streams calibrate went through, and any stream after an experiment
that changed only the head, are replayed instead of decoded again. This stage
measures and reports; every choice of settings is calibrate's.

Writes `paths.metrics` (validation, then test, then the rest), `paths.per_class`
(served model, test), `paths.confusion_png`, `paths.predictions` (drawn by
`dvc plots` with its `confusion` template), and `paths.stream_timeline_png`
(probabilities over one test stream, with the true and the emitted signs).
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from stages.lib.embeddings import (
    SplitClips,
    load_split,
    served_clip_embeddings,
    served_uses_the_cached_embeddings,
)
from stages.lib.machine import machine_line
from stages.lib.models import load_model
from stages.lib.params import KEYPOINTS_BACKBONE, load_params
from stages.lib.served import ServedBundle, load_bundle
from stages.lib.storage import atomic_path, read_attributes, write_json
from stages.lib.stream_scoring import (
    RecordedStream,
    fast_stream_metrics,
    record_streams,
    spot_recorded,
    stream_metrics,
    streams_of,
)
from stages.lib.streaming import SpottingSettings, default_spotting, model_spotting
from stages.lib.video import refusal_kind
from stages.lib.windows import spread_windows

# Below this validation top-1 on real clips, evaluate names the real-clips preset. Set well under what the
# built-in signers and a user's own signs reach (0.9+), well above what whole-frame embeddings reached on a
# public dataset of many signers (0.05 validation on WLASL50), not tuned on any test split.
LOW_VALIDATION_ACCURACY = 0.5
REAL_CLIPS_PRESET = "dvc exp run -S backbone.name=keypoints"


def preset_advice(val_accuracy: float, embeddings_attributes: dict) -> str:
    """The line that says when to switch to the real-clips preset, or "" when there is nothing to say."""
    if embeddings_attributes.get("backbone") == KEYPOINTS_BACKBONE or val_accuracy >= LOW_VALIDATION_ACCURACY:
        return ""
    return (f"validation top-1 is {val_accuracy:.2f}. On real clips of many signers with few clips a sign, the "
            f"whole frame's ImageNet embedding is mostly who and where the signer is: try the real-clips preset, "
            f"body and hand keypoints (`{REAL_CLIPS_PRESET}`; on WLASL50, 5-fold cross-validated top-1 0.31 "
            "against 0.17, docs/real-clips.md).")


def top_k_accuracy(y_true: np.ndarray, probabilities: np.ndarray, k: int) -> float:
    """Share of clips whose true class is among the k most probable."""
    if len(y_true) == 0:
        return 0.0
    top_k = np.argsort(-probabilities, axis=1)[:, :k]
    return float(np.mean([truth in row for truth, row in zip(y_true, top_k)]))


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray, top_k: int, prefix: str = "test_") -> dict:
    """The headline numbers for one model on one split.

    Macro F1 averages over the classes present in this split only: a class with
    no clip here has no F1 to give, and counting it as 0 would punish a perfect
    model for what the split lacks.
    """
    predicted = probabilities.argmax(axis=1) if len(y_true) else np.zeros(0, np.int64)
    present = sorted(set(y_true.tolist()))
    return {
        f"{prefix}accuracy": float(np.mean(predicted == y_true)) if len(y_true) else 0.0,
        f"{prefix}top{top_k}_accuracy": top_k_accuracy(y_true, probabilities, top_k),
        f"{prefix}macro_f1": float(f1_score(y_true, predicted, labels=present, average="macro", zero_division=0))
        if present else 0.0,
        f"num_{prefix}clips": int(len(y_true)),
        f"num_classes_in_{prefix.rstrip('_')}": len(present),
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
    save_figure(figure, output_path)


def save_figure(figure, output_path: str | Path) -> None:
    with atomic_path(output_path) as tmp:
        figure.savefig(tmp, dpi=120, format="png", metadata={"Software": None})   # no version stamp: same bytes
    plt.close(figure)


def refusal_counts(manifest_path: str | Path) -> dict:
    """How many files the sample stage found and refused, and why (nothing is dropped silently).

    `refused_by_reason` counts by the kind of reason (its text before the first
    colon, e.g. "too short"), so clips refused for one cause add up in one entry.
    """
    manifest = pd.read_csv(manifest_path, keep_default_na=False, dtype=str)
    refused = manifest[manifest["status"] != "ok"]
    by_reason = refused["reason"].map(refusal_kind).value_counts()
    return {"num_files_found": int(len(manifest)), "num_clips_used": int(len(manifest) - len(refused)),
            "num_files_refused": int(len(refused)),
            "refused_by_reason": {str(kind): int(count) for kind, count in sorted(
                by_reason.items(), key=lambda item: (-item[1], item[0]))}}


# --- clips ------------------------------------------------------------------------------------------

def head_probabilities(head, split: SplitClips, seq_len: int, windows: int, reach: float) -> np.ndarray:
    """The head on each clip's window(s) of cached embeddings, averaged: (clips, classes)."""
    if len(split) == 0:
        return np.zeros((0, head.output_shape[-1]), np.float32)
    per_clip = [spread_windows(len(clip), seq_len, windows, reach) for clip in split.clips]
    batch = np.stack([clip[window] for clip, clip_windows_ in zip(split.clips, per_clip) for window in clip_windows_])
    outputs = head.predict(batch, batch_size=256, verbose=0)                  # (clips x windows, classes)
    return outputs.reshape(len(split), -1, outputs.shape[-1]).mean(axis=1)


def served_probabilities(bundle: ServedBundle, split: SplitClips, frames_path: str, reuse_embeddings: bool,
                         windows: int, reach: float) -> np.ndarray:
    """The served model's TFLite encoder + head on each clip's window(s): (clips, classes)."""
    outputs = [np.mean([bundle.head_engine.run(embeddings[window][None])[0] for window in
                        spread_windows(len(embeddings), bundle.seq_len, windows, reach)], axis=0)
               for embeddings in served_clip_embeddings(bundle, split, frames_path, reuse_embeddings)]
    return np.stack(outputs) if outputs else np.zeros((0, len(bundle.labels)), np.float32)


# --- streams ----------------------------------------------------------------------------------------

def plot_stream_timeline(bundle: ServedBundle, stream: RecordedStream, settings: SpottingSettings,
                         output_path: str | Path) -> None:
    """Each sign's probability over the stream; true signs shaded, emitted signs marked."""
    emitted = spot_recorded(bundle, stream, settings)
    figure, axes = plt.subplots(figsize=(12, 4))
    for truth in stream.truth:
        axes.axvspan(truth.start, truth.end, color="0.88")
        axes.text((truth.start + truth.end) / 2, 1.04, truth.sign, ha="center", fontsize=8)
    signs = [index for index, label in enumerate(bundle.labels) if label != bundle.no_sign_label]
    colours = plt.cm.tab20(np.linspace(0, 1, max(len(bundle.labels), 2)))
    for index in signs:
        if len(stream.step_probabilities) and stream.step_probabilities[:, index].max() >= 0.2:
            axes.plot(stream.step_times, stream.step_probabilities[:, index], color=colours[index], lw=1.2,
                      label=bundle.labels[index])
    if bundle.no_sign_label in bundle.labels:
        axes.plot(stream.step_times, stream.step_probabilities[:, bundle.labels.index(bundle.no_sign_label)],
                  color="0.4", lw=1, ls=":", label=f"{bundle.no_sign_label} (no sign)")
    for sign in emitted:
        axes.axvline(sign.emitted_at, color="black", lw=0.8)
        axes.text(sign.emitted_at, -0.12, sign.sign, rotation=0, ha="center", fontsize=8)
    axes.axhline(settings.threshold, color="red", lw=0.6, ls="--")
    axes.set(xlim=(0, stream.duration), ylim=(-0.18, 1.1), xlabel="stream seconds", ylabel="probability",
             title=f"{stream.path.name}: true signs shaded (labels above), emitted signs as lines (labels below)")
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    figure.tight_layout()
    save_figure(figure, output_path)


# --- the stage ---------------------------------------------------------------------------------------

def main() -> None:
    params = load_params()
    paths, settings = params["paths"], params["evaluate"]
    bundle = load_bundle(paths["model"])
    if bundle.spotting_record is None:
        raise SystemExit(f"{paths['spotting_calibration']} not found: run `dvc repro calibrate` first")
    spotting = model_spotting(bundle, default_spotting())     # the calibrated settings, as Live and the CLI use
    classes, top_k = bundle.labels, settings["top_k"]
    windows, reach = settings["windows"], settings["window_reach"]
    embeddings_attributes = read_attributes(paths["embeddings"])
    reuse = served_uses_the_cached_embeddings(bundle, embeddings_attributes)
    head = load_model(paths["head"])
    splits = {name: load_split(paths["embeddings"], name, classes) for name in ("val", "test")}
    if len(splits["test"]) == 0:
        raise SystemExit("no clip in the test split: nothing to evaluate (see data/manifest.csv)")

    served, head_figures = {}, {}
    for name, split in splits.items():
        served[name] = served_probabilities(bundle, split, paths["frames"], reuse, windows, reach)
        head_figures[name] = head_probabilities(head, split, bundle.seq_len, windows, reach)
    y_test = splits["test"].labels
    predicted = served["test"].argmax(axis=1)

    streams = record_streams(bundle, Path(paths["streams"]), ("val", "test"), Path(paths["embedding_cache"]))
    test_streams = streams_of(streams, "test")
    metrics = {
        **classification_metrics(splits["val"].labels, served["val"], top_k, prefix="val_"),
        **stream_metrics(bundle, streams_of(streams, "val"), spotting, prefix="val_stream_"),
        **fast_stream_metrics(bundle, streams_of(streams, "val", fast=True), spotting, prefix="val_fast_stream_"),
        **classification_metrics(y_test, served["test"], top_k, prefix="test_"),
        **stream_metrics(bundle, test_streams, spotting, prefix="stream_"),
        **fast_stream_metrics(bundle, streams_of(streams, "test", fast=True), spotting, prefix="fast_stream_"),
        "num_classes": len(classes),
        "no_sign_class": bundle.no_sign_label,
        "backbone_weights": embeddings_attributes["weights_source"],
        "finetune_enabled": bool(bundle.card["finetuned"]),
        "precision_policy": bundle.card["precision_policy_trained"],
        "clip_windows_averaged": windows,
        "served_model": classification_metrics(y_test, served["test"], top_k),
        "head": classification_metrics(y_test, head_figures["test"], top_k),
        # With fine-tuning off the two are the same function: this should be ~1e-5 (TFLite vs Keras head).
        "served_vs_head_max_abs_diff": float(np.abs(served["test"] - head_figures["test"]).max()),
        "spotting": {"threshold": spotting.threshold, "min_hold_seconds": spotting.min_hold_seconds,
                     "smoothing_steps": spotting.smoothing_steps, "release_seconds": spotting.release_seconds,
                     "threshold_in_params": bundle.spotting_record["calibration"]["threshold_in_params"]},
        **refusal_counts(paths["manifest"]),
        "machine": machine_line(),            # figures of one model can move in the last digits between CPUs
    }
    advice = preset_advice(metrics["val_accuracy"], embeddings_attributes)
    if advice:
        metrics["advice"] = advice
    write_json(paths["metrics"], metrics)
    with atomic_path(paths["per_class"]) as tmp:
        per_class_table(y_test, predicted, classes).to_csv(tmp, index=False)
    with atomic_path(paths["predictions"]) as tmp:
        pd.DataFrame({"path": splits["test"].paths, "actual": [classes[i] for i in y_test],
                      "predicted": [classes[i] for i in predicted]}).to_csv(tmp, index=False)
    plot_confusion_matrix(y_test, predicted, classes,
                          f"Test split, served model (accuracy {metrics['test_accuracy']:.3f})", paths["confusion_png"])
    sign_streams = [stream for stream in test_streams if not stream.idle]
    if sign_streams:
        plot_stream_timeline(bundle, sign_streams[0], spotting, paths["stream_timeline_png"])
    else:   # a dataset without streams: say so in the image rather than leave an old one
        figure, axes = plt.subplots(figsize=(6, 1.5))
        axes.axis("off")
        axes.text(0.5, 0.5, "no test streams in this dataset", ha="center", va="center")
        save_figure(figure, paths["stream_timeline_png"])
    print(json.dumps(metrics, indent=2))
    if advice:
        print(f"evaluate: {advice}")


if __name__ == "__main__":
    main()
