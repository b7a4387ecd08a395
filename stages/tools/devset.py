"""Accuracy on a folder of real clips, end to end, and what each lever buys: an opt-in recipe, not a stage.

Usage:
    python -m stages.tools.devset /path/to/wlasl50             # default params: one row, the headline figures
    python -m stages.tools.devset /path/to/wlasl50 --levers    # + each lever as a DVC experiment: the ablation table
    python -m stages.tools.devset /path/to/wlasl50 --diagnose  # why: face size in the model's frame, embedding
                                                         # variance by clip, loss curves, temporal centring
    python -m stages.tools.devset /path/to/wlasl50 --folds 5 [--seeds 0,1] [--levers] [--json PATH]
                             # stratified 5-fold cross-validation: mean and sd of top-1 and top-3 per row

It builds its own workspace (`--workspace`, default ~/.cache/signlang/devset/<folder name>): a
copy of this repository's code, dvc.yaml and params.yaml with `data.source: folder` and
`data.path` set (nothing else), in its own git + DVC repository, so that every row is
`dvc repro` or `dvc exp run -S ...` exactly as a user would run it, the levers share the
sampled frames and embeddings that do not depend on them, and `dvc exp show` there lists
them all. Validation figures pick levers; test figures are printed for the final table only.
The clips stay where they are: the workspace names the folder, it never copies or commits them.

Each row prints validation and test top-1 and top-3 accuracy, and the run's wall time on this
machine (with the CPU model), as a markdown table; `--json` writes it too.

With `--folds K` the figures come from stratified K-fold cross-validation instead of the one
split (stages/tools/crossval.py): the folder's clips are sampled and their features extracted
once per row's features (`dvc repro extract`, or `dvc exp run ... extract` for a lever that
changes them), then one head per fold (and per seed) is trained and scored on its held-out fold.
Rows: the defaults, the real-clips preset (`backbone.name: keypoints`), the logistic-regression
floor on each, heads of other sizes on the keypoints, `keypoints-probe-<name>` rows that transform
the cached keypoints per fold (stages/tools/keypoint_probes.py), and with `--levers` every lever
that changes features or the head.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import yaml

from stages.lib.machine import cpu_description, machine_line
from stages.lib.pinned_wheel import cache_dir

REPOSITORY = Path(__file__).resolve().parents[2]
# The levers of the ablation table (docs/real-clips.md): a name, and the params a user would set for it.
LEVERS: tuple[tuple[str, dict], ...] = (
    ("whole frame, letterboxed (sample.crop none)", {"sample.crop": "none"}),
    ("crop to the signing space (sample.crop signing_space)", {"sample.crop": "signing_space"}),
    ("test-time averaging over 3 windows (evaluate.windows 3)", {"evaluate.windows": 3}),
    ("no edge windows as no-sign (train.edge_windows 0)", {"train.edge_windows": 0}),
    ("stronger dropout (train.dropout 0.5)", {"train.dropout": 0.5}),
    ("wider head (train.lstm_units 128)", {"train.lstm_units": 128}),
    ("body and hand keypoints instead of MobileNetV2 (backbone.name keypoints)", {"backbone.name": "keypoints"}),
)
# End-to-end fine-tuning is left out of the recipe: on WLASL50 here an epoch took 10 minutes and two
# epochs learned nothing the validation split could see (docs/real-clips.md).
FIGURES = ("val_accuracy", "val_top3_accuracy", "test_accuracy", "test_top3_accuracy")


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed in {cwd}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def make_workspace(dataset: Path, workspace: Path) -> None:
    """The repository's pipeline pointed at `dataset`, in its own git + DVC repository (made once)."""
    if (workspace / ".dvc").is_dir():
        return
    workspace.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPOSITORY / "stages", workspace / "stages", ignore=shutil.ignore_patterns("__pycache__"),
                    dirs_exist_ok=True)
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(REPOSITORY / name, workspace / name)
    params = yaml.safe_load((REPOSITORY / "params.yaml").read_text())
    params["data"].update(source="folder", path=str(dataset.resolve()))
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for folder in ("data/weights", "features", "models", "reports"):
        (workspace / folder).mkdir(parents=True, exist_ok=True)
        (workspace / folder / ".gitkeep").touch()
    (workspace / "data" / ".gitkeep").touch()
    for command in (["git", "init", "-q"], ["git", "config", "user.email", "devset@localhost"],
                    ["git", "config", "user.name", "devset"], [sys.executable, "-m", "dvc", "init", "-q"],
                    ["git", "add", "-A"], ["git", "commit", "-qm", "devset workspace"]):
        run(command, workspace)


def read_figures(workspace: Path) -> dict:
    metrics = json.loads((workspace / "reports" / "metrics.json").read_text())
    return {key: metrics.get(key) for key in FIGURES}


