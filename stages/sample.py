"""Stage `sample`: take every clip's frames at one fixed rate in time and store them, with a manifest.

Usage:
    python -m stages.sample            # reads params.yaml: base.image_size, base.seed, data, sample, compute

Reads the clips under `data.path` in the layout `data.source` names (see
stages/lib/datasets.py), splits them by `data.split` (stages/lib/splits.py),
and samples each with stages/lib/video.py on the workers `compute` names
(stages/lib/compute.py: processes on this machine, or Ray tasks on a
cluster; results come back in file order either way, so the outputs are the
same bytes): `sample.fps` frames per second of the clip, the rate at which
the live path takes camera frames, so a clip keeps its own length and a sign
lasts as many frames in training as in front of the camera. A Ray worker
opens each clip at the absolute path this machine found it at, so every
machine must see the data there (docs/scale-out.md); one that does not
stops the run, naming itself, instead of refusing clips it cannot see.

Writes
- `paths.frames` (HDF5): `frames` (total frames, image_size, image_size, 3)
  uint8 RGB, one row per sampled frame of the usable clips, `offsets`
  (clips + 1,) saying where each clip starts and ends, per-clip `paths`,
  `labels`, `splits`, `signers`, `num_frames` (source frames), `fps` (source
  rate), and attributes describing the sampling and the preprocessing;
- `paths.manifest` (CSV): one row per file found, usable or not:
  path,label,split,signer,status,reason,num_frames,fps.

A file that cannot be used never stops the stage: its row says `refused` and
why, and a class left without a usable clip is named in a warning. Both
outputs are written to temporary files, flushed to disk, and renamed into
place only once both are complete: a killed run (even SIGKILL) leaves the
previous outputs, never a half-written file. The stage fails, after writing
the manifest, only when not one clip is usable.
"""
from __future__ import annotations

import json
import socket
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from tqdm import tqdm

from stages.lib.compute import ComputeSettings, WorkerError, map_in_order
from stages.lib.datasets import FoundFile, discover
from stages.lib.params import load_params
from stages.lib.splits import SPLITS, planned_split
from stages.lib.storage import (
    append_rows,
    atomic_path,
    create_frames_dataset,
    flush_to_disk,
    write_clip_columns,
    write_offsets,
)
from stages.lib.video import COLOR_ORDER, PREPROCESSING_DESCRIPTION, ClipRefused, Sampling, refusal_kind, sample_clip

MANIFEST_COLUMNS = ["path", "label", "split", "signer", "status", "reason", "num_frames", "fps"]


@dataclass(frozen=True)
class SampleJob:
    """One found file to sample: everything a worker on any machine needs, decided here."""
    found: FoundFile               # its path absolute, so a worker elsewhere opens the same file
    manifest_path: str             # the path the manifest shows, relative to the repository (`display_path`)
    split: str
    sampling: Sampling
    frames_fps: float              # frames layout: the rate the images were taken at (0 = unknown)


@dataclass
class SampleResult:
    row: dict                      # the manifest row
    frames: np.ndarray | None      # (sampled frames, H, W, 3) uint8 RGB when usable


def display_path(path: Path) -> str:
    """Path relative to the repository when inside it (portable manifests), else absolute."""
    absolute = path.resolve()
    try:
        return absolute.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return absolute.as_posix()


def sample_one(job: SampleJob) -> SampleResult:
    """Sample one found file into a manifest row and frames (runs on a worker: a process here, or on Ray)."""
    found = job.found
    row = {"path": job.manifest_path, "label": found.label, "split": job.split,
           "signer": found.signer, "status": "refused", "reason": found.refusal,
           "num_frames": 0, "fps": 0.0}
    if found.refusal:
        return SampleResult(row, None)
    if not found.path.exists():
        # The driver found this file, so a worker that cannot see it lacks the data: refusing
        # the clip would silently drop it from the dataset. Stop the run and say where.
        raise WorkerError(f"worker {socket.gethostname()} cannot see {found.path}: every machine of the cluster "
                          "needs the data at the same path (a shared filesystem, or `dvc pull` into a checkout at "
                          "that path; docs/scale-out.md)")
    try:
        clip = sample_clip(found.path, job.sampling, found.frame_range, job.frames_fps)
    except ClipRefused as refusal:
        row["reason"] = str(refusal)
        return SampleResult(row, None)
    except Exception as error:  # an unexpected decoder failure is still one bad file, not a crash
        row["reason"] = f"unreadable: {type(error).__name__}: {error}"
        return SampleResult(row, None)
    row.update(status="ok", reason=clip.note, num_frames=clip.num_frames, fps=round(clip.fps, 3))
    return SampleResult(row, clip.frames)


