"""Find the clips of a dataset, whatever its layout, and every file that is not a usable clip.

Usage:
    from stages.lib.datasets import discover
    found = discover(source="folder", root="path/to/videos")
    for clip in found:                 # one FoundFile per file or empty folder, nothing dropped
        print(clip.path, clip.label, clip.signer, clip.refusal)

Each layout is one function `discover_<source>(root) -> list[FoundFile]`
registered in READERS; the sample stage only sees FoundFile records, so adding
a layout (frames folders, LSA64, WLASL) is one new function here.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from stages.lib.video import is_video_file

SYNTHETIC_INDEX = "index.csv"  # written by the generate stage: path,label,signer,split


@dataclass(frozen=True)
class FoundFile:
    path: Path                            # the file (or the empty folder)
    label: str                            # class name ("" when unknown)
    signer: str = ""                      # signer id when the dataset says ("" when unknown)
    given_split: str = ""                 # train | val | test when the dataset fixes it
    frame_range: tuple[int, int] | None = None   # (first, last) inclusive, when only part of the file is the sign
    refusal: str = ""                     # why this is not a usable clip ("" when it may be one)


def discover(source: str, root: str | Path) -> list[FoundFile]:
    """All files under `root` for layout `source`, in a stable order."""
    root = Path(root)
    if source not in READERS:
        raise ValueError(f"data.source {source!r} has no reader; allowed values: {', '.join(READERS)}")
    if not root.is_dir():
        raise FileNotFoundError(f"data.path {root} is not a folder")
    return READERS[source](root)


def discover_folder(root: Path) -> list[FoundFile]:
    """`<root>/<class>/<clip>.<video ext>`: class from the folder name, no signer known."""
    found: list[FoundFile] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in class_dir.rglob("*") if p.is_file())
        if not files:
            found.append(FoundFile(class_dir, class_dir.name, refusal="empty class folder: no files"))
        for path in files:
            refusal = "" if is_video_file(path) else f"not a video file (extension {path.suffix or 'none'!r})"
            found.append(FoundFile(path, class_dir.name, refusal=refusal))
    for stray in sorted(p for p in root.iterdir() if p.is_file()):
        found.append(FoundFile(stray, "", refusal="file outside any class folder"))
    return found


def discover_synthetic(root: Path) -> list[FoundFile]:
    """The generate stage's folder: its index gives label, signer and the held-out-signer split."""
    index_path = root / SYNTHETIC_INDEX
    if not index_path.exists():
        raise FileNotFoundError(f"{index_path} not found: run the generate stage (dvc repro generate)")
    with index_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [FoundFile(root / row["path"], row["label"], signer=row["signer"], given_split=row["split"])
            for row in rows]


READERS: dict[str, Callable[[Path], list[FoundFile]]] = {
    "synthetic": discover_synthetic,
    "folder": discover_folder,
}
