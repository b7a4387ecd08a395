"""The recordings folder: typed names checked, clips written whole or not at all, the table and its warnings.

Usage:
    python -m pytest -q tests/test_recordings.py
"""
from __future__ import annotations

import subprocess
import sys
import unicodedata
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import yaml

from app.recordings import (
    MAX_NAME_CHARACTERS,
    NameRefused,
    RecordingError,
    check_sign_name,
    check_signer_name,
    is_recording_of,
    preview_webm,
    recording_path,
    recordings_summary,
    write_recording,
)
from stages.lib.datasets import discover
from tests.conftest import REPO_ROOT, read_video, write_video

PARAMS = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
STARTED = datetime(2026, 12, 1, 14, 30, 0)


# --- names ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("typed, message", [
    ("../etc", r"may not contain /"),
    ("..", r"may not contain '\.\.'"),
    ("a..b", r"may not contain '\.\.'"),
    ("wave/../../x", r"may not contain /"),
    ("C:\\temp", r"may not contain : \\"),
    ("/etc/passwd", r"may not contain /"),
    (".hidden", r"may not start with a dot"),
    ("trailing.", r"may not end with a dot or a space"),
    ("bell\x07", r"control or invisible character \(U\+0007\)"),
    ("new\nline", r"control or invisible character \(U\+000A\)"),
    ("right\u202eleft", r"control or invisible character \(U\+202E\)"),     # a bidi override hides the real name
    ("zero\u200bwidth", r"control or invisible character \(U\+200B\)"),
    ("what?", r"may not contain \?"),
    ("   ", r"Type a sign name"),
    ("x" * (MAX_NAME_CHARACTERS + 1), rf"{MAX_NAME_CHARACTERS + 1} characters long; at most {MAX_NAME_CHARACTERS}"),
    ("NUL", r"'NUL' is a device name on Windows"),
    ("com1.txt", r"'com1.txt' is a device name on Windows"),
    ("_none", r"'_none' is the no-sign class: choose \"No sign \(idle\)\""),
    ("_mine", r"starting with '_' are kept for the pipeline's own classes"),
])
def test_a_typed_sign_name_never_becomes_a_path_unchecked(typed, message):
    with pytest.raises(NameRefused, match=message):
        check_sign_name(typed, existing_signs=["wave"])


def test_names_are_normalised_and_the_idle_class_only_comes_when_meant():
    decomposed = unicodedata.normalize("NFD", "  gracías ")       # as macOS spells it, with spaces around
    assert check_sign_name(decomposed) == unicodedata.normalize("NFC", "gracías")
    assert check_sign_name("buenos días") == "buenos días"
    assert check_sign_name("anything typed", idle=True) == "_none"
    assert check_signer_name(" Ana María ") == "Ana María"
    with pytest.raises(NameRefused, match="Type a signer name"):
        check_signer_name("")
    with pytest.raises(NameRefused, match=r"'Wave' differs from the sign 'wave' only in letter case"):
        check_sign_name("Wave", existing_signs=["wave"])
    assert check_sign_name("wave", existing_signs=["wave"]) == "wave"            # typing an existing sign picks it


def test_a_recording_path_is_inside_the_folder_and_names_its_signer(tmp_path):
    path = recording_path(tmp_path, "thanks", "ana", STARTED)
    assert path == tmp_path / "thanks" / "ana_20261201-143000.mp4"
    with pytest.raises(NameRefused):
        recording_path(tmp_path, "../outside", "ana", STARTED)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "recordings").mkdir()
    (tmp_path / "recordings" / "linked").symlink_to(tmp_path / "elsewhere")   # a sign folder leading out
    with pytest.raises(RecordingError, match="outside the recordings folder"):
        recording_path(tmp_path / "recordings", "linked", "ana", STARTED)


# --- writing ----------------------------------------------------------------------------------------

def camera_frames(count: int = 30) -> list[np.ndarray]:
    """(48, 64, 3) uint8 BGR frames, a gray that brightens frame by frame (readable back after mp4v)."""
    return [np.full((48, 64, 3), 20 + 6 * index, np.uint8) for index in range(count)]


def test_a_clip_is_written_at_the_camera_rate_and_read_as_its_signers(tmp_path):
    frames = camera_frames(30)
    path = write_recording(frames, 29.97, tmp_path, "thanks", "ana", STARTED)
    assert path == tmp_path / "thanks" / "ana_20261201-143000.mp4"
    decoded, fps = read_video(path)
    assert fps == pytest.approx(29.97, abs=0.01)
    assert len(decoded) == 30 and decoded[0].shape == (48, 64, 3)         # as the camera gave it: no resizing
    assert np.abs(np.array([frame.mean() for frame in decoded]) - [frame.mean() for frame in frames]).max() < 4
    assert [(clip.label, clip.signer, clip.refusal) for clip in discover("folder", tmp_path)] == [("thanks", "ana", "")]
    assert preview_webm(path)[:4] == b"\x1aE\xdf\xa3"                     # a WebM (EBML) file the browser plays


def test_a_clip_never_replaces_another_and_leaves_no_partial_file(tmp_path):
    first = write_recording(camera_frames(), 25, tmp_path, "thanks", "ana", STARTED)
    before = first.read_bytes()
    second = write_recording(camera_frames(12), 25, tmp_path, "thanks", "ana", STARTED)   # the same second
    assert second.name == "ana_20261201-143001.mp4" and first.read_bytes() == before
    assert sorted(path.name for path in (tmp_path / "thanks").iterdir()) == [first.name, second.name]