def sampling_from_params(params: dict) -> Sampling:
    """The one sampling rule of this pipeline, from params.yaml; the model card carries it on."""
    sample = params["sample"]
    return Sampling(fps=float(sample["fps"]), image_size=int(params["base"]["image_size"]),
                    min_frames=int(sample["min_frames"]), max_seconds=float(sample["max_seconds"]),
                    crop=sample["crop"])


def plan_jobs(found_files: list[FoundFile], params: dict) -> list[SampleJob]:
    """One job per found file, its split assigned: in the order of `found_files`, the manifest's order."""
    sampling, frames_fps = sampling_from_params(params), float(params["data"]["frames_fps"])
    jobs = []
    for found in found_files:
        try:
            split = planned_split(found.label, found.signer, found.path, found.given_split, params)
        except ValueError as error:   # an index entry with a split we do not know: one bad item, not a crash
            found, split = replace(found, refusal=found.refusal or f"unknown split in the index: {error}"), ""
        jobs.append(SampleJob(replace(found, path=found.path.absolute()), display_path(found.path), split,
                              sampling, frames_fps))
    return jobs


def write_outputs(frames_path: Path, manifest_path: Path, results: Iterable[SampleResult],
                  params: dict) -> pd.DataFrame:
    """Write the frames file and the manifest; both replace the old ones only once both are complete."""
    with atomic_path(frames_path) as frames_tmp, atomic_path(manifest_path) as manifest_tmp:
        rows = write_frames_file(frames_tmp, results, params)
        manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
        manifest.to_csv(manifest_tmp, index=False)
        for tmp in (frames_tmp, manifest_tmp):
            flush_to_disk(tmp)
    return manifest


def write_frames_file(path: Path, results: Iterable[SampleResult], params: dict) -> list[dict]:
    """Stream usable clips into one HDF5 file at `path` as they arrive; return every manifest row.

    The frames dataset grows clip by clip, so memory does not grow with the
    dataset. `path` should be a temporary one (see `write_outputs`).
    """
    sampling = sampling_from_params(params)
    size = sampling.image_size
    rows: list[dict] = []
    usable_rows: list[dict] = []
    lengths: list[int] = []
    with h5py.File(path, "w") as handle:
        frames = create_frames_dataset(handle, size)
        for result in results:
            rows.append(result.row)
            if result.frames is None:
                continue
            append_rows(frames, result.frames)                         # (clip frames, H, W, 3)
            usable_rows.append(result.row)
            lengths.append(len(result.frames))
        write_offsets(handle, lengths)
        write_clip_columns(handle, {
            "paths": [r["path"] for r in usable_rows], "labels": [r["label"] for r in usable_rows],
            "splits": [r["split"] for r in usable_rows], "signers": [r["signer"] for r in usable_rows]})
        handle.create_dataset("num_frames", data=np.array([r["num_frames"] for r in usable_rows], np.int64),
                              track_times=False)
        handle.create_dataset("fps", data=np.array([r["fps"] for r in usable_rows], np.float64), track_times=False)
        handle.attrs.update({
            "image_size": size, "sample_fps": sampling.fps, "sampling": json.dumps(sampling.as_dict()),
            "color_order": COLOR_ORDER, "layout": "(frame, height, width, channel); clip i is rows "
            "offsets[i]:offsets[i+1]", "preprocessing": PREPROCESSING_DESCRIPTION,
            "data_source": params["data"]["source"],
        })
    return rows


