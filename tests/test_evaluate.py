"""Metric helpers of the evaluate stage, on hand-computed examples."""
from __future__ import annotations

import numpy as np

from stages.evaluate import classification_metrics, per_class_table, plot_confusion_matrix, top_k_accuracy

PROBABILITIES = np.array([
    [0.7, 0.2, 0.1],   # true 0, predicted 0
    [0.5, 0.3, 0.2],   # true 1, predicted 0, second guess 1
    [0.1, 0.3, 0.6],   # true 2, predicted 2
    [0.2, 0.5, 0.3],   # true 2, predicted 1, second guess 2
])
TRUTH = np.array([0, 1, 2, 2])


def test_top_k_accuracy_counts_the_true_class_among_the_k_best():
    assert top_k_accuracy(TRUTH, PROBABILITIES, 1) == 0.5
    assert top_k_accuracy(TRUTH, PROBABILITIES, 2) == 1.0


def test_classification_metrics_match_hand_computation():
    metrics = classification_metrics(TRUTH, PROBABILITIES, top_k=3)
    assert metrics["test_accuracy"] == 0.5
    assert metrics["test_top3_accuracy"] == 1.0
    # F1 per class: class 0: p=1/2 r=1 -> 2/3; class 1: p=0 r=0 -> 0; class 2: p=1 r=1/2 -> 2/3.
    assert np.isclose(metrics["test_macro_f1"], (2 / 3 + 0 + 2 / 3) / 3)
    assert metrics["num_test_clips"] == 4 and metrics["num_classes_in_test"] == 3


def test_macro_f1_counts_only_the_classes_present_in_the_split():
    """A perfect model on a split that lacks one of three classes scores 1, not 0.667."""
    truth = np.array([0, 0, 2])
    perfect = np.eye(3)[truth]
    metrics = classification_metrics(truth, perfect, top_k=1, prefix="val_")
    assert metrics["val_macro_f1"] == 1.0 and metrics["num_classes_in_val"] == 2
    assert metrics["val_accuracy"] == 1.0 and metrics["num_val_clips"] == 3


def test_per_class_table_has_one_row_per_class_even_when_never_predicted():
    table = per_class_table(TRUTH, PROBABILITIES.argmax(axis=1), ["a", "b", "c"])
    assert table["class"].tolist() == ["a", "b", "c"]
    assert table.loc[table["class"] == "b", "recall"].item() == 0.0
    assert table["support"].tolist() == [1, 1, 2]


def test_confusion_matrix_png_is_written(tmp_path):
    target = tmp_path / "cm.png"
    plot_confusion_matrix(TRUTH, PROBABILITIES.argmax(axis=1), ["a", "b", "c"], "test", target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_low_validation_accuracy_on_embeddings_names_the_real_clips_preset():
    from stages.evaluate import LOW_VALIDATION_ACCURACY, preset_advice
    advice = preset_advice(0.05, {"backbone": "MobileNetV2"})
    assert "dvc exp run -S backbone.name=keypoints" in advice and "0.05" in advice
    assert preset_advice(LOW_VALIDATION_ACCURACY, {"backbone": "MobileNetV2"}) == ""     # good enough: silent
    assert preset_advice(0.05, {"backbone": "keypoints"}) == ""                          # already on the preset