def timed(command: list[str], workspace: Path) -> tuple[dict, float]:
    started = time.perf_counter()
    run(command, workspace)
    return read_figures(workspace), time.perf_counter() - started


def baseline_row(workspace: Path) -> dict:
    figures, seconds = timed([sys.executable, "-m", "dvc", "repro", "evaluate"], workspace)
    run(["git", "add", "-A"], workspace)
    subprocess.run(["git", "commit", "-qm", "baseline"], cwd=workspace, capture_output=True)
    return {"row": "defaults (only data.source, data.path set)", **figures, "seconds": round(seconds)}


def lever_row(workspace: Path, name: str, changes: dict) -> dict:
    settings = [item for key, value in changes.items() for item in ("-S", f"{key}={json.dumps(value)}")]
    figures, seconds = timed([sys.executable, "-m", "dvc", "exp", "run", *settings, "evaluate"], workspace)
    run(["git", "reset", "--hard", "-q"], workspace)                       # back to the baseline for the next
    run([sys.executable, "-m", "dvc", "checkout", "--force", "--with-deps", "-q", "evaluate"], workspace)
    return {"row": name, **figures, "seconds": round(seconds)}


# What `--folds` cross-validates: named rows (`--rows`, default: the defaults and the real-clips preset),
# and with --levers each lever that changes the features or the head (evaluate.* levers, test-time
# averaging, act after the head: left out).
PRESET_ROW = ("real-clips preset: body and hand keypoints (backbone.name keypoints)", {"backbone.name": "keypoints"})
CROSS_VALIDATED_ROWS = {
    "defaults": ("defaults (only data.source, data.path set)", {}),
    "keypoints": PRESET_ROW,
    # The hand model's pixels: keypoints on frames sampled at 448 px instead of 224 (a hand 2x as wide).
    "keypoints-448": ("keypoints on 448 px frames (backbone.name keypoints, base.image_size 448)",
                      {"backbone.name": "keypoints", "base.image_size": 448}),
    "keypoints-320": ("keypoints on 320 px frames (backbone.name keypoints, base.image_size 320)",
                      {"backbone.name": "keypoints", "base.image_size": 320}),
    # Rotation, scale, aspect and shear of every keypoint window, drawn anew each window.
    "keypoints-augment": ("keypoints, windows augmented (backbone.name keypoints, train.keypoint_augment 0.2)",
                          {"backbone.name": "keypoints", "train.keypoint_augment": 0.2}),
    # The window augmentations of stages/lib/keypoint_augment.py, one at a time.
    "keypoints-arms": ("keypoints, arm joints turned up to 10 degrees (train.keypoint_arm_degrees 10)",
                       {"backbone.name": "keypoints", "train.keypoint_arm_degrees": 10}),
    "keypoints-frame-drop": ("keypoints, frames dropped (train.keypoint_frame_drop 0.1)",
                             {"backbone.name": "keypoints", "train.keypoint_frame_drop": 0.1}),
    "keypoints-hand-drop": ("keypoints, hands lost (train.keypoint_hand_drop 0.1)",
                            {"backbone.name": "keypoints", "train.keypoint_hand_drop": 0.1}),
    "keypoints-mirror": ("keypoints, half the windows mirrored (train.keypoint_mirror true)",
                         {"backbone.name": "keypoints", "train.keypoint_mirror": True}),
    "keypoints-perspective": ("keypoints, a tilted camera (train.keypoint_perspective 0.1)",
                              {"backbone.name": "keypoints", "train.keypoint_perspective": 0.1}),
    "keypoints-speed": ("keypoints, windows at 0.7-1.3x speed (train.speed_jitter 0.3)",
                        {"backbone.name": "keypoints", "train.speed_jitter": 0.3}),
    # Regularisation for a handful of clips a sign: smoothed targets, longer training on the plateau schedule.
    "keypoints-label-smoothing": ("keypoints, label smoothing (train.label_smoothing 0.1)",
                                  {"backbone.name": "keypoints", "train.label_smoothing": 0.1}),
    "keypoints-longer": ("keypoints, trained longer (train.epochs 150, train.patience 30)",
                         {"backbone.name": "keypoints", "train.epochs": 150, "train.patience": 30}),
    # Heads of other sizes and regularisation on the same keypoints.
    "keypoints-units16": ("keypoints, smaller head (backbone.name keypoints, train.lstm_units 16)",
                          {"backbone.name": "keypoints", "train.lstm_units": 16}),
    "keypoints-units16-dropout": ("keypoints, smaller head, more dropout (train.lstm_units 16, train.dropout 0.5)",
                                  {"backbone.name": "keypoints", "train.lstm_units": 16, "train.dropout": 0.5}),
    "keypoints-units32-windows8": ("keypoints, head of 32 units, 8 windows a clip an epoch (train.lstm_units 32, "
                                   "train.windows_per_clip 8)",
                                   {"backbone.name": "keypoints", "train.lstm_units": 32, "train.windows_per_clip": 8}),
}
DEFAULT_ROWS = "defaults,keypoints"
# Probes on the preset's keypoints (stages/tools/keypoint_probes.py): "keypoints-probe-<probe>" rows, the
# features transformed per fold before the heads train.
PROBE_ROW_PREFIX = "keypoints-probe-"


