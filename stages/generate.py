"""Stage `generate`: write the built-in synthetic sign dataset, and continuous streams to test on, as videos.

Usage:
    python -m stages.generate          # reads params.yaml: base.seed, data, generate, paths

Writes, under `paths.synthetic` (every signer):
    <sign>/<signer>_r<repetition>.mp4   one sign, with the signer at rest for a random lead-in and lead-out
    _none/<signer>_r<k>.mp4             class "_none": standing, fidgeting, or hands moving into position
    index.csv                           path,label,signer,split
and under `paths.streams` (validation and test signers only):
    <split>/<signer>_stream<k>.mp4      continuous signing: rest, signs separated by gaps, rest
    <split>/<signer>_fast<k>.mp4        signing without pauses (kind "fast"): gaps of `generate.fast_gap_seconds_*`,
                                        the first sign starting and the last ending within
                                        `generate.fast_lead_seconds_max` of the file's ends
    <split>/<signer>_idle<k>.mp4        `generate.idle_streams_per_signer` streams of `generate.idle_stream_seconds`
                                        (>= 30) of no signing at all: rest, fidgets, moving into position
    <split>/<stem>.json                 beside each video: {"kind": "signs" | "fast" | "idle", "signer", "split",
                                        "duration", "fps", "signs": [{"sign", "start", "end"}, ...]},
                                        start/end in seconds of the first/last frame of each sign proper
    index.csv                           path,split,signer,kind,duration (path relative to the folder)

The split holds out whole signers: the last `generate.test_signers` signers are
test only, the `generate.val_signers` before them validation only.
Deterministic for a given `base.seed`. When `data.source` is not `synthetic` it
writes only the two indexes, with no rows, so the pipeline graph stays the
same for every source. Work is spread over all cores, longest takes first.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterator
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from stages.lib.datasets import NO_SIGN_LABEL, SYNTHETIC_INDEX
from stages.lib.params import load_params
from stages.lib.synthetic import (
    SIGNS,
    STREAM_LEAD_SECONDS,
    TRANSITION_SECONDS,
    Signer,
    StreamRecipe,
    Timeline,
    clip_timeline,
    idle_clip_timeline,
    idle_stream_timeline,
    make_signer,
    sign_stream_timeline,
    timeline_frames,
)

CLIP_INDEX_COLUMNS = ["path", "label", "signer", "split"]
STREAM_JOBS = ("sign_stream", "idle_stream")
STREAMS_INDEX = "index.csv"       # in paths.streams; the CLI and stream evaluation read it
STREAM_INDEX_COLUMNS = ["path", "split", "signer", "kind", "duration"]
# Footage (seconds) handed to a worker at once: enough that pickling and a queue round trip
# cost little beside rendering it, small enough that both workers finish at about the same time.
MIN_BATCH_SECONDS = 15.0


def signer_name(signer_index: int) -> str:
    return f"signer{signer_index:02d}"


def split_of_signer(signer_index: int, signers: int, val_signers: int, test_signers: int) -> str:
    """Whole signers per split: the last ones test, the ones before them validation."""
    if signer_index >= signers - test_signers:
        return "test"
    if signer_index >= signers - test_signers - val_signers:
        return "val"
    return "train"


def signers_with_splits(settings: dict) -> Iterator[tuple[int, str]]:
    for signer_index in range(settings["signers"]):
        yield signer_index, split_of_signer(signer_index, settings["signers"], settings["val_signers"],
                                            settings["test_signers"])


def plan_clips(settings: dict, seed: int) -> list[dict]:
    """One row per clip to write (signs, then idle clips of class "_none"): path, label, signer, split, how."""
    rows = []
    for signer_index, split in signers_with_splits(settings):
        name = signer_name(signer_index)
        common = {"signer": name, "split": split, "signer_index": signer_index, "seed": seed}
        for sign in SIGNS[: settings["classes"]]:
            for repetition in range(settings["repetitions"]):
                rows.append({"path": f"{sign.name}/{name}_r{repetition}.mp4", "label": sign.name,
                             "repetition": repetition, "job": "sign_clip", **common})
        for repetition in range(settings["idle_clips"]):
            rows.append({"path": f"{NO_SIGN_LABEL}/{name}_r{repetition}.mp4", "label": NO_SIGN_LABEL,
                         "repetition": repetition, "job": "idle_clip", **common})
    return rows


def plan_streams(settings: dict, seed: int) -> list[dict]:
    """One row per continuous stream to write, for validation and test signers only (never trained on)."""
    rows = []
    for signer_index, split in signers_with_splits(settings):
        if split == "train":
            continue
        name = signer_name(signer_index)
        common = {"signer": name, "split": split, "signer_index": signer_index, "seed": seed}
        for stream_index in range(settings["streams_per_signer"]):
            rows.append({"path": f"{split}/{name}_stream{stream_index}.mp4", "kind": "signs",
                         "stream_index": stream_index, "job": "sign_stream", **common})
        # Fast streams draw their signs after the usual ones' indexes: other signs, other orders.
        for fast_index in range(settings["fast_streams_per_signer"]):
            rows.append({"path": f"{split}/{name}_fast{fast_index}.mp4", "kind": "fast",
                         "stream_index": settings["streams_per_signer"] + fast_index, "job": "sign_stream", **common})
        for idle_index in range(settings["idle_streams_per_signer"]):
            rows.append({"path": f"{split}/{name}_idle{idle_index}.mp4", "kind": "idle", "stream_index": idle_index,
                         "job": "idle_stream", **common})
    return rows


def stream_recipe(settings: dict, fast: bool = False) -> StreamRecipe:
    """The usual streams' recipe, or the fast one: short gaps, and signs right at the file's ends."""
    gap = (settings["fast_gap_seconds_min"], settings["fast_gap_seconds_max"]) if fast else \
        (settings["gap_seconds_min"], settings["gap_seconds_max"])
    lead = (0.0, settings["fast_lead_seconds_max"]) if fast else STREAM_LEAD_SECONDS
    return StreamRecipe(vocabulary=SIGNS[: settings["classes"]], sign_seconds=settings["seconds"],
                        signs_per_stream=(settings["signs_per_stream_min"], settings["signs_per_stream_max"]),
                        gap_seconds=gap, lead_seconds=lead)


def estimated_seconds(row: dict, settings: dict) -> float:
    """Rough footage length of a take (before the signer's speed), to order and batch the work."""
    sign = settings["seconds"] + 2 * TRANSITION_SECONDS
    if row["job"] == "sign_clip":
        return sign + settings["lead_seconds_min"] + settings["lead_seconds_max"]
    if row["job"] == "idle_clip":
        return settings["idle_seconds"]
    if row["job"] == "idle_stream":
        return settings["idle_stream_seconds"]
    recipe = stream_recipe(settings, fast=row["kind"] == "fast")
    signs = sum(recipe.signs_per_stream) / 2
    return sum(recipe.lead_seconds) + signs * sign + (signs - 1) * sum(recipe.gap_seconds) / 2


def batch_jobs(jobs: list[tuple[dict, dict, str]], settings: dict) -> list[list[tuple[dict, dict, str]]]:
    """Jobs longest first (a stream started last would leave one core idle at the end), in batches of
    at least MIN_BATCH_SECONDS of footage."""
    ordered = sorted(jobs, key=lambda job: -estimated_seconds(job[0], settings))
    batches, batch, footage = [], [], 0.0
    for job in ordered:
        batch.append(job)
        footage += estimated_seconds(job[0], settings)
        if footage >= MIN_BATCH_SECONDS:
            batches.append(batch)
            batch, footage = [], 0.0
    return batches + ([batch] if batch else [])


def take_timeline(row: dict, settings: dict, signer: Signer) -> Timeline:
    """The poses of the take a planned row asks for."""
    fps, seed, vocabulary = settings["fps"], row["seed"], SIGNS[: settings["classes"]]
    if row["job"] == "sign_clip":
        sign = next(s for s in SIGNS if s.name == row["label"])
        return clip_timeline(sign, signer, row["repetition"], seed, fps, settings["seconds"],
                             (settings["lead_seconds_min"], settings["lead_seconds_max"]))
    if row["job"] == "idle_clip":
        return idle_clip_timeline(signer, row["repetition"], seed, fps, settings["idle_seconds"], vocabulary)
    if row["job"] == "sign_stream":
        return sign_stream_timeline(signer, row["stream_index"], seed, fps,
                                    stream_recipe(settings, fast=row["kind"] == "fast"))
    return idle_stream_timeline(signer, row["stream_index"], seed, fps, settings["idle_stream_seconds"], vocabulary)


def stream_annotation(row: dict, timeline: Timeline, fps: int) -> dict:
    """The JSON beside a stream; the same schema the CLI prints, so keep the keys as they are."""
    return {
        "kind": row["kind"], "signer": row["signer"], "split": row["split"],
        "duration": round(len(timeline.poses) / fps, 3), "fps": fps,
        "signs": [{"sign": span.sign, "start": round(span.first_frame / fps, 3),
                   "end": round(span.last_frame / fps, 3)} for span in timeline.signs],
    }


def write_video(path: Path, frames: Iterator[np.ndarray], fps: int, width: int, height: int) -> int:
    """Encode frames as mp4 one at a time (a stream never sits in memory whole); returns how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write mp4v video to {path}")
    count = 0
    for frame in frames:  # (height, width, 3) BGR uint8
        writer.write(frame)
        count += 1
    writer.release()
    return count


def write_take(job: tuple[dict, dict, str]) -> dict:
    """Render one clip or stream and write it (plus a stream's JSON); returns its path, frames and duration."""
    row, settings, root = job
    signer = make_signer(row["signer_index"], row["seed"], settings["width"], settings["height"])
    timeline = take_timeline(row, settings, signer)
    path = Path(root) / row["path"]
    frames = write_video(path, timeline_frames(timeline, signer, settings["fps"]), settings["fps"],
                         settings["width"], settings["height"])
    if row["job"] in STREAM_JOBS:
        path.with_suffix(".json").write_text(json.dumps(stream_annotation(row, timeline, settings["fps"]), indent=2))
    return {"root": root, "path": row["path"], "frames": frames, "duration": round(frames / settings["fps"], 3)}


def write_batch(batch: list[tuple[dict, dict, str]]) -> list[dict]:
    """Runs in a worker process."""
    return [write_take(job) for job in batch]


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_all(jobs: list[tuple[dict, dict, str]], settings: dict) -> dict[tuple[str, str], dict]:
    """Render every job on all cores; results keyed by (root, path)."""
    results = {}
    with Pool(os.cpu_count() or 1) as pool, tqdm(total=len(jobs), desc="generate", unit="take") as progress:
        for batch_results in pool.imap_unordered(write_batch, batch_jobs(jobs, settings)):
            for result in batch_results:
                results[(result["root"], result["path"])] = result
            progress.update(len(batch_results))
    return results


def fresh_folder(root: Path) -> Path:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    return root


def main() -> None:
    params = load_params()
    settings = params["generate"]
    if settings["classes"] > len(SIGNS):
        raise SystemExit(f"generate.classes is {settings['classes']}; the built-in vocabulary has {len(SIGNS)}")
    clips_root = fresh_folder(Path(params["paths"]["synthetic"]))
    streams_root = fresh_folder(Path(params["paths"]["streams"]))
    if params["data"]["source"] != "synthetic":
        write_csv(clips_root / SYNTHETIC_INDEX, [], CLIP_INDEX_COLUMNS)
        write_csv(streams_root / STREAMS_INDEX, [], STREAM_INDEX_COLUMNS)
        print(f"data.source is {params['data']['source']!r}: no synthetic clips or streams written")
        return
    clips = plan_clips(settings, params["base"]["seed"])
    streams = plan_streams(settings, params["base"]["seed"])
    jobs = [(row, settings, str(clips_root)) for row in clips] + [(row, settings, str(streams_root)) for row in streams]
    results = write_all(jobs, settings)
    for row in streams:
        row["duration"] = results[(str(streams_root), row["path"])]["duration"]
    write_csv(clips_root / SYNTHETIC_INDEX, clips, CLIP_INDEX_COLUMNS)
    write_csv(streams_root / STREAMS_INDEX, streams, STREAM_INDEX_COLUMNS)
    idle_clips = sum(row["label"] == NO_SIGN_LABEL for row in clips)
    frames = sum(result["frames"] for result in results.values())
    print(f"wrote {len(clips) - idle_clips} sign clips of {settings['classes']} signs and {idle_clips} idle clips "
          f"by {settings['signers']} signers to {clips_root}, {len(streams)} streams to {streams_root}; "
          f"{frames} frames in all")


if __name__ == "__main__":
    main()
