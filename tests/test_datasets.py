"""Dataset layouts: every file found appears once, with its class, signer, split, frame range or refusal."""
from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from stages.lib.datasets import FoundFile, discover, wlasl_frame_range
from tests.conftest import gray_ramp_frames, write_frame_images, write_video


def relative_rows(found: list[FoundFile], root: Path) -> list[tuple]:
    """(path relative to root, label, refusal kind or '') for compact comparisons."""
    return [(f.path.relative_to(root).as_posix(), f.label, f.refusal.split(":")[0]) for f in found]


def touch(path: Path, content: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


# --- folder: <class>/<clip> ----------------------------------------------------------------------

def test_folder_reads_every_video_extension_in_any_case_and_unicode_class_names(tmp_path):
    for name in ("a.mp4", "b.AVI", "c.Mov", "d.mkv", "e.WEBM"):
        touch(tmp_path / "buenos días" / name)
    touch(tmp_path / "спасибо" / "clip.MP4")
    found = discover("folder", tmp_path)
    assert relative_rows(found, tmp_path) == [
        ("buenos días/a.mp4", "buenos días", ""), ("buenos días/b.AVI", "buenos días", ""),
        ("buenos días/c.Mov", "buenos días", ""), ("buenos días/d.mkv", "buenos días", ""),
        ("buenos días/e.WEBM", "buenos días", ""), ("спасибо/clip.MP4", "спасибо", ""),
    ]


def test_folder_class_names_are_nfc_normalised(tmp_path):
    decomposed = unicodedata.normalize("NFD", "días")        # how macOS writes folder names
    touch(tmp_path / decomposed / "clip.mp4")
    assert [f.label for f in discover("folder", tmp_path)] == [unicodedata.normalize("NFC", "días")]


def test_folder_lists_stray_files_and_empty_class_folders_with_their_reasons(tmp_path):
    touch(tmp_path / "hello" / "clip.mp4")
    touch(tmp_path / "hello" / ".DS_Store")
    touch(tmp_path / "hello" / "notes.txt")
    touch(tmp_path / "hello" / "._clip.mp4")                  # macOS resource fork
    touch(tmp_path / "hello" / "take2" / "clip.avi")           # nested: still class hello
    touch(tmp_path / "thanks" / "frame_0001.jpg")
    (tmp_path / "empty class").mkdir()
    touch(tmp_path / "README.md")
    found = {f.path.relative_to(tmp_path).as_posix(): f for f in discover("folder", tmp_path)}
    assert {path: (f.label, f.refusal) for path, f in found.items()} == {
        "hello/.DS_Store": ("hello", "not a video file: hidden file '.DS_Store'"),
        "hello/._clip.mp4": ("hello", "not a video file: macOS resource fork ('._' file)"),
        "hello/clip.mp4": ("hello", ""),
        "hello/notes.txt": ("hello", "not a video file: extension '.txt'"),
        "hello/take2/clip.avi": ("hello", ""),
        "thanks/frame_0001.jpg": ("thanks", "not a video file: extension '.jpg' "
                                            "(frame images? use data.source: frames)"),
        "empty class": ("empty class", "empty class folder: no files"),
        "README.md": ("", "file outside any class folder"),
    }


def test_folder_reads_the_signer_from_recording_names_and_only_from_them(tmp_path):
    for name in ("ana_20261201-143000.mp4", "ana maria_20261201-143001.MP4", "bob_smith_20261202-090000.webm",
                 "clip01.mp4", "ana_2026-12-01.mp4", "ana_20261301-143000.mp4", "_20261201-143000.mp4",
                 "ana_20261201-143000x.mp4"):
        touch(tmp_path / "wave" / name)
    touch(tmp_path / "wave" / "ana_20261201-143005.k3j9.partial.mp4")     # a recording being written
    found = [(f.path.name, f.signer, f.refusal) for f in discover("folder", tmp_path)]
    assert found == [
        ("_20261201-143000.mp4", "", ""),                         # no signer before the time
        ("ana maria_20261201-143001.MP4", "ana maria", ""),
        ("ana_2026-12-01.mp4", "", ""),                           # not the app's time format
        ("ana_20261201-143000.mp4", "ana", ""),
        ("ana_20261201-143000x.mp4", "", ""),
        ("ana_20261201-143005.k3j9.partial.mp4", "",
         "partial file: a recording or copy that has not finished (its name ends in .partial.mp4)"),
        ("ana_20261301-143000.mp4", "", ""),                      # month 13: digits, but no time
        ("bob_smith_20261202-090000.webm", "bob_smith", ""),      # underscores inside the signer are kept
        ("clip01.mp4", "", ""),
    ]


def test_recording_signers_hold_whole_people_out_under_the_signer_split(tmp_path):
    from stages.lib.splits import assign_split
    for signer in ("ana", "bob", "carla", "dev", "eli", "fay"):
        for second in range(3):
            touch(tmp_path / "wave" / f"{signer}_20261201-14300{second}.mp4")
    splits: dict[str, set[str]] = {}
    for clip in discover("folder", tmp_path):
        split = assign_split(clip.label, clip.signer, clip.path.name, "", 0.2, 0.2, seed=42, mode="signer")
        splits.setdefault(clip.signer, set()).add(split)
    assert sorted(splits) == ["ana", "bob", "carla", "dev", "eli", "fay"]
    assert all(len(assigned) == 1 for assigned in splits.values())      # each person in one split only


# --- frames: <class>/<clip>/<images> -------------------------------------------------------------

def test_frames_layout_finds_clip_folders_and_lists_everything_else(tmp_path):
    write_frame_images(tmp_path / "hello" / "clip01", gray_ramp_frames(3, 8, 8))
    (tmp_path / "hello" / "clip02").mkdir()                          # no images: the stage refuses it
    touch(tmp_path / "hello" / "clip01" / "Thumbs.db")
    (tmp_path / "hello" / "clip01" / "extra").mkdir()
    touch(tmp_path / "hello" / "loose.jpg")
    (tmp_path / "thanks").mkdir()
    touch(tmp_path / "notes.txt")
    found = discover("frames", tmp_path)
    assert [(f.path.relative_to(tmp_path).as_posix(), f.label, f.refusal) for f in found] == [
        ("hello/clip01", "hello", ""),
        ("hello/clip01/Thumbs.db", "hello", "not a frame image: extension '.db'"),
        ("hello/clip01/extra", "hello", "folder inside a clip folder: the frames layout is <class>/<clip>/<images>"),
        ("hello/clip02", "hello", ""),
        ("hello/loose.jpg", "hello", "not in a clip folder: the frames layout is <class>/<clip>/<images>"),
        ("thanks", "thanks", "empty class folder: no files"),
        ("notes.txt", "", "file outside any class folder"),
    ]


# --- lsa64: SSS_PPP_RRR.mp4 ----------------------------------------------------------------------

def test_lsa64_takes_sign_and_signer_from_the_file_name_and_refuses_other_names(tmp_path):
    for name in ("001_004_002.mp4", "064_010_005.MP4", "all_cut/002_001_001.mp4"):
        touch(tmp_path / name)
    touch(tmp_path / "all_cut" / "001_004_002.mp4")        # the same clip again in another folder
    touch(tmp_path / "my_clip.mp4")
    touch(tmp_path / "1_4_2.mp4")
    touch(tmp_path / "001_004_002.txt")
    found = [(f.path.relative_to(tmp_path).as_posix(), f.label, f.signer, f.refusal)
             for f in discover("lsa64", tmp_path)]
    bad_name = "file name not in LSA64 form: expected SSS_PPP_RRR (sign_signer_repetition, e.g. 001_004_002.mp4)"
    assert found == [
        ("001_004_002.mp4", "001", "004", ""),
        ("001_004_002.txt", "", "", "not a video file: extension '.txt'"),
        ("064_010_005.MP4", "064", "010", ""),
        ("1_4_2.mp4", "", "", bad_name),
        ("all_cut/001_004_002.mp4", "001", "004",
         "duplicate clip: same sign, signer and repetition as 001_004_002.mp4"),
        ("all_cut/002_001_001.mp4", "002", "001", ""),
        ("my_clip.mp4", "", "", bad_name),
    ]


# --- wlasl: index.json + videos/<video_id>.mp4 ---------------------------------------------------

def write_wlasl(root: Path, entries: list[dict], name: str = "WLASL_v0.3.json") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(json.dumps(entries))
    (root / "videos").mkdir(exist_ok=True)
    return root


def instance(video_id: str, split: str = "train", signer: int | None = 1, start: int = 1, end: int = -1) -> dict:
    return {"video_id": video_id, "split": split, "signer_id": signer, "frame_start": start,
            "frame_end": end, "bbox": [0, 0, 10, 10], "fps": 25, "url": "https://example.invalid"}


def test_wlasl_reads_the_index_and_lists_missing_and_unindexed_videos(tmp_path):
    write_wlasl(tmp_path, [
        {"gloss": "book", "instances": [instance("00001", "train", 7), instance("00002", "test", 8, 11, 20)]},
        {"gloss": "drink", "instances": [instance("00003", "val", None), instance("00001", "train", 9)]},
    ])
    touch(tmp_path / "videos" / "00001.mp4")
    touch(tmp_path / "videos" / "00002.mp4")
    touch(tmp_path / "videos" / "99999.mp4")                  # not in the index
    touch(tmp_path / "videos" / ".DS_Store")
    touch(tmp_path / "nslt_100.json", b'{"00001": {"subset": "train"}}')   # another JSON: not an index
    found = discover("wlasl", tmp_path)
    assert [(f.path.relative_to(tmp_path).as_posix(), f.label, f.signer, f.given_split, f.frame_range, f.refusal)
            for f in found] == [
        ("videos/00001.mp4", "book", "7", "train", None, ""),
        ("videos/00002.mp4", "book", "8", "test", (10, 19), ""),
        ("videos/00003.mp4", "drink", "", "val", None, "video file missing"),
        ("videos/00001.mp4", "drink", "9", "train", None,
         "duplicate video_id in the index: already used for gloss 'book'"),
        ("videos/.DS_Store", "", "", "", None, "not a video file: hidden file '.DS_Store'"),
        ("videos/99999.mp4", "", "", "", None, "not in the index"),
    ]


@pytest.mark.parametrize("start,end,expected", [(1, -1, None), (1, 30, (0, 29)), (11, 20, (10, 19)),
                                                (5, -1, (4, -1)), (0, -1, None)])
def test_wlasl_frame_ranges_become_zero_based_inclusive(start, end, expected):
    assert wlasl_frame_range({"frame_start": start, "frame_end": end}) == expected


def test_wlasl_without_an_index_or_videos_folder_says_what_is_expected(tmp_path):
    (tmp_path / "videos").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no WLASL index in .*WLASL_v0.3.json"):
        discover("wlasl", tmp_path)
    write_wlasl(tmp_path / "second", [])
    (tmp_path / "second" / "videos").rmdir()
    with pytest.raises(FileNotFoundError, match=r"videos not found: the wlasl layout is"):
        discover("wlasl", tmp_path / "second")
    write_wlasl(tmp_path, [], name="a.json")
    write_wlasl(tmp_path, [], name="b.json")
    with pytest.raises(ValueError, match=r"several WLASL indexes in .*: a.json, b.json; keep one"):
        discover("wlasl", tmp_path)


# --- every layout --------------------------------------------------------------------------------

def test_an_unknown_source_or_missing_root_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"data.source 'youtube' has no reader; allowed values: synthetic, "
                                         r"folder, frames, lsa64, wlasl"):
        discover("youtube", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"data.path .*nowhere is not a folder"):
        discover("folder", tmp_path / "nowhere")


def test_real_videos_discovered_in_a_folder_tree_keep_their_order(tmp_path):
    for label in ("b", "a"):
        for index in (2, 10, 1):
            write_video(tmp_path / label / f"clip{index}.avi", gray_ramp_frames(2, 8, 8))
    paths = [f.path.relative_to(tmp_path).as_posix() for f in discover("folder", tmp_path)]
    assert paths == sorted(paths)                                 # stable: the same order on every run
