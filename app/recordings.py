"""The recordings folder: the names a user types, where a clip goes, what is there, and how it will split.

Usage:
    from app.recordings import check_sign_name, check_signer_name, write_recording, recordings_summary
    sign = check_sign_name("thanks", existing_signs=["wave"])   # NameRefused (a ValueError) says why not
    signer = check_signer_name("Ana")
    path = write_recording(frames_bgr, fps=30.0, recordings_dir=folder, sign=sign, signer=signer,
                           started=datetime.now())           # <folder>/thanks/Ana_20261201-143000.mp4
    summary = recordings_summary(folder, params, overrides=[])
    summary.table, summary.warnings, summary.split.mode     # clips per sign and signer; what to record next

The folder is a dataset in the `folder` layout (`<sign>/<signer>_<YYYYmmdd-HHMMSS>.mp4`,
stages/lib/datasets.py), which the pipeline reads like any other: the file
name carries the signer, so `data.split: signer` holds out people. This module
only decides names and files; discovery, splitting and everything the model
sees are the library's.

Names: a sign becomes a folder and a signer part of a file name, so a typed
name is NFC-normalised, stripped, and refused (NameRefused, with the reason)
when it is empty or too long, holds a control or invisible character, a path
separator, a character Windows or macOS cannot store, `..`, starts with a dot,
ends with a dot or a space, or is a Windows device name. The no-sign class
`_none` (and any name starting with `_`, kept for the pipeline's own classes)
is refused as a typed sign: the page records idle clips through its own
choice. A new sign that differs from an existing one only in letter case is
refused too (the two would be one folder on macOS and Windows).

Writing: frames go to a temporary `<name>.<random>.partial.mp4` beside the
final file, created exclusively (only this call writes it), are decoded back
to check every frame is there (a full disk truncates a file silently), and the
file is then linked to its final name, which never replaces an existing clip.
Any failure removes the temporary file: no half clip is ever left under a
clip's name, and the sample stage refuses `.partial` files with their reason.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from stages.lib.datasets import NO_SIGN_LABEL, PARTIAL_MARK, RECORDING_TIME_FORMAT, FoundFile, discover
from stages.lib.params import apply_overrides
from stages.lib.splits import planned_split
from stages.lib.storage import flush_to_disk
from stages.lib.video import ClipRefused, count_decodable_frames, write_timed_video

MAX_NAME_CHARACTERS = 40          # a sign or a signer; 40 characters of up to 4 UTF-8 bytes stay far below 255
FORBIDDEN_CHARACTERS = '/\\:*?"<>|'   # path separators, and what Windows (and ':' on macOS) cannot store
# Windows refuses these as file or folder names, with or without an extension, in any letter case.
WINDOWS_DEVICE_NAMES = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                                  *(f"LPT{i}" for i in range(1, 10))})
RESERVED_PREFIX = "_"             # the pipeline's own classes (NO_SIGN_LABEL is "_none")
VIDEO_CODEC = "mp4v"              # MPEG-4 part 2 in .mp4: OpenCV writes it everywhere, the pipeline decodes it
CLIP_EXTENSION = ".mp4"
PREVIEW_CODEC = "VP80"            # browsers cannot play mp4v; a VP8 .webm copy plays back on the page
# Below this much free space a recording is refused before writing: a 2.5 s clip is ~1 MB, but a
# nearly full disk also fails the pipeline's own outputs.
MIN_FREE_BYTES = 50 * 2**20
NAME_COLLISION_TRIES = 10         # two sessions, same sign and signer, same second: the later clip moves on 1 s


class NameRefused(ValueError):
    """A typed sign or signer name that cannot become a folder or file name; the message says why."""


class RecordingError(Exception):
    """A clip that could not be written; nothing was left behind. The message is for the user."""


# --- names --------------------------------------------------------------------------------------

def normalise_name(text: str) -> str:
    """NFC (one spelling for 'é', typed or pasted from macOS) without surrounding white space."""
    return unicodedata.normalize("NFC", str(text)).strip()


def check_name(text: str, what: str) -> str:
    """`text` as a safe folder or file name part, normalised; NameRefused naming the rule it breaks."""
    name = normalise_name(text)
    if not name:
        raise NameRefused(f"Type a {what} name.")
    if len(name) > MAX_NAME_CHARACTERS:
        raise NameRefused(f"The {what} name is {len(name)} characters long; at most {MAX_NAME_CHARACTERS}.")
    hidden = [character for character in name if unicodedata.category(character).startswith("C")]
    if hidden:
        raise NameRefused(f"The {what} name holds a control or invisible character "
                          f"(U+{ord(hidden[0]):04X}); type it again without it.")
    forbidden = sorted({character for character in name if character in FORBIDDEN_CHARACTERS})
    if forbidden:
        raise NameRefused(f"The {what} name may not contain {' '.join(forbidden)} "
                          f"(none of {' '.join(FORBIDDEN_CHARACTERS)}: they separate folders, or Windows "
                          "cannot store them).")
    if ".." in name:
        raise NameRefused(f"The {what} name may not contain '..'.")
    if name.startswith("."):
        raise NameRefused(f"The {what} name may not start with a dot (that would hide the file).")
    if name.endswith((".", " ")):
        raise NameRefused(f"The {what} name may not end with a dot or a space (Windows drops them).")
    if name.split(".")[0].upper() in WINDOWS_DEVICE_NAMES:
        raise NameRefused(f"'{name}' is a device name on Windows; choose another {what} name.")
    return name


def check_sign_name(text: str, existing_signs: list[str] = (), idle: bool = False) -> str:
    """A sign (class folder) name; `idle` True asks for the no-sign class on purpose."""
    if idle:
        return NO_SIGN_LABEL
    name = check_name(text, "sign")
    if name == NO_SIGN_LABEL:
        raise NameRefused(f"'{NO_SIGN_LABEL}' is the no-sign class: choose \"No sign (idle)\" to record it.")
    if name.startswith(RESERVED_PREFIX):
        raise NameRefused(f"Sign names starting with '{RESERVED_PREFIX}' are kept for the pipeline's own "
                          f"classes (like '{NO_SIGN_LABEL}'); choose another name.")
    for existing in existing_signs:
        if existing != name and existing.casefold() == name.casefold():
            raise NameRefused(f"'{name}' differs from the sign '{existing}' only in letter case (the two would be "
                              f"one folder on macOS and Windows): choose '{existing}' from the list.")
    return name


def check_signer_name(text: str) -> str:
    """A signer's name, the first part of every clip's file name."""
    return check_name(text, "signer")


# --- where a clip goes ----------------------------------------------------------------------------

def recording_path(recordings_dir: Path, sign: str, signer: str, started: datetime) -> Path:
    """`<recordings>/<sign>/<signer>_<YYYYmmdd-HHMMSS>.mp4`; the names are checked again here."""
    name = f"{check_signer_name(signer)}_{started.strftime(RECORDING_TIME_FORMAT)}{CLIP_EXTENSION}"
    sign_folder = check_sign_name(sign, idle=sign == NO_SIGN_LABEL)
    path = Path(recordings_dir) / sign_folder / name
    # The checks above leave no separator or '..'; a sign folder that is a link elsewhere is caught here.
    if not path.resolve().is_relative_to(Path(recordings_dir).resolve()):
        raise RecordingError(f"{path} lies outside the recordings folder {recordings_dir}: nothing written.")
    return path


def is_recording_of(path: Path, recordings_dir: Path) -> bool:
    """True for a clip file inside the recordings folder (what Discard may delete, and nothing else)."""
    try:
        relative = Path(path).resolve().relative_to(Path(recordings_dir).resolve())
    except ValueError:
        return False
    return len(relative.parts) == 2 and relative.suffix == CLIP_EXTENSION and Path(path).is_file()


# --- writing a clip -------------------------------------------------------------------------------

def write_recording(frames_bgr: list[np.ndarray], fps: float, recordings_dir: Path, sign: str, signer: str,
                    started: datetime, timestamps: list[float] | None = None) -> Path:
    """Frames (each (H, W, 3) uint8 BGR, as the camera gave them) -> a new clip; its path.

    With `timestamps` (the camera's, in seconds) each frame keeps its own time, so
    a camera that dropped frames is not flattened into its average `fps`.

    Raises RecordingError with a message for the user; then nothing is left behind.
    """
    if not frames_bgr:
        raise RecordingError("No frame was captured: nothing saved.")
    final_path = recording_path(recordings_dir, sign, signer, started)
    try:
        final_path.parent.mkdir(parents=True, exist_ok=True)
        check_free_space(final_path.parent)
        handle, temporary_name = tempfile.mkstemp(dir=final_path.parent, prefix=final_path.stem + ".",
                                                  suffix=PARTIAL_MARK + CLIP_EXTENSION)   # O_EXCL: ours alone
    except OSError as error:
        raise RecordingError(write_failure_message(Path(recordings_dir), str(error))) from None
    os.close(handle)
    temporary_path = Path(temporary_name)
    try:
        if timestamps is not None:
            write_timed_video(frames_bgr, timestamps, temporary_path)
        else:
            encode_video(frames_bgr, fps, temporary_path)
        check_frame_count(temporary_path, len(frames_bgr))
        flush_to_disk(temporary_path)
        return link_to_free_name(temporary_path, final_path, recordings_dir, sign, signer, started)
    except OSError as error:
        raise RecordingError(write_failure_message(final_path.parent, str(error))) from None
    finally:
        temporary_path.unlink(missing_ok=True)


def check_free_space(folder: Path) -> None:
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        raise RecordingError(f"The disk is full: {free / 2**20:.0f} MB free in {folder}, at least "
                             f"{MIN_FREE_BYTES / 2**20:.0f} MB needed. Nothing was saved.")


def write_failure_message(folder: Path, detail: str) -> str:
    try:
        free = shutil.disk_usage(folder if folder.exists() else folder.parent).free
    except OSError:
        free = None
    if free is not None and free < MIN_FREE_BYTES:
        return f"The disk is full ({free / 2**20:.0f} MB free in {folder}): nothing was saved."
    return f"The clip could not be written ({detail}; is the disk full?): nothing was saved."


def encode_video(frames_bgr: list[np.ndarray], fps: float, path: Path, codec: str = VIDEO_CODEC) -> None:
    """Write the frames at `fps`; OSError when OpenCV cannot open the file (its write errors are silent)."""
    height, width = frames_bgr[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), float(fps), (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write {codec} video to {path.name}")
    try:
        for frame in frames_bgr:
            writer.write(np.ascontiguousarray(frame))
    finally:
        writer.release()


def check_frame_count(path: Path, expected: int) -> None:
    """Decode the file: every frame written must come back (a full disk cuts a file short without an error)."""
    try:
        decoded = count_decodable_frames(path)
    except ClipRefused:
        decoded = 0
    if decoded != expected:
        raise OSError(f"{decoded} of {expected} frames could be read back")


def link_to_free_name(temporary_path: Path, final_path: Path, recordings_dir: Path, sign: str, signer: str,
                      started: datetime) -> Path:
    """Give the finished file its name without ever replacing a clip (a hard link fails if the name exists)."""
    for second in range(NAME_COLLISION_TRIES):
        candidate = recording_path(recordings_dir, sign, signer, started + timedelta(seconds=second))
        try:
            os.link(temporary_path, candidate)
            return candidate
        except FileExistsError:
            continue
    raise RecordingError(f"Clips named {final_path.stem} and the next {NAME_COLLISION_TRIES - 1} seconds "
                         "already exist: nothing saved.")


def preview_webm(clip_path: Path) -> bytes:
    """A VP8 .webm copy of a clip for the page to play back (browsers do not play mp4v)."""
    capture = cv2.VideoCapture(str(clip_path))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    frames = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        capture.release()
    if not frames:
        return b""
    handle, temporary_name = tempfile.mkstemp(suffix=".webm", prefix="signlang-preview-")
    os.close(handle)
    try:
        encode_video(frames, fps, Path(temporary_name), codec=PREVIEW_CODEC)
        return Path(temporary_name).read_bytes()
    except OSError:
        return b""
    finally:
        os.unlink(temporary_name)


# --- what is there, and how it will split ---------------------------------------------------------

@dataclass(frozen=True)
class SplitPlan:
    mode: str                                   # the data.split the Train page passes: signer | stratified
    signer_splits: dict[str, str]               # signer -> train | val | test under the signer split
    clip_counts: dict[str, int]                 # split -> usable clips under `mode`
    reason: str                                 # why this mode, for the user
    problems: list[str] = field(default_factory=list)   # what stops a run: record more first


@dataclass(frozen=True)
class RecordingsSummary:
    table: pd.DataFrame                         # one row per sign: clips per signer, total, target
    signs: list[str]                            # class folders, sorted (the no-sign class included)
    signers: list[str]
    split: SplitPlan
    warnings: list[str]                         # worth knowing; training still runs
    refused: list[FoundFile]                    # files the pipeline will not use, with their reasons

    @property
    def can_train(self) -> bool:
        return not self.split.problems


def discover_recordings(recordings_dir: Path) -> list[FoundFile]:
    """Everything in the recordings folder as the sample stage will see it; [] before the first clip."""
    return discover("folder", recordings_dir) if Path(recordings_dir).is_dir() else []


TABLE_COLUMNS = ("sign", "clips", "target", "status")    # around one column per signer


def signer_column(signer: str) -> str:
    """A signer's column in the clip table; never the same as one of TABLE_COLUMNS."""
    return f"{signer} (signer)" if signer in TABLE_COLUMNS else signer


def clip_table(usable: list[FoundFile], signs: list[str], signers: list[str], target: int) -> pd.DataFrame:
    """Clips per sign (rows, the no-sign class last) and signer (columns), with the total and the target."""
    rows = []
    for sign in signs:
        counts = {signer_column(signer): sum(1 for clip in usable if clip.label == sign and clip.signer == signer)
                  for signer in signers}
        total = sum(1 for clip in usable if clip.label == sign)
        rows.append({"sign": sign, **counts, "clips": total, "target": target,
                     "status": "enough" if total >= target else f"{target - total} more"})
    return pd.DataFrame(rows, columns=["sign", *map(signer_column, signers), "clips", "target", "status"])


def planned_splits(found: list[FoundFile], params: dict, recordings_dir: Path, mode: str) -> list[str]:
    """The split the sample stage will give each file under data.split `mode` (the library's one rule)."""
    data = {**params["data"], "source": "folder", "path": str(Path(recordings_dir).resolve()), "split": mode}
    return [planned_split(file.label, file.signer, file.path, file.given_split, {**params, "data": data})
            for file in found]


def split_counts(usable: list[FoundFile], splits: list[str]) -> dict[str, int]:
    return {name: sum(1 for split in splits if split == name) for name in ("train", "val", "test")}


def split_problems(usable: list[FoundFile], splits: list[str], signs: list[str]) -> list[str]:
    """What stops a run: a split without clips (train, val and test are all needed)."""
    counts = split_counts(usable, splits)
    problems = [f"no clip would be in the {name} split" for name, count in counts.items() if count == 0]
    if problems:
        problems = [f"{', '.join(problems)}: record more clips (each new clip lands in train, val or test "
                    "by a hash of its name)"]
    untrained = [sign for sign in signs
                 if not any(clip.label == sign and split == "train" for clip, split in zip(usable, splits))]
    if untrained:
        problems.append(f"{', '.join(repr(sign) for sign in untrained)} would have no training clip: "
                        "record more of it")
    return problems


def plan_split(usable: list[FoundFile], signs: list[str], params: dict, recordings_dir: Path) -> SplitPlan:
    """Held-out signers when that fills train, val and test; else clips split one by one, and why."""
    signers = sorted({clip.signer for clip in usable if clip.signer})
    by_signer = planned_splits(usable, params, recordings_dir, "signer")
    signer_splits = {clip.signer: split for clip, split in zip(usable, by_signer) if clip.signer}
    if len(signers) >= 2 and not split_problems(usable, by_signer, signs):
        held_out = ", ".join(f"{signer} ({split})" for signer, split in sorted(signer_splits.items())
                             if split != "train")
        return SplitPlan("signer", signer_splits, split_counts(usable, by_signer),
                         f"whole signers held out: {held_out}; the test measures people the model never saw")
    if len(signers) < 2:
        reason = (f"only one signer ({signers[0]})" if signers else "no signer named") + \
                 ": testing on people the model has never seen needs several, so clips are split one by one"
    else:
        filled = {split for split in signer_splits.values()}
        reason = (f"{len(signers)} signers all land in {' and '.join(sorted(filled))} under the held-out-signer "
                  "split, so clips are split one by one until more people record")
    per_clip = planned_splits(usable, params, recordings_dir, "stratified")
    return SplitPlan("stratified", signer_splits, split_counts(usable, per_clip), reason,
                     split_problems(usable, per_clip, signs))


def recordings_summary(recordings_dir: Path, params: dict, overrides: list[str] = ()) -> RecordingsSummary:
    """The table, the split and the warnings for the recordings folder, under params with `overrides`."""
    effective = apply_overrides(params, list(overrides))
    target = int(params["record"]["target_clips"])
    found = discover_recordings(recordings_dir)
    usable = [clip for clip in found if not clip.refusal]
    refused = [clip for clip in found if clip.refusal]
    signs = sorted({clip.label for clip in usable}, key=lambda sign: (sign == NO_SIGN_LABEL, sign))
    signers = sorted({clip.signer for clip in usable if clip.signer})
    split = plan_split(usable, signs, effective, recordings_dir) if usable else \
        SplitPlan("stratified", {}, {}, "no clips yet", ["no clips yet: record some"])
    return RecordingsSummary(clip_table(usable, signs, signers, target), signs, signers, split,
                             recording_warnings(usable, signs, signers, target, refused, split), refused)


def recording_warnings(usable: list[FoundFile], signs: list[str], signers: list[str], target: int,
                       refused: list[FoundFile], split: SplitPlan) -> list[str]:
    warnings = []
    real_signs = [sign for sign in signs if sign != NO_SIGN_LABEL]
    if usable and len(real_signs) < 2:
        warnings.append("Record at least two signs: with one, there is nothing to tell apart.")
    if usable and NO_SIGN_LABEL not in signs:
        warnings.append(f"No idle clips yet: choose \"No sign (idle)\" and record yourself at rest, fidgeting, or "
                        f"raising your hands without signing (class `{NO_SIGN_LABEL}`). Without them the model "
                        "names a sign even when you make none.")
    for sign in signs:
        count = sum(1 for clip in usable if clip.label == sign)
        if count < target:
            warnings.append(f"`{sign}` has {count} clip{'s' if count != 1 else ''} of the {target} asked "
                            "(record.target_clips).")
    if len(signers) == 1:
        warnings.append(f"Only one signer ({signers[0]}): held-out-signer testing cannot work, so the Train page "
                        "splits clips one by one (data.split=stratified), and the test figures say how well the "
                        "model knows you, not others. Ask someone else to record too.")
    elif len(signers) > 1 and split.mode != "signer":
        warnings.append(f"Held-out-signer testing is not possible yet: {split.reason}.")
    if refused:
        reasons = sorted({clip.refusal for clip in refused})
        warnings.append(f"{len(refused)} file{'s' if len(refused) != 1 else ''} in the folder will not be used: "
                        + "; ".join(reasons[:3]) + ("; …" if len(reasons) > 3 else "") + ".")
    return warnings