def check_classes_have_clips(manifest: pd.DataFrame) -> list[str]:
    """Warnings naming each class left without a usable clip, or without a usable training clip."""
    labelled = manifest[manifest["label"] != ""]
    warnings = []
    for label, rows in labelled.groupby("label", sort=True):
        usable = rows[rows["status"] == "ok"]
        if usable.empty:
            warnings.append(f"class {label!r} has no usable clip: all {len(rows)} of its files were refused "
                            f"({describe_reasons(rows['reason'])}); it cannot be learned")
        elif not (usable["split"] == "train").any():
            warnings.append(f"class {label!r} has no usable training clip (usable clips: {len(usable)}, all in "
                            f"{' and '.join(sorted(set(usable['split'])))}); it cannot be learned")
    return warnings


def check_splits_have_clips(manifest: pd.DataFrame, val_fraction: float, test_fraction: float) -> list[str]:
    """Warnings for a split that should hold clips but holds none (few signers, unlucky hash)."""
    usable = manifest[manifest["status"] == "ok"]
    expected = {"train": True, "val": val_fraction > 0, "test": test_fraction > 0}
    return [f"split {split!r} has no usable clip: with few signers or clips the hashed split can leave one "
            f"empty; try another base.seed, more clips, or data.split: stratified"
            for split in SPLITS if expected[split] and not usable.empty and not (usable["split"] == split).any()]


def describe_reasons(reasons: pd.Series) -> str:
    """'2 empty file (0 bytes), 1 too short': refusal kinds with counts, most frequent first."""
    counts = reasons.map(refusal_kind).value_counts()
    return ", ".join(f"{count} {kind}" for kind, count in counts.items())


def report(manifest: pd.DataFrame, params: dict) -> None:
    """Print what was used and refused, by reason, and a warning for each class or split left empty."""
    refused = manifest[manifest["status"] != "ok"]
    print(f"sampled {len(manifest) - len(refused)} clips; refused {len(refused)} files "
          f"(see {params['paths']['manifest']})")
    kinds = refused["reason"].map(refusal_kind)
    for kind, count in kinds.value_counts().items():
        example = refused[kinds == kind].iloc[0]    # details differ per file: show one, the manifest has all
        print(f"  {count:4d} refused, {kind} (e.g. {example['path']}: {example['reason']})")
    sample = params["sample"]
    for warning in (check_classes_have_clips(manifest)
                    + check_splits_have_clips(manifest, sample["val_fraction"], sample["test_fraction"])):
        print(f"WARNING: {warning}")


def main() -> None:
    params = load_params()
    data = params["data"]
    if data["source"] == "synthetic" and data["split"] != "given":
        print(f"synthetic data: split by its index's held-out signers (data.split {data['split']!r} not used)")
    try:
        found_files = discover(data["source"], data["path"])
    except (FileNotFoundError, ValueError) as error:   # a wrong data.path or layout: say so, no traceback
        raise SystemExit(f"sample: {error}") from None
    jobs = plan_jobs(found_files, params)
    compute = ComputeSettings.from_params(params)
    # Results come back in the jobs' order on every engine, so the outputs are deterministic;
    # the bar counts files as their results reach this process, from every worker of the cluster.
    results = tqdm(map_in_order(sample_one, jobs, compute), total=len(jobs), desc=f"sample [{compute.describe()}]",
                   unit="file")
    try:
        manifest = write_outputs(Path(params["paths"]["frames"]), Path(params["paths"]["manifest"]), results, params)
    except WorkerError as error:      # a worker without the data: say so, no traceback
        raise SystemExit(f"sample: {error}") from None
    report(manifest, params)
    if not (manifest["status"] == "ok").any():
        raise SystemExit(f"sample: not one usable clip among {len(manifest)} files found under {data['path']} "
                         f"(data.source: {data['source']}); each file's reason is in {params['paths']['manifest']}")


if __name__ == "__main__":
    # The importable module's main, not this `__main__` copy's: what it hands to Ray workers
    # (jobs, functions, classes) must pickle as stages.sample.*, a name a worker can import.
    from stages.sample import main as importable_main
    importable_main()
