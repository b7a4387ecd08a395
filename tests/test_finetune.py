"""Fine-tuning: which layers train, float32 output under mixed precision, augmentation, the stage end to end."""
from __future__ import annotations

import json
import shutil
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from stages.finetune import inner_mobilenet, unfreeze_top_blocks
from stages.lib.augment import augment_clip
from stages.lib.backbone import build_frame_encoder
from stages.lib.models import build_full_model, build_head
from stages.lib.served import load_bundle
from tests.conftest import run, set_params

AUGMENT = {"crop_scale_min": 0.8, "rotation_degrees": 8, "brightness": 0.1, "contrast": 0.15,
           "horizontal_flip": False}


def test_output_layer_stays_float32_under_a_mixed_policy():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        encoder, _ = build_frame_encoder(32, "random")
        head = build_head(seq_len=3, num_classes=2, lstm_units=4, dropout=0.0)
        model = build_full_model(encoder, head, seq_len=3)
        frames = np.zeros((1, 3, 32, 32, 3), np.uint8)
        assert head.get_layer("bilstm").compute_dtype == "bfloat16"     # the policy is really in force
        assert head.get_layer("probabilities").compute_dtype == "float32"
        assert model(frames).dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_unfreezing_the_top_blocks_keeps_batch_norm_frozen():
    encoder, _ = build_frame_encoder(32, "random")
    mobilenet = inner_mobilenet(encoder)
    unfrozen = unfreeze_top_blocks(mobilenet, blocks=2)
    assert unfrozen and all(name.startswith(("block_16_", "block_15_", "Conv_1")) for name in unfrozen)
    assert {"block_16_project", "block_15_expand", "Conv_1"} <= set(unfrozen)
    for layer in mobilenet.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable, layer.name
    assert not mobilenet.get_layer("block_14_expand").trainable
    assert unfreeze_top_blocks(mobilenet, blocks=0) == []


def test_augmentation_is_new_for_each_seed_and_repeatable_for_one():
    rng = np.random.default_rng(0)
    clip = tf.constant(rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8))
    first = augment_clip(clip, tf.constant(1), AUGMENT).numpy()
    again = augment_clip(clip, tf.constant(1), AUGMENT).numpy()
    other = augment_clip(clip, tf.constant(2), AUGMENT).numpy()
    assert first.shape == (6, 32, 32, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_augmentation_with_nothing_to_do_returns_the_clip():
    clip = tf.constant(np.random.default_rng(1).integers(0, 256, size=(5, 16, 16, 3), dtype=np.uint8))
    identity = {"crop_scale_min": 1.0, "rotation_degrees": 0.0, "brightness": 0.0, "contrast": 0.0,
                "horizontal_flip": False}
    assert np.array_equal(augment_clip(clip, tf.constant(3), identity).numpy(), clip.numpy())


@pytest.fixture(scope="module")
def finetuned_workspace(trained_workspace, tmp_path_factory):
    """A copy of the trained tiny pipeline, fine-tuned for one epoch under mixed bfloat16, assembled, evaluated."""
    root = tmp_path_factory.mktemp("finetuned") / "repo"
    shutil.copytree(trained_workspace, root, symlinks=True)
    set_params(root, {"finetune": {"enabled": True, "epochs": 1, "batch_size": 2,
                                   "mixed_precision": "mixed_bfloat16"}})
    for stage in ("finetune", "assemble", "evaluate"):
        run([sys.executable, "-m", f"stages.{stage}"], root)
    return root


def test_finetune_trains_end_to_end_and_serves_float32(finetuned_workspace, trained_workspace):
    root = finetuned_workspace
    summary = json.loads((root / "reports/finetune/summary.json").read_text())
    assert summary["finetune_enabled"] and summary["precision_policy"] == "mixed_bfloat16"
    assert summary["epochs_run"] == 1 and summary["unfrozen_layers"] > 0 and summary["peak_rss_mb"] > 0
    assert len(summary["epoch_seconds"]) == 1 and "first_epoch_extra_seconds_trace" in summary
    assert (root / "reports/finetune/plots/metrics").is_dir()          # dvclive curves
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert metrics["precision_policy"] == "mixed_bfloat16" and metrics["finetune_enabled"]
    assert {"served_model", "head"} <= metrics.keys()

    tuned = load_bundle(root / "models/model.keras")
    original = load_bundle(trained_workspace / "models/model.keras")
    frames = np.zeros((1, tuned.seq_len, tuned.image_size, tuned.image_size, 3), np.uint8) + 100
    tuned_output = tuned.keras_model(frames).numpy()
    assert tuned_output.dtype == np.float32 and tuned.keras_model.dtype_policy.name == "float32"
    assert not np.allclose(tuned_output, original.keras_model(frames).numpy(), atol=1e-6)  # weights moved


def test_a_finetuned_bundles_tflite_parts_still_match_its_keras_graph(finetuned_workspace):
    tuned = load_bundle(finetuned_workspace / "models/model.keras")
    rng = np.random.default_rng(4)
    window = rng.integers(0, 256, (tuned.seq_len, tuned.image_size, tuned.image_size, 3), dtype=np.uint8)
    np.testing.assert_allclose(tuned.predict_window_fast(window), tuned.predict_window(window), atol=1e-4)
    assert tuned.card["finetuned"] is True


def test_the_precision_choice_is_made_once_per_machine(tmp_path, monkeypatch):
    from stages import finetune
    monkeypatch.setenv("SIGNLANG_CACHE", str(tmp_path))
    probes, real_probe = [], finetune.time_training_step

    def counted_probe(policy, *args, **kwargs):          # the real timing, counted
        probes.append(policy)
        return real_probe(policy, *args, **kwargs)
    monkeypatch.setattr(finetune, "time_training_step", counted_probe)
    first = finetune.resolve_precision_policy("auto", 32, 1)
    second = finetune.resolve_precision_policy("auto", 32, 1)
    assert first[0] == second[0] and first[0] in ("float32", "mixed_bfloat16")
    assert probes == ["float32", "mixed_bfloat16"]                   # measured once, then read back
    assert first[1]["probe_cached"] is False and second[1]["probe_cached"] is True
    assert second[1]["probe_step_seconds_float32"] == first[1]["probe_step_seconds_float32"] > 0


def test_with_finetuning_off_the_stage_writes_the_same_status_whatever_its_other_params(tmp_path):
    from tests.conftest import make_stage_workspace
    outputs = []
    for learning_rate in (0.001, 0.01):
        root = make_stage_workspace(tmp_path / str(learning_rate), {"finetune": {"learning_rate": learning_rate}})
        run([sys.executable, "-m", "stages.finetune"], root)
        outputs.append((root / "models/finetuned/status.json").read_bytes())
    assert outputs[0] == outputs[1] and json.loads(outputs[0]) == {"enabled": False}