# Several heads of different seeds per fold, averaged in log-probability: the ensemble lever.
ENSEMBLE_ROWS = {"keypoints-ensemble3": ("keypoints, 3 heads of different seeds averaged in log-probability",
                                         PRESET_ROW[1], 3)}


# The hand-crops probe (stages/tools/hand_crops.py) embeds crops cut from frames sampled at 448 px (a hand twice as
# wide as at 224), beside the preset's keypoints; the embeddings are kept in the workspace for later runs.
HAND_CROPS_PROBE = "hand-crops"
HAND_CROP_FRAMES = {"backbone.name": "keypoints", "base.image_size": 448}
HAND_CROPS_FILE = "features/hand_crops_448.h5"


def hand_crops_file(workspace: Path) -> Path:
    """The workspace's hand crop embeddings, made once from the 448-px frames (the baseline's params restored)."""
    from stages.tools.hand_crops import embed_hand_crops
    path = workspace / HAND_CROPS_FILE
    if not path.exists():
        extract_for(workspace, HAND_CROP_FRAMES)
        embed_hand_crops(workspace / "data" / "frames.h5", path)
        back_to_baseline(workspace)
    return path


def row_setting(name: str) -> tuple[str, dict, str | None, int]:
    """(what the row says, the params it sets, the keypoint probe it applies or None, heads per fold) for a
    --rows name."""
    if name.startswith(PROBE_ROW_PREFIX):
        from stages.tools.keypoint_probes import PROBES
        probe = name[len(PROBE_ROW_PREFIX):]
        return f"keypoints, probe: {PROBES[probe][0]}", dict(PRESET_ROW[1]), probe, 1
    if name in ENSEMBLE_ROWS:
        description, changes, heads = ENSEMBLE_ROWS[name]
        return description, dict(changes), None, heads
    return (*CROSS_VALIDATED_ROWS[name], None, 1)


def known_row_names() -> list[str]:
    from stages.tools.keypoint_probes import PROBES
    return [*CROSS_VALIDATED_ROWS, *ENSEMBLE_ROWS, *(PROBE_ROW_PREFIX + probe for probe in PROBES)]


def extract_for(workspace: Path, changes: dict) -> None:
    """The workspace's features for `changes` (none: the defaults), the params left as they apply."""
    settings = [item for key, value in changes.items() for item in ("-S", f"{key}={json.dumps(value)}")]
    command = ["exp", "run", *settings, "extract"] if changes else ["repro", "extract"]
    run([sys.executable, "-m", "dvc", *command], workspace)


def back_to_baseline(workspace: Path) -> None:
    """The baseline's params and features again (only extract and what it needs ran: the rest has no outputs)."""
    run(["git", "reset", "--hard", "-q"], workspace)
    run([sys.executable, "-m", "dvc", "checkout", "--force", "--with-deps", "-q", "extract"], workspace)


def cross_validated_rows(workspace: Path, folds: int, seeds: list[int], levers: bool,
                         row_names: list[str]) -> list[dict]:
    """One row per setting: the head over folds x seeds, and the floor on the same features and folds."""
    from stages.tools.crossval import cross_validate_floor, cross_validate_head, feature_summary
    from stages.tools.keypoint_probes import prepare_for_probe
    settings = [row_setting(name) for name in row_names]
    if levers:
        settings += [(name, changes, None, 1) for name, changes in LEVERS
                     if not any(key.startswith("evaluate.") for key in changes) and changes != PRESET_ROW[1]]
    started = time.perf_counter()
    extract_for(workspace, {})                   # the baseline the rows with changes go back to
    baseline_seconds = time.perf_counter() - started
    run(["git", "add", "-A"], workspace)
    subprocess.run(["git", "commit", "-qm", "baseline features"], cwd=workspace, capture_output=True)
    rows = []
    for index, (name, changes, probe, heads) in enumerate(settings):
        started = time.perf_counter()
        crops = hand_crops_file(workspace) if probe == HAND_CROPS_PROBE else None
        if changes:
            extract_for(workspace, changes)
        extract_seconds = time.perf_counter() - started if changes else baseline_seconds
        prepare = (partial(prepare_for_probe, probe, hand_crops_path=crops) if probe else None)
        head = cross_validate_head(workspace, folds, seeds, prepare, heads)
        rows.append({"row": name, "changes": changes, "probe": probe, "heads": heads, **head,
                     "extract_seconds": round(extract_seconds), **feature_summary(workspace)})
        print(f"{name}: {rows[-1]}", flush=True)
        changes_features = not probe and heads == 1 and not any(key.startswith("train.") for key in changes)
        if index < len(row_names) and changes_features:   # the floor for each named row's own features
            floor = cross_validate_floor(workspace, folds)
            rows.append({"row": f"floor: logistic regression on clip statistics, {name.split(' (')[0]} features",
                         "changes": changes, **floor, "extract_seconds": round(extract_seconds)})
            print(f"{rows[-1]['row']}: {rows[-1]}", flush=True)
        if changes:
            back_to_baseline(workspace)
    return rows


