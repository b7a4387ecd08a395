"""Find the clips of a dataset, whatever its layout, and every file that is not a usable clip.

Usage:
    from stages.lib.datasets import discover
    found = discover(source="folder", root="path/to/videos")
    for clip in found:                 # one FoundFile per file or empty folder, nothing dropped
        print(clip.path, clip.label, clip.signer, clip.refusal)

Each layout is one function `discover_<source>(root) -> list[FoundFile]`
registered in READERS; the sample stage only sees FoundFile records, so adding
a layout is one new function here. Layouts (`data.source`):

    synthetic  <root>/index.csv + <root>/<class>/<clip>.mp4       (the generate stage's output)
    folder     <root>/<class>/<clip>.mp4|.avi|.mov|.mkv|.webm     (any letter case; a clip named
               <signer>_<YYYYmmdd-HHMMSS>.<ext>, as the app records them, names its signer)
    frames     <root>/<class>/<clip>/<frame>.jpg|.png             (natural order)
    lsa64      <root>/**/SSS_PPP_RRR.mp4                          (sign_signer_repetition)
    wlasl      <root>/<index>.json + <root>/videos/<video_id>.mp4

Discovery only looks at names and folders (cheap, one process); whether a
file decodes is decided by the sample stage's workers. Class names are
Unicode-normalised (NFC), so a class folder copied from macOS (NFD) and one
typed on Linux are the same class.
"""
from __future__ import annotations

import csv
import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from stages.lib.video import is_frame_image, is_video_file, list_frame_images

# The reserved class of idle footage (standing at rest, fidgeting, moving the hands into position):
# the model's "no sign" output. In a folder dataset, put idle recordings in a class folder of this name.
NO_SIGN_LABEL = "_none"
SYNTHETIC_INDEX = "index.csv"  # written by the generate stage: path,label,signer,split
WLASL_VIDEOS_FOLDER = "videos"
# LSA64 names every clip SSS_PPP_RRR: sign, signer and repetition, three digits each.
LSA64_NAME = re.compile(r"^(?P<sign>\d{3})_(?P<signer>\d{3})_(?P<repetition>\d{3})$")
# The app's Record page names every clip <signer>_<YYYYmmdd-HHMMSS> (when it started): in the folder
# layout such a name gives the clip its signer, so `data.split: signer` holds out people. Other
# names keep no signer.
RECORDING_TIME_FORMAT = "%Y%m%d-%H%M%S"
RECORDING_NAME = re.compile(r"^(?P<signer>.+)_(?P<time>\d{8}-\d{6})$")
# A file still being written (or left by a crash) carries this before its extension,
# `<name>.<anything>.partial.mp4`: it keeps the video extension a writer needs, and is never a clip.
PARTIAL_MARK = ".partial"


@dataclass(frozen=True)
class FoundFile:
    path: Path                            # the file, the clip folder (frames layout), or the empty folder
    label: str                            # class name ("" when unknown)
    signer: str = ""                      # signer id when the dataset says ("" when unknown)
    given_split: str = ""                 # train | val | test when the dataset fixes it
    frame_range: tuple[int, int] | None = None   # (first, last) 0-based inclusive, last -1 = to the end
    refusal: str = ""                     # why this is not a usable clip ("" when it may be one)


def discover(source: str, root: str | Path) -> list[FoundFile]:
    """All files under `root` for layout `source`, in a stable order."""
    root = Path(root)
    if source not in READERS:
        raise ValueError(f"data.source {source!r} has no reader; allowed values: {', '.join(READERS)}")
    if not root.is_dir():
        raise FileNotFoundError(f"data.path {root} is not a folder")
    return READERS[source](root)


def class_name(folder: Path) -> str:
    """The class a folder names, NFC-normalised (spaces and non-ASCII letters kept)."""
    return unicodedata.normalize("NFC", folder.name)


def sorted_children(folder: Path) -> tuple[list[Path], list[Path]]:
    """(sub-folders, files) directly inside `folder`, each sorted by name."""
    children = sorted(folder.iterdir())
    return [p for p in children if p.is_dir()], [p for p in children if p.is_file()]


def video_refusal(path: Path) -> str:
    """'' for a file with a video extension, else why it is not a clip."""
    if path.name.startswith("._"):
        # macOS writes these resource forks next to every file on non-Apple disks; they carry the
        # video's extension but no video.
        return "not a video file: macOS resource fork ('._' file)"
    if is_video_file(path) and Path(path.stem).suffix == PARTIAL_MARK:
        return f"partial file: a recording or copy that has not finished (its name ends in {PARTIAL_MARK}{path.suffix})"
    if is_video_file(path):
        return ""
    if not path.suffix and path.name.startswith("."):
        return f"not a video file: hidden file {path.name!r}"   # .DS_Store, .gitkeep: no suffix to Python
    hint = " (frame images? use data.source: frames)" if is_frame_image(path) else ""
    return f"not a video file: extension {path.suffix or 'none'!r}{hint}"


