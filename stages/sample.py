"""Stage `sample`: pick `base.seq_len` frames from every clip and store them, with a manifest.

Usage:
    python -m stages.sample            # reads params.yaml: base, data, sample

Writes
- `paths.frames` (HDF5): `frames` (N, seq_len, image_size, image_size, 3) uint8
  RGB for the N usable clips, with per-clip `paths`, `labels`, `splits`,
  `signers`, `num_frames`, `fps`, and attributes describing the preprocessing;
- `paths.manifest` (CSV): one row per file found, usable or not:
  path,label,split,signer,status,reason,num_frames,fps.

A file that cannot be used never stops the stage: its row says `refused` and
why. Both outputs are written atomically.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path
from typing import Iterable

import h5py
import numpy as np
import pandas as pd
from tqdm import tqdm

from stages.lib.datasets import FoundFile, discover
from stages.lib.params import load_params
from stages.lib.splits import assign_split
from stages.lib.storage import atomic_path, write_clip_columns
from stages.lib.video import COLOR_ORDER, PREPROCESSING_DESCRIPTION, ClipRefused, sample_video

MANIFEST_COLUMNS = ["path", "label", "split", "signer", "status", "reason", "num_frames", "fps"]


@dataclass
class SampleResult:
    row: dict                      # the manifest row
    frames: np.ndarray | None      # (seq_len, H, W, 3) uint8 RGB when usable


def display_path(path: Path) -> str:
    """Path relative to the repository when inside it (portable manifests), else absolute."""
    absolute = path.resolve()
    try:
        return absolute.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return absolute.as_posix()


def sample_one(job: tuple[FoundFile, str, int, int, int]) -> SampleResult:
    """Sample one found file into a manifest row and frames (runs in a worker process)."""
    found, split, seq_len, image_size, min_frames = job
    row = {"path": display_path(found.path), "label": found.label, "split": split,
           "signer": found.signer, "status": "refused", "reason": found.refusal,
           "num_frames": 0, "fps": 0.0}
    if found.refusal:
        return SampleResult(row, None)
    try:
        clip = sample_video(found.path, seq_len, image_size, min_frames, found.frame_range)
    except ClipRefused as refusal:
        row["reason"] = str(refusal)
        return SampleResult(row, None)
    except Exception as error:  # an unexpected decoder failure is still one bad file, not a crash
        row["reason"] = f"unreadable: {type(error).__name__}: {error}"
        return SampleResult(row, None)
    row.update(status="ok", reason=clip.note, num_frames=clip.num_frames, fps=round(clip.fps, 3))
    return SampleResult(row, clip.frames)


def plan_jobs(found_files: list[FoundFile], params: dict) -> list[tuple]:
    base, sample = params["base"], params["sample"]
    jobs = []
    for found in found_files:
        split = assign_split(found.label, found.signer, display_path(found.path), found.given_split,
                             sample["val_fraction"], sample["test_fraction"], base["seed"])
        jobs.append((found, split, base["seq_len"], base["image_size"], sample["min_frames"]))
    return jobs


def sampling_rate(rows: list[dict], seq_len: int) -> float:
    """Frames per second at which training sampled: seq_len over the median clip duration.

    The live path feeds frames to the model at this rate, so a sign performed at
    the typical speed fills the buffer the way training clips did.
    """
    durations = [row["num_frames"] / row["fps"] for row in rows if row["status"] == "ok" and row["fps"] > 0]
    return float(seq_len / np.median(durations)) if durations else 0.0


def write_frames_file(path: Path, results: Iterable[SampleResult], params: dict) -> list[dict]:
    """Stream usable clips into one HDF5 file as they arrive; return every manifest row.

    The frames dataset grows clip by clip, so memory does not grow with the dataset.
    """
    seq_len, image_size = params["base"]["seq_len"], params["base"]["image_size"]
    rows: list[dict] = []
    usable_rows: list[dict] = []
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as handle:
            frames = handle.create_dataset(
                "frames", shape=(0, seq_len, image_size, image_size, 3), dtype="uint8",
                maxshape=(None, seq_len, image_size, image_size, 3),
                chunks=(1, seq_len, image_size, image_size, 3), compression="lzf")
            for result in results:
                rows.append(result.row)
                if result.frames is None:
                    continue
                frames.resize(len(usable_rows) + 1, axis=0)
                frames[len(usable_rows)] = result.frames
                usable_rows.append(result.row)
            write_clip_columns(handle, {
                "paths": [r["path"] for r in usable_rows], "labels": [r["label"] for r in usable_rows],
                "splits": [r["split"] for r in usable_rows], "signers": [r["signer"] for r in usable_rows]})
            handle.create_dataset("num_frames", data=np.array([r["num_frames"] for r in usable_rows], np.int64))
            handle.create_dataset("fps", data=np.array([r["fps"] for r in usable_rows], np.float64))
            handle.attrs.update({
                "seq_len": seq_len, "image_size": image_size, "color_order": COLOR_ORDER,
                "layout": "(clip, time, height, width, channel)", "preprocessing": PREPROCESSING_DESCRIPTION,
                "sample_fps": sampling_rate(rows, seq_len), "data_source": params["data"]["source"],
            })
    return rows


def check_classes_have_clips(manifest: pd.DataFrame) -> list[str]:
    """Warnings for classes left without usable training clips (named, not a traceback)."""
    labelled = manifest[manifest["label"] != ""]
    usable_train = labelled[(labelled["status"] == "ok") & (labelled["split"] == "train")]
    return [f"class {label!r} has no usable training clip; it cannot be learned"
            for label in sorted(set(labelled["label"]) - set(usable_train["label"]))]


def main() -> None:
    params = load_params()
    found_files = discover(params["data"]["source"], params["data"]["path"])
    jobs = plan_jobs(found_files, params)
    # Workers return results in input order (imap), so output order is deterministic.
    with Pool(os.cpu_count() or 1) as pool:
        results = tqdm(pool.imap(sample_one, jobs, chunksize=2), total=len(jobs), desc="sample", unit="file")
        rows = write_frames_file(Path(params["paths"]["frames"]), results, params)
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    with atomic_path(params["paths"]["manifest"]) as tmp:
        manifest.to_csv(tmp, index=False)
    refused = manifest[manifest["status"] != "ok"]
    print(f"sampled {len(manifest) - len(refused)} clips; refused {len(refused)} files (see {params['paths']['manifest']})")
    for reason, count in refused["reason"].value_counts().items():
        print(f"  {count:4d} refused: {reason}")
    for warning in check_classes_have_clips(manifest):
        print(f"WARNING: {warning}")


if __name__ == "__main__":
    main()
