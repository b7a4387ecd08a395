"""Stage `generate`: write the built-in synthetic sign dataset as video files.

Usage:
    python -m stages.generate          # reads params.yaml: base.seed, data, generate

Writes `<paths.synthetic>/<sign>/<signer>_r<repetition>.mp4` and
`<paths.synthetic>/index.csv` (path,label,signer,split). The split holds out
whole signers: the last `generate.test_signers` signers are test only, the
`generate.val_signers` before them validation only. Deterministic for a given
`base.seed`. When `data.source` is not `synthetic` it writes only an index
with no rows, so the pipeline graph stays the same for every source.
"""
from __future__ import annotations

import csv
import os
import shutil
from multiprocessing import Pool
from pathlib import Path

import cv2
from tqdm import tqdm

from stages.lib.datasets import SYNTHETIC_INDEX
from stages.lib.params import load_params
from stages.lib.synthetic import SIGNS, make_signer, render_clip


def signer_name(signer_index: int) -> str:
    return f"signer{signer_index:02d}"


def split_of_signer(signer_index: int, signers: int, val_signers: int, test_signers: int) -> str:
    """Whole signers per split: the last ones test, the ones before them validation."""
    if signer_index >= signers - test_signers:
        return "test"
    if signer_index >= signers - test_signers - val_signers:
        return "val"
    return "train"


def plan_clips(settings: dict, seed: int) -> list[dict]:
    """One row per clip to write: relative path, label, signer, split, and what to render."""
    rows = []
    for signer_index in range(settings["signers"]):
        split = split_of_signer(signer_index, settings["signers"], settings["val_signers"],
                                settings["test_signers"])
        for sign in SIGNS[: settings["classes"]]:
            for repetition in range(settings["repetitions"]):
                rows.append({
                    "path": f"{sign.name}/{signer_name(signer_index)}_r{repetition}.mp4",
                    "label": sign.name, "signer": signer_name(signer_index), "split": split,
                    "signer_index": signer_index, "repetition": repetition, "seed": seed,
                })
    return rows


def write_clip(job: tuple[dict, dict, str]) -> str:
    """Render one clip and encode it as mp4 (runs in a worker process)."""
    row, settings, root = job
    signer = make_signer(row["signer_index"], row["seed"], settings["width"], settings["height"])
    sign = next(s for s in SIGNS if s.name == row["label"])
    frames = render_clip(sign, signer, row["repetition"], row["seed"], settings["fps"], settings["seconds"])
    path = Path(root) / row["path"]
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), settings["fps"],
                             (settings["width"], settings["height"]))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write mp4v video to {path}")
    for frame in frames:  # (height, width, 3) BGR uint8
        writer.write(frame)
    writer.release()
    return row["path"]


def write_index(root: Path, rows: list[dict]) -> None:
    with (root / SYNTHETIC_INDEX).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "signer", "split"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    params = load_params()
    settings = params["generate"]
    if settings["classes"] > len(SIGNS):
        raise SystemExit(f"generate.classes is {settings['classes']}; the built-in vocabulary has {len(SIGNS)}")
    root = Path(params["paths"]["synthetic"])
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    if params["data"]["source"] != "synthetic":
        write_index(root, [])
        print(f"data.source is {params['data']['source']!r}: no synthetic clips written")
        return
    rows = plan_clips(settings, params["base"]["seed"])
    jobs = [(row, settings, str(root)) for row in rows]
    with Pool(os.cpu_count() or 1) as pool:
        for _ in tqdm(pool.imap_unordered(write_clip, jobs, chunksize=4), total=len(jobs),
                      desc="generate", unit="clip"):
            pass
    write_index(root, rows)
    print(f"wrote {len(rows)} clips of {settings['classes']} signs by {settings['signers']} signers to {root}")


if __name__ == "__main__":
    main()