def stray_files(root: Path) -> list[FoundFile]:
    """Files lying directly in the dataset root, outside any class folder."""
    return [FoundFile(path, "", refusal="file outside any class folder") for path in sorted_children(root)[1]]


def recording_signer(path: Path) -> str:
    """The signer of a clip named `<signer>_<YYYYmmdd-HHMMSS>.<ext>` (NFC); '' for any other name.

    >>> recording_signer(Path("wave/ana_20261201-143000.mp4")), recording_signer(Path("wave/clip01.mp4"))
    ('ana', '')
    """
    match = RECORDING_NAME.match(unicodedata.normalize("NFC", path.stem))
    if match is None:
        return ""
    try:
        datetime.strptime(match["time"], RECORDING_TIME_FORMAT)    # a real time, not any 8+6 digits
    except ValueError:
        return ""
    return match["signer"]


def discover_folder(root: Path) -> list[FoundFile]:
    """`<root>/<class>/<clip>.<video ext>`: class from the folder name; signer from a recording's name.

    Clips in sub-folders of a class folder belong to that class. A clip named
    `<signer>_<YYYYmmdd-HHMMSS>.<ext>` (the app's recordings) has that signer;
    other clips have none, and split per clip.
    """
    found: list[FoundFile] = []
    for class_dir in sorted_children(root)[0]:
        label = class_name(class_dir)
        files = sorted(p for p in class_dir.rglob("*") if p.is_file())
        if not files:
            found.append(FoundFile(class_dir, label, refusal="empty class folder: no files"))
        found.extend(FoundFile(path, label, signer=recording_signer(path), refusal=video_refusal(path))
                     for path in files)
    return found + stray_files(root)


def discover_frames(root: Path) -> list[FoundFile]:
    """`<root>/<class>/<clip>/<frame images>`: one clip per folder of .jpg/.png frames.

    FoundFile.path is the clip folder. Anything else in a clip folder (notes,
    .DS_Store, sub-folders) gets its own refused row, so nothing is hidden.
    """
    found: list[FoundFile] = []
    for class_dir in sorted_children(root)[0]:
        label = class_name(class_dir)
        clip_dirs, loose_files = sorted_children(class_dir)
        if not clip_dirs and not loose_files:
            found.append(FoundFile(class_dir, label, refusal="empty class folder: no files"))
        for clip_dir in clip_dirs:
            found.extend(frame_folder_entries(clip_dir, label))
        found.extend(FoundFile(path, label, refusal="not in a clip folder: the frames layout is "
                                                    "<class>/<clip>/<images>") for path in loose_files)
    return found + stray_files(root)


def frame_folder_entries(clip_dir: Path, label: str) -> list[FoundFile]:
    """The clip folder itself (the sample stage refuses it if it holds no readable image) and its strays."""
    entries = [FoundFile(clip_dir, label)]
    images = set(list_frame_images(clip_dir))
    sub_dirs, files = sorted_children(clip_dir)
    entries.extend(FoundFile(path, label, refusal=f"not a frame image: extension {path.suffix or path.name!r}")
                   for path in files if path not in images)
    entries.extend(FoundFile(path, label, refusal="folder inside a clip folder: the frames layout is "
                                                  "<class>/<clip>/<images>") for path in sub_dirs)
    return entries


def discover_lsa64(root: Path) -> list[FoundFile]:
    """LSA64: `SSS_PPP_RRR.mp4` anywhere under `root`; sign and signer come from the file name.

    The label is the three-digit sign id as LSA64 writes it ("001"); the signer
    is the three-digit signer id. The same sign, signer and repetition found
    twice (say in both `all/` and `all_cut/`) is used once, the copy refused.
    """
    found: list[FoundFile] = []
    seen: dict[tuple[str, str, str], Path] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        refusal = video_refusal(path)
        match = LSA64_NAME.match(path.stem)
        if not refusal and match is None:
            refusal = ("file name not in LSA64 form: expected SSS_PPP_RRR (sign_signer_repetition, "
                       "e.g. 001_004_002.mp4)")
        if refusal:
            found.append(FoundFile(path, "", refusal=refusal))
            continue
        key = (match["sign"], match["signer"], match["repetition"])
        refusal = (f"duplicate clip: same sign, signer and repetition as {seen[key].relative_to(root).as_posix()}"
                   if key in seen else "")
        seen.setdefault(key, path)
        found.append(FoundFile(path, match["sign"], signer=match["signer"], refusal=refusal))
    return found


