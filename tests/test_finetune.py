"""Fine-tuning: which layers train, float32 output under mixed precision, augmentation, the stage end to end."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from stages.finetune import WorkerRole, inner_mobilenet, unfreeze_top_blocks, worker_role
from stages.lib.augment import augment_clip
from stages.lib.backbone import build_frame_encoder
from stages.lib.models import build_full_model, build_head
from stages.lib.served import load_bundle
from stages.lib.streaming import StreamingRecognizer
from tests.conftest import command_env, free_port, run, set_params

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


@pytest.mark.parametrize("tf_config,role", [
    ("", WorkerRole(0, 1)),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}}', WorkerRole(0, 1)),
    ('{"cluster": {"worker": ["a:1", "b:1", "c:1"]}, "task": {"type": "worker", "index": 2}}', WorkerRole(2, 3)),
    ('{"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "chief", "index": 0}}', WorkerRole(0, 2)),
    ('{"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}}', WorkerRole(1, 2)),
])
def test_the_worker_role_comes_from_tf_config(tf_config, role):
    assert worker_role(tf_config) == role
    assert role.is_chief == (role.index == 0)


@pytest.mark.parametrize("tf_config,message", [
    ('{"cluster": {"worker": ["a:1"]}}', r"TF_CONFIG is not a cluster and a task"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}', r"task type 'ps'; allowed: chief, worker"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}', r"index 1 but the cluster lists 1"),
])
def test_a_tf_config_that_names_no_worker_here_is_refused(tf_config, message):
    with pytest.raises(SystemExit, match=message):
        worker_role(tf_config)


# float32: faster than bfloat16 on this CPU; the other worker still has to learn it from the chief's vote.
TWO_WORKER_FINETUNE = {"finetune": {"enabled": True, "epochs": 1, "batch_size": 2, "mixed_precision": "float32"}}


@pytest.fixture(scope="module")
def two_worker_run(trained_workspace, tmp_path_factory):
    """The trained tiny pipeline fine-tuned by two worker processes (TF_CONFIG on loopback), each in its own
    checkout as on two machines, then assembled on the chief's. Returns (chief's root, other's root, logs)."""
    base = tmp_path_factory.mktemp("two_workers")
    roots = [base / "chief", base / "worker1"]
    ports = [free_port(), free_port()]
    processes, logs = [], [base / "chief.log", base / "worker1.log"]
    for index, root in enumerate(roots):
        shutil.copytree(trained_workspace, root, symlinks=True)
        set_params(root, TWO_WORKER_FINETUNE)
        tf_config = {"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                     "task": {"type": "worker", "index": index}}
        with logs[index].open("w") as log:
            processes.append(subprocess.Popen([sys.executable, "-m", "stages.finetune"], cwd=root, stdout=log,
                                              stderr=subprocess.STDOUT,
                                              env={**command_env(root), "TF_CONFIG": json.dumps(tf_config)}))
    try:
        for process, log in zip(processes, logs):
            assert process.wait(timeout=900) == 0, log.read_text()[-4000:]
    finally:
        for process in processes:      # one that failed leaves the other waiting for it: end both
            process.kill()
    run([sys.executable, "-m", "stages.assemble"], roots[0])
    return roots[0], roots[1], [log.read_text() for log in logs]


def test_two_workers_train_one_model_and_only_the_chief_writes(two_worker_run, trained_workspace):
    chief, other, (chief_log, other_log) = two_worker_run
    summary = json.loads((chief / "reports/finetune/summary.json").read_text())
    assert summary["workers"] == 2 and summary["replicas"] == 2
    assert summary["global_batch_size"] == 2 * TWO_WORKER_FINETUNE["finetune"]["batch_size"]
    assert summary["precision_policy"] == "float32" and summary["epochs_run"] == 1
    assert "Epoch 1/1" in chief_log and "val_loss" in chief_log
    # The other worker trained under the chief's policy (it never reads one of its own) and wrote nothing here:
    assert "worker 1 of 2 done, trained under float32" in other_log
    for path in ("models/finetuned", "reports/finetune", "reports/tensorboard/finetune"):
        assert sorted(p.name for p in (other / path).rglob("*")) == \
            sorted(p.name for p in (trained_workspace / path).rglob("*")), path
    assert json.loads((other / "models/finetuned/status.json").read_text()) == {"enabled": False}
    assert json.loads((chief / "models/finetuned/status.json").read_text()) == {
        "enabled": True, "precision_policy_trained": "float32"}
    assert list((chief / "reports/tensorboard/finetune").rglob("*tfevents*"))


def test_the_two_worker_model_gives_one_answer_three_ways(two_worker_run, trained_workspace):
    chief = two_worker_run[0]
    tuned = load_bundle(chief / "models/model.keras")
    assert tuned.card["finetuned"] is True
    window = np.random.default_rng(5).integers(0, 256, (tuned.seq_len, tuned.image_size, tuned.image_size, 3),
                                                dtype=np.uint8)                          # (seq_len, H, W, 3)
    full_graph = tuned.predict_window(window)                                            # Keras, whole window
    np.testing.assert_allclose(tuned.predict_window_fast(window), full_graph, atol=1e-4)  # TFLite parts
    recognizer = StreamingRecognizer(tuned)
    for frame in window:
        recognizer.push_prepared_frame(frame)                                            # ring buffer, frame by frame
    np.testing.assert_allclose(recognizer.latest_probabilities, full_graph, atol=1e-4)
    original = load_bundle(trained_workspace / "models/model.keras")
    assert not np.allclose(full_graph, original.predict_window(window), atol=1e-6)      # training moved the weights