def cross_validated_table(rows: list[dict]) -> str:
    lines = [f"Measured on {machine_line()}; stratified {rows[0]['folds']}-fold cross-validation, "
             f"mean ± sd over folds x seeds.", "",
             "| row | top-1 | top-3 | features (extract) | heads (all folds) |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['row']} | {row['top1_mean']:.3f} ± {row['top1_sd']:.3f} | "
                     f"{row['top3_mean']:.3f} ± {row['top3_sd']:.3f} | {row['extract_seconds']} s | "
                     f"{row['seconds']} s |")
    return "\n".join(lines)


def markdown_table(rows: list[dict]) -> str:
    cpu = cpu_description()
    lines = [f"Measured on {cpu['cpu_model']} ({cpu['cpu_cores']} cores; {cpu['cpu_vector_extensions']}).", "",
             "| run | val top-1 | val top-3 | test top-1 | test top-3 | wall time |", "|---|---|---|---|---|---|"]
    for row in rows:
        cells = [f"{row[key]:.3f}" if isinstance(row.get(key), float) else "–" for key in FIGURES]
        lines.append(f"| {row['row']} | " + " | ".join(cells) + f" | {row['seconds']} s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="a folder of clips in the folder layout (<sign>/<clip>.mp4)")
    parser.add_argument("--workspace", type=Path, help="where the pipeline runs (default: under ~/.cache/signlang)")
    parser.add_argument("--levers", action="store_true", help="run each lever as an experiment: the ablation table")
    parser.add_argument("--diagnose", action="store_true", help="print the diagnosis figures of docs/real-clips.md")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--folds", type=int, default=0, help="stratified k-fold cross-validation (e.g. 5)")
    parser.add_argument("--seeds", default="0", help="head seeds for --folds, comma-separated (default: 0)")
    parser.add_argument("--rows", default=DEFAULT_ROWS,
                        help=f"rows for --folds, comma-separated, of: "
                             f"{', '.join([*CROSS_VALIDATED_ROWS, *ENSEMBLE_ROWS])}, "
                             f"{PROBE_ROW_PREFIX}<probe of stages/tools/keypoint_probes.py> (default: {DEFAULT_ROWS})")
    arguments = parser.parse_args(argv)
    if not arguments.dataset.is_dir():
        raise SystemExit(f"{arguments.dataset} is not a folder")
    workspace = arguments.workspace or cache_dir() / "devset" / arguments.dataset.resolve().name
    make_workspace(arguments.dataset, workspace)
    print(f"workspace: {workspace}", flush=True)
    if arguments.folds:
        seeds = [int(seed) for seed in arguments.seeds.split(",")]
        row_names = arguments.rows.split(",")
        unknown = sorted(set(row_names) - set(known_row_names()))
        if unknown:
            raise SystemExit(f"unknown rows {unknown}; choose from {', '.join(known_row_names())}")
        rows = cross_validated_rows(workspace, arguments.folds, seeds, arguments.levers, row_names)
        print(cross_validated_table(rows))
        if arguments.json:
            record = {"dataset": arguments.dataset.resolve().name, "machine": machine_line(),
                      "protocol": f"stratified {arguments.folds}-fold cross-validation", "rows": rows}
            arguments.json.write_text(json.dumps(record, indent=2) + "\n")
        return
    rows = [baseline_row(workspace)]
    print(markdown_table(rows), flush=True)
    if arguments.levers:
        for name, changes in LEVERS:
            rows.append(lever_row(workspace, name, changes))
            print(f"{name}: {rows[-1]}", flush=True)
        print(markdown_table(rows))
    if arguments.diagnose:
        from stages.lib.diagnosis import diagnose_workspace
        print(json.dumps(diagnose_workspace(workspace), indent=2))
    if arguments.json:     # the shape `python -m stages.tools.report` reads (reports/devset.json)
        record = {"dataset": arguments.dataset.resolve().name, "machine": machine_line(), "rows": rows}
        arguments.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