def discover_wlasl(root: Path) -> list[FoundFile]:
    """WLASL: a JSON index (list of {"gloss", "instances"}) next to `videos/<video_id>.mp4`.

    Each instance gives the signer, the dataset's split and the sign's frames
    (1-based `frame_start`, `frame_end` -1 meaning to the end), turned here into
    a 0-based inclusive frame_range. Instances whose video is missing and video
    files the index never names both appear, refused, so nothing is hidden.
    """
    index_path = find_wlasl_index(root)
    videos_dir = root / WLASL_VIDEOS_FOLDER
    if not videos_dir.is_dir():
        raise FileNotFoundError(f"{videos_dir} not found: the wlasl layout is <data.path>/<index>.json "
                                f"and <data.path>/{WLASL_VIDEOS_FOLDER}/<video_id>.mp4")
    video_files = sorted(p for p in videos_dir.rglob("*") if p.is_file())
    videos_by_id: dict[str, Path] = {}
    for path in video_files:
        if is_video_file(path) and not path.name.startswith("._"):
            videos_by_id.setdefault(path.stem, path)
    found: list[FoundFile] = []
    used: dict[str, str] = {}   # video_id -> gloss it was first used for
    for gloss, instance in wlasl_instances(index_path):
        found.append(wlasl_instance_entry(gloss, instance, videos_dir, videos_by_id, used))
    used_paths = {videos_by_id[video_id] for video_id in used if video_id in videos_by_id}
    for path in video_files:
        if path in used_paths:
            continue
        refusal = video_refusal(path) or ("not in the index" if path.stem not in used else
                                          f"duplicate video file: another file with video_id {path.stem!r} was used")
        found.append(FoundFile(path, "", refusal=refusal))
    return found


def find_wlasl_index(root: Path) -> Path:
    """The one .json file in `root` that holds a WLASL-style list of {"gloss", "instances"} entries."""
    candidates = [path for path in sorted(root.glob("*.json")) if is_wlasl_index(path)]
    if not candidates:
        raise FileNotFoundError(f"no WLASL index in {root}: expected a .json file holding a list of "
                                f'{{"gloss": ..., "instances": [...]}} entries, such as WLASL_v0.3.json')
    if len(candidates) > 1:
        raise ValueError(f"several WLASL indexes in {root}: {', '.join(p.name for p in candidates)}; keep one")
    return candidates[0]


def is_wlasl_index(path: Path) -> bool:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(content, list) and all(
        isinstance(entry, dict) and "gloss" in entry and "instances" in entry for entry in content)


def wlasl_instances(index_path: Path) -> list[tuple[str, dict]]:
    """(gloss, instance) pairs in index order; an instance without a video_id makes the index invalid."""
    pairs = []
    for entry in json.loads(index_path.read_text(encoding="utf-8")):
        for instance in entry["instances"]:
            if not isinstance(instance, dict) or not str(instance.get("video_id", "")).strip():
                raise ValueError(f"{index_path}: an instance of gloss {entry['gloss']!r} has no video_id")
            pairs.append((unicodedata.normalize("NFC", str(entry["gloss"])), instance))
    return pairs


def wlasl_instance_entry(gloss: str, instance: dict, videos_dir: Path, videos_by_id: dict[str, Path],
                         used: dict[str, str]) -> FoundFile:
    """One index instance as a FoundFile (refused when its video is missing or already used)."""
    video_id = str(instance["video_id"]).strip()
    path = videos_by_id.get(video_id, videos_dir / f"{video_id}.mp4")
    signer = "" if instance.get("signer_id") is None else str(instance["signer_id"])
    split = str(instance.get("split") or "")
    refusal = ""
    if video_id in used:
        refusal = f"duplicate video_id in the index: already used for gloss {used[video_id]!r}"
    elif video_id not in videos_by_id:
        refusal = "video file missing"
    used.setdefault(video_id, gloss)
    return FoundFile(path, gloss, signer=signer, given_split=split,
                     frame_range=wlasl_frame_range(instance), refusal=refusal)


def wlasl_frame_range(instance: dict) -> tuple[int, int] | None:
    """WLASL's 1-based frame_start/frame_end (-1 = to the end) -> 0-based inclusive; None = whole file."""
    start = int(instance.get("frame_start") or 1)
    end = int(instance.get("frame_end") if instance.get("frame_end") is not None else -1)
    if start <= 1 and end < 1:
        return None
    return max(start - 1, 0), (end - 1 if end >= 1 else -1)


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
    "frames": discover_frames,
    "lsa64": discover_lsa64,
    "wlasl": discover_wlasl,
}