def test_a_folder_that_cannot_be_written_gives_a_message_and_no_file(tmp_path):
    (tmp_path / "thanks").write_text("a file where the sign's folder should be")
    with pytest.raises(RecordingError, match="could not be written"):
        write_recording(camera_frames(), 25, tmp_path, "thanks", "ana", STARTED)
    assert [path.name for path in tmp_path.iterdir()] == ["thanks"] and (tmp_path / "thanks").is_file()


def test_a_full_disk_mid_write_leaves_no_half_file_and_says_so(tmp_path):
    """The disk fills up while the clip is written: the file size limit makes every write past 20 kB fail,
    as ENOSPC would (in a child process, so the limit binds nothing else)."""
    script = f"""
import resource, signal, sys
from datetime import datetime
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)          # a write past the limit fails instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
import numpy as np
from app.recordings import RecordingError, write_recording
frames = [np.random.default_rng(index).integers(0, 255, (120, 160, 3), np.uint8) for index in range(40)]
try:
    write_recording(frames, 25, {str(tmp_path)!r}, "thanks", "ana", datetime(2026, 12, 1, 14, 30))
except RecordingError as error:
    print("REFUSED:", error)
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert "REFUSED: The clip could not be written" in result.stdout, result.stdout + result.stderr
    assert "is the disk full?" in result.stdout
    assert list((tmp_path / "thanks").iterdir()) == []                   # neither the clip nor a .partial


def test_only_clips_of_the_folder_count_as_recordings(tmp_path):
    clip = write_recording(camera_frames(), 25, tmp_path / "recordings", "thanks", "ana", STARTED)
    assert is_recording_of(clip, tmp_path / "recordings")
    outside = write_video(tmp_path / "other.mp4", np.stack(camera_frames()), fourcc="mp4v")
    assert not is_recording_of(outside, tmp_path / "recordings")
    assert not is_recording_of(tmp_path / "recordings" / "thanks", tmp_path / "recordings")


# --- the table and what to record next --------------------------------------------------------------

def touch_clips(root: Path, sign: str, signer: str, count: int, first_second: int = 0) -> None:
    for second in range(first_second, first_second + count):
        path = root / sign / f"{signer}_20261201-14{second // 60:02d}{second % 60:02d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not decoded here")        # discovery and splitting look at names only


def test_the_table_counts_clips_per_sign_and_signer_and_asks_for_what_is_missing(tmp_path):
    touch_clips(tmp_path, "wave", "ana", 12)
    touch_clips(tmp_path, "thanks", "ana", 4, 20)
    (tmp_path / "thanks" / "notes.txt").write_text("x")
    summary = recordings_summary(tmp_path, PARAMS)
    assert summary.table.to_dict("records") == [
        {"sign": "thanks", "ana": 4, "clips": 4, "target": 10, "status": "6 more"},
        {"sign": "wave", "ana": 12, "clips": 12, "target": 10, "status": "enough"},
    ]
    warnings = "\n".join(summary.warnings)
    assert "No idle clips yet" in warnings and "`_none`" in warnings
    assert "`thanks` has 4 clips of the 10 asked" in warnings and "`wave` has" not in warnings
    assert "Only one signer (ana): held-out-signer testing cannot work" in warnings
    assert "data.split=stratified" in warnings
    assert "1 file in the folder will not be used: not a video file: extension '.txt'" in warnings
    assert summary.split.mode == "stratified" and "only one signer (ana)" in summary.split.reason


def test_several_signers_are_held_out_when_they_fill_every_split(tmp_path):
    signers = [f"p{index}" for index in range(12)]
    for number, signer in enumerate(signers):
        for sign in ("wave", "thanks", "_none"):
            touch_clips(tmp_path, sign, signer, 2, number * 2)
    summary = recordings_summary(tmp_path, PARAMS)
    assert summary.split.mode == "signer" and summary.can_train
    assert set(summary.split.signer_splits.values()) == {"train", "val", "test"}
    assert summary.table.columns.tolist() == ["sign", *sorted(signers), "clips", "target", "status"]
    assert summary.table["sign"].tolist() == ["thanks", "wave", "_none"]        # the idle class last
    assert not any("Held-out-signer" in warning or "Only one signer" in warning for warning in summary.warnings)


def test_two_signers_who_cannot_fill_every_split_fall_back_to_a_per_clip_split(tmp_path):
    for sign in ("wave", "thanks", "_none"):
        touch_clips(tmp_path, sign, "ana", 6)
        touch_clips(tmp_path, sign, "ben", 6, 10)
    summary = recordings_summary(tmp_path, PARAMS)
    assert summary.split.mode == "stratified"                  # two people cannot make train, val and test
    assert "Held-out-signer testing is not possible yet: 2 signers all land in" in "\n".join(summary.warnings)
    assert sum(summary.split.clip_counts.values()) == 36


def test_too_few_clips_to_fill_the_splits_stop_a_run_with_what_to_do(tmp_path):
    touch_clips(tmp_path, "wave", "ana", 1)
    touch_clips(tmp_path, "thanks", "ana", 1, 5)
    summary = recordings_summary(tmp_path, PARAMS)
    assert not summary.can_train
    assert any("record more clips" in problem for problem in summary.split.problems)
    assert not recordings_summary(tmp_path / "nothing yet", PARAMS).can_train


def test_the_split_follows_the_overrides_the_run_will_get(tmp_path):
    for sign in ("wave", "thanks"):
        touch_clips(tmp_path, sign, "ana", 10, 0 if sign == "wave" else 30)
    plain = recordings_summary(tmp_path, PARAMS).split.clip_counts
    halved = recordings_summary(tmp_path, PARAMS, ["sample.val_fraction=0.4", "sample.test_fraction=0.4"])
    assert halved.split.clip_counts["train"] < plain["train"]
