"""The sample stage on real little datasets: every file in the manifest, bad ones refused with a reason."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from stages.evaluate import refusal_counts
from stages.lib.compute import WorkerError
from stages.lib.datasets import FoundFile
from stages.lib.params import ParamsError, validate_params
from stages.lib.storage import clip_slice
from stages.lib.video import ClipRefused, Sampling, fixed_rate_indices, sample_clip, sample_video
from stages.sample import SampleJob, check_classes_have_clips, check_splits_have_clips, plan_jobs, sample_one
from tests.conftest import REPO_ROOT, deep_update, run, run_unchecked, set_params, write_frame_images, write_video

SAMPLE = [sys.executable, "-m", "stages.sample"]
DEFAULTS = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def ramp(count: int, step: int = 8, height: int = 24, width: int = 32) -> np.ndarray:
    """Frame i is a flat gray of brightness 5 + step * i (BGR), so sampled indices can be read back."""
    return np.stack([np.full((height, width, 3), 5 + step * i, np.uint8) for i in range(count)])


def centre_brightness(frames: np.ndarray) -> np.ndarray:
    """(T, S, S, 3) RGB -> (T,) gray level at the centre (inside any letterbox)."""
    size = frames.shape[1]
    return frames[:, size // 2, size // 2, 0].astype(int)


def read_manifest(root: Path) -> pd.DataFrame:
    # dtype=str: LSA64 labels such as "001" must stay strings
    return pd.read_csv(root / "data/manifest.csv", keep_default_na=False, dtype=str)


def sampling(fps: float = 25, image_size: int = 32, min_frames: int = 1, max_seconds: float = 0.0) -> Sampling:
    return Sampling(fps=fps, image_size=image_size, min_frames=min_frames, max_seconds=max_seconds)


def rows_by_path(manifest: pd.DataFrame) -> dict[str, tuple[str, str]]:
    return {row.path: (row.status, row.reason) for row in manifest.itertuples()}


def write_unknown_codec_video(path: Path) -> Path:
    """A well-formed AVI whose codec tag no decoder knows (MJPG renamed to ZZZZ)."""
    write_video(path, ramp(12))
    path.write_bytes(path.read_bytes().replace(b"MJPG", b"ZZZZ"))
    return path


def write_truncated_mp4(path: Path) -> Path:
    """A valid mp4 cut to half its bytes, as an interrupted download leaves it."""
    write_video(path, ramp(12), fourcc="mp4v")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# --- the stage, end to end, on every kind of bad input -------------------------------------------

@pytest.fixture
def bad_inputs_workspace(stage_workspace):
    root = stage_workspace
    data = root / "mydata"
    write_video(data / "hello" / "good.avi", ramp(12))
    write_video(data / "hello" / "short.avi", ramp(4))                    # 4 frames: shorter than a window, kept
    write_video(data / "hello" / "too_short.avi", ramp(2))                # < min_frames 3: refused
    (data / "hello" / "empty.mp4").touch()
    write_truncated_mp4(data / "hello" / "truncated.mp4")
    (data / "hello" / "notes.mp4").write_text("this is not a video\n" * 40)
    (data / "hello" / "random.webm").write_bytes(np.random.default_rng(0).bytes(4000))
    write_unknown_codec_video(data / "hello" / "codec.avi")
    (data / "hello" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (data / "hello" / "notes.txt").write_text("recorded on Tuesday")
    write_video(data / "buenos días" / "clip.MOV", ramp(9, height=40, width=30), fps=5)
    write_video(data / "thanks" / "clip.MKV", ramp(20), fps=60)
    (data / "empty").mkdir()
    (data / "broken").mkdir()
    (data / "broken" / "zero.mp4").touch()
    set_params(root, {"data": {"source": "folder", "path": "mydata", "split": "stratified"},
                      "sample": {"fps": 25, "min_frames": 3, "val_fraction": 0.0, "test_fraction": 0.0}})
    return root


def test_every_file_appears_in_the_manifest_with_its_status_and_reason(bad_inputs_workspace):
    root = bad_inputs_workspace
    result = run(SAMPLE, root)
    manifest = read_manifest(root)
    cannot_open = "cannot open as video: not a video file, truncated, or an unsupported codec"
    assert rows_by_path(manifest) == {
        "mydata/broken/zero.mp4": ("refused", "empty file (0 bytes)"),
        "mydata/buenos días/clip.MOV": ("ok", ""),
        "mydata/empty": ("refused", "empty class folder: no files"),
        "mydata/hello/.DS_Store": ("refused", "not a video file: hidden file '.DS_Store'"),
        "mydata/hello/codec.avi": ("refused", cannot_open),
        "mydata/hello/empty.mp4": ("refused", "empty file (0 bytes)"),
        "mydata/hello/good.avi": ("ok", ""),
        "mydata/hello/notes.mp4": ("refused", cannot_open),
        "mydata/hello/notes.txt": ("refused", "not a video file: extension '.txt'"),
        "mydata/hello/random.webm": ("refused", cannot_open),
        "mydata/hello/short.avi": ("ok", ""),
        "mydata/hello/too_short.avi": ("refused", "too short: 2 frames at 25 frames/s, need at least 3 "
                                                  "(sample.min_frames)"),
        "mydata/hello/truncated.mp4": ("refused", cannot_open),
        "mydata/thanks/clip.MKV": ("ok", ""),
    }
    assert len(manifest) == 14                                     # every file found, nothing dropped
    ok = manifest[manifest["status"] == "ok"].set_index("path")
    assert ok.loc["mydata/buenos días/clip.MOV", "fps"] == "5.0"
    assert ok.loc["mydata/thanks/clip.MKV", ["num_frames", "fps"]].tolist() == ["20", "60.0"]

    assert "sampled 4 clips; refused 10 files" in result.stdout
    assert ("WARNING: class 'broken' has no usable clip: all 1 of its files were refused "
            "(1 empty file (0 bytes)); it cannot be learned") in result.stdout
    assert "WARNING: class 'empty' has no usable clip: all 1 of its files were refused" in result.stdout
    assert "Traceback" not in result.stderr

    with h5py.File(root / "data/frames.h5", "r") as handle:
        offsets = handle["offsets"][...]
        # At 25 frames/s: 9 frames at 5 fps repeat (five ticks each), 12 and 4 at 25 fps stay, 20 at 60 fps thin out.
        lengths = [len(fixed_rate_indices(count, fps, 25)) for count, fps in ((9, 5), (12, 25), (4, 25), (20, 60))]
        assert lengths == [41, 12, 4, 8] and np.diff(offsets).tolist() == lengths
        assert handle["frames"].shape == (sum(lengths), 64, 64, 3)
        assert handle["paths"].asstr()[...].tolist() == ok.index.tolist()
        assert handle["labels"].asstr()[...].tolist() == ["buenos días", "hello", "hello", "thanks"]
        assert handle.attrs["sample_fps"] == 25
        short = handle["frames"][clip_slice(offsets, ok.index.get_loc("mydata/hello/short.avi"))]
    # A clip shorter than a window keeps its own frames: nothing padded or invented here.
    assert np.all(np.abs(centre_brightness(short) - (5 + 8 * np.arange(4))) <= 4)

    counts = refusal_counts(root / "data/manifest.csv")
    assert counts == {
        "num_files_found": 14, "num_clips_used": 4, "num_files_refused": 10,
        "refused_by_reason": {"cannot open as video": 4, "empty file (0 bytes)": 2, "not a video file": 2,
                              "empty class folder": 1, "too short": 1},
    }


def test_on_ray_every_file_gets_the_same_manifest_row_and_the_outputs_are_the_same_bytes(bad_inputs_workspace,
                                                                                          ray_cluster):
    root = bad_inputs_workspace
    run(SAMPLE, root)
    local_frames, local_manifest = (root / "data/frames.h5").read_bytes(), (root / "data/manifest.csv").read_bytes()
    set_params(root, {"compute": {"engine": "ray", "address": ray_cluster}})
    result = run(SAMPLE, root)
    assert f"Ray at {ray_cluster}" in result.stdout and "sampled 4 clips; refused 10 files" in result.stdout
    assert (root / "data/manifest.csv").read_bytes() == local_manifest      # bad files: the same rows, reasons
    assert (root / "data/frames.h5").read_bytes() == local_frames


def test_a_worker_that_cannot_see_a_found_file_stops_the_run_instead_of_refusing_it(tmp_path):
    gone = FoundFile(tmp_path / "hello" / "clip.mp4", "hello")             # found by the driver, not here
    with pytest.raises(WorkerError, match=r"cannot see .*clip.mp4: every machine of the cluster needs the data"):
        sample_one(SampleJob(gone, "mydata/hello/clip.mp4", "train", sampling(), 0.0))
    refused = FoundFile(tmp_path / "hello" / "empty.mp4", "hello", refusal="empty file (0 bytes)")
    row = sample_one(SampleJob(refused, "mydata/hello/empty.mp4", "train", sampling(), 0.0)).row
    assert (row["status"], row["reason"]) == ("refused", "empty file (0 bytes)")   # a bad file stays a row


def test_a_run_with_no_usable_clip_fails_after_writing_the_manifest(stage_workspace):
    root = stage_workspace
    (root / "mydata" / "hello").mkdir(parents=True)
    (root / "mydata" / "hello" / "empty.mp4").touch()
    set_params(root, {"data": {"source": "folder", "path": "mydata"}})
    result = run_unchecked(SAMPLE, root)
    assert result.returncode == 1
    assert "sample: not one usable clip among 1 files found under mydata (data.source: folder)" in result.stderr
    assert "Traceback" not in result.stderr
    assert rows_by_path(read_manifest(root)) == {"mydata/hello/empty.mp4": ("refused", "empty file (0 bytes)")}


def test_a_wrong_data_path_or_bad_param_fails_at_once_with_a_message(stage_workspace):
    root = stage_workspace
    set_params(root, {"data": {"source": "folder", "path": "nowhere"}})
    result = run_unchecked(SAMPLE, root)
    assert result.returncode == 1 and "sample: data.path nowhere is not a folder" in result.stderr
    assert "Traceback" not in result.stderr
    set_params(root, {"data": {"source": "folder", "path": "mydata", "split": "by_person"}})
    result = run_unchecked(SAMPLE, root)
    assert result.returncode == 1
    assert "data.split is 'by_person'; allowed values: given, signer, stratified" in result.stderr


# --- params --------------------------------------------------------------------------------------

def data_params(**changes) -> dict:
    return deep_update(yaml.safe_load(yaml.safe_dump(DEFAULTS)), {"data": changes})


@pytest.mark.parametrize("changes,message", [
    ({"source": "kinetics"}, r"data.source is 'kinetics'; allowed values: synthetic, folder, frames, lsa64, wlasl"),
    ({"split": "random"}, r"data.split is 'random'; allowed values: given, signer, stratified"),
    ({"source": "folder", "split": "given"},
     r"data.split is 'given' but data.source 'folder' fixes no split; given needs one of: synthetic, wlasl; "
     r"otherwise use one of: signer, stratified"),
    ({"frames_fps": -1}, r"data.frames_fps is -1; it must be at least 0"),
])
def test_bad_data_params_name_the_allowed_values(changes, message):
    with pytest.raises(ParamsError, match=message):
        validate_params(data_params(**changes))


def test_split_fractions_must_leave_training_clips():
    params = deep_update(yaml.safe_load(yaml.safe_dump(DEFAULTS)),
                         {"sample": {"val_fraction": 0.5, "test_fraction": 0.5}})
    with pytest.raises(ParamsError, match=r"must leave clips for training"):
        validate_params(params)


# --- split modes ---------------------------------------------------------------------------------

def planned_splits(found: list[FoundFile], source: str, split: str, root: str = "mydata") -> list[str]:
    params = deep_update(yaml.safe_load(yaml.safe_dump(DEFAULTS)),
                         {"data": {"source": source, "path": root, "split": split}})
    return [job.split for job in plan_jobs(found, params)]


def signer_clips(count_signers: int = 40, clips_each: int = 5, given: str = "") -> list[FoundFile]:
    return [FoundFile(Path(f"mydata/videos/{signer}_{clip}.mp4"), f"sign{clip}", signer=f"p{signer}",
                      given_split=given) for signer in range(count_signers) for clip in range(clips_each)]


def test_synthetic_data_always_keeps_its_given_split():
    found = signer_clips(given="val")
    for mode in ("given", "signer", "stratified"):
        assert set(planned_splits(found, "synthetic", mode)) == {"val"}


def test_given_split_is_kept_and_signer_mode_ignores_it_but_keeps_signers_apart():
    found = signer_clips(given="test")
    assert set(planned_splits(found, "wlasl", "given")) == {"test"}
    by_signer: dict[str, set[str]] = {}
    for clip, split in zip(found, planned_splits(found, "wlasl", "signer")):
        by_signer.setdefault(clip.signer, set()).add(split)
    assert all(len(splits) == 1 for splits in by_signer.values())       # no signer in two splits
    assert set().union(*by_signer.values()) == {"train", "val", "test"}


def test_an_unknown_given_split_refuses_that_clip_only():
    found = [FoundFile(Path("mydata/videos/1.mp4"), "book", "1", given_split="holdout"),
             FoundFile(Path("mydata/videos/2.mp4"), "book", "1", given_split="train")]
    params = deep_update(yaml.safe_load(yaml.safe_dump(DEFAULTS)),
                         {"data": {"source": "wlasl", "path": "mydata", "split": "given"}})
    jobs = plan_jobs(found, params)
    assert [(job.found.refusal, job.split) for job in jobs] == [
        ("unknown split in the index: split 'holdout' in the dataset index; allowed: train, val, test", ""),
        ("", "train")]


def test_stratified_mode_ignores_signers():
    found = signer_clips()
    by_signer: dict[str, set[str]] = {}
    for clip, split in zip(found, planned_splits(found, "lsa64", "stratified")):
        by_signer.setdefault(clip.signer, set()).add(split)
    assert any(len(splits) > 1 for splits in by_signer.values())


def test_splits_do_not_move_when_clips_are_added_or_the_dataset_is_moved():
    def clips(root: str, count: int) -> list[FoundFile]:
        return [FoundFile(Path(f"{root}/hello/{index}.mp4"), "hello") for index in range(count)]
    before = planned_splits(clips("mydata", 40), "folder", "signer")
    after = planned_splits(clips("mydata", 50), "folder", "signer")      # ten clips added
    moved = planned_splits(clips("/mnt/elsewhere", 40), "folder", "signer", root="/mnt/elsewhere")
    assert after[:40] == before and moved == before
    assert set(before) == {"train", "val", "test"}


def test_a_class_without_a_training_clip_is_named():
    manifest = pd.DataFrame({"label": ["a", "a", "b", ""], "status": ["ok", "ok", "refused", "refused"],
                             "split": ["val", "test", "train", "train"],
                             "reason": ["", "", "too short: 2 frames", "file outside any class folder"]})
    assert check_classes_have_clips(manifest) == [
        "class 'a' has no usable training clip (usable clips: 2, all in test and val); it cannot be learned",
        "class 'b' has no usable clip: all 1 of its files were refused (1 too short); it cannot be learned",
    ]


def test_an_empty_split_is_named_unless_its_fraction_is_zero():
    manifest = pd.DataFrame({"status": ["ok", "ok", "refused"], "split": ["train", "val", "test"]})
    assert check_splits_have_clips(manifest, val_fraction=0.2, test_fraction=0.2) == [
        "split 'test' has no usable clip: with few signers or clips the hashed split can leave one empty; "
        "try another base.seed, more clips, or data.split: stratified"]
    assert check_splits_have_clips(manifest, val_fraction=0.2, test_fraction=0.0) == []


# --- clips as users record them ------------------------------------------------------------------

@pytest.mark.parametrize("height,width,fps,count", [
    (48, 96, 5.0, 5),        # landscape, slow camera, very short
    (96, 48, 60.0, 90),      # portrait phone clip, fast camera, long
    (50, 50, 30.0, 7),       # square, odd size, shorter than a window
    (24, 32, 25.0, 40),
])
def test_clips_of_any_resolution_orientation_and_rate_give_frames_at_the_fixed_rate(tmp_path, height, width, fps,
                                                                                     count):
    frames = np.stack([np.full((height, width, 3), 5 + (200 * i) // count, np.uint8) for i in range(count)])
    clip = sample_video(write_video(tmp_path / "clip.avi", frames, fps=fps), sampling(fps=10, min_frames=1))
    indices = fixed_rate_indices(count, fps, 10)
    assert clip.frames.shape == (len(indices), 32, 32, 3) and clip.frames.dtype == np.uint8
    assert abs(len(clip.frames) - count / fps * 10) <= 1                    # a second is 10 frames, whatever the camera
    assert clip.num_frames == count and clip.fps == pytest.approx(fps)
    expected = 5 + (200 * indices) // count
    assert np.all(np.abs(centre_brightness(clip.frames) - expected) <= 4)
    if height > width:
        assert clip.frames[:, :, 0].max() <= 8                       # black bars left and right
    if width > height:
        assert clip.frames[:, 0, :].max() <= 8                       # black bars top and bottom


def test_a_slow_camera_repeats_frames_and_clips_below_min_frames_are_refused(tmp_path):
    path = write_video(tmp_path / "four.avi", ramp(4), fps=5)                       # 0.8 s
    clip = sample_video(path, sampling(fps=10, image_size=16, min_frames=4))
    assert len(clip.frames) == 7                                                    # ticks 0 .. 0.6 s
    assert len(set(centre_brightness(clip.frames).tolist())) == 4                   # none invented
    with pytest.raises(ClipRefused, match=r"too short: 7 frames at 10 frames/s, need at least 8 \(sample.min_frames\)"):
        sample_video(path, sampling(fps=10, image_size=16, min_frames=8))


def test_a_truncated_clip_is_used_with_a_note_or_refused_as_truncated_below_min_frames(tmp_path):
    path = write_video(tmp_path / "cut.mkv", ramp(40, step=5, height=48, width=64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])                   # MJPG: every frame before the cut decodes
    clip = sample_video(path, sampling(fps=25, image_size=16, min_frames=10))
    assert clip.num_frames == 20 and clip.note == "header says 40 frames, 20 decodable; sampled those"
    with pytest.raises(ClipRefused, match=r"truncated: 20 of the 40 frames the header declares are decodable, "
                                          r"need at least 30 at 25 frames/s \(sample.min_frames\)"):
        sample_video(path, sampling(fps=25, image_size=16, min_frames=30))


# --- frame folders -------------------------------------------------------------------------------

def test_a_frame_folder_is_read_in_natural_order_through_the_same_preprocessing(tmp_path):
    frames = ramp(12, step=18, height=30, width=20)
    write_frame_images(tmp_path / "clip", frames, name="frame_{index}.png")   # frame_10 sorts after frame_9
    clip = sample_clip(tmp_path / "clip", sampling(fps=10, image_size=16), frames_fps=30)
    assert clip.frames.shape == (4, 16, 16, 3)                                 # 0.4 s at 10 frames/s
    np.testing.assert_array_equal(centre_brightness(clip.frames), 5 + 18 * fixed_rate_indices(12, 30, 10))
    assert clip.num_frames == 12 and clip.fps == 30.0 and clip.duration_seconds == pytest.approx(0.4)


def test_a_frame_folder_of_unknown_rate_takes_each_image_as_one_tick(tmp_path):
    write_frame_images(tmp_path / "clip", ramp(6), name="{index}.jpg")
    clip = sample_clip(tmp_path / "clip", sampling(fps=10, image_size=16), frames_fps=0)
    assert len(clip.frames) == 6 and "frame rate unknown" in clip.note


def test_a_frames_dataset_of_unknown_rate_still_records_the_one_sampling_rate(stage_workspace):
    root = stage_workspace
    write_frame_images(root / "frames_data" / "hello" / "clip1", ramp(8), name="{index}.jpg")
    set_params(root, {"data": {"source": "frames", "path": "frames_data", "split": "stratified", "frames_fps": 0},
                      "sample": {"val_fraction": 0.0, "test_fraction": 0.0}})
    run(SAMPLE, root)
    with h5py.File(root / "data/frames.h5", "r") as handle:
        assert handle.attrs["sample_fps"] == 10 and json.loads(handle.attrs["sampling"])["fps"] == 10
        assert np.diff(handle["offsets"][...]).tolist() == [8]


def test_frame_folder_refusals_name_the_problem(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ClipRefused, match=r"no frame images: the clip folder holds no .jpg or .png file"):
        sample_clip(tmp_path / "empty", sampling(image_size=16))
    write_frame_images(tmp_path / "broken", ramp(5), name="{index:03d}.jpg")
    (tmp_path / "broken" / "002.jpg").write_text("not an image")
    with pytest.raises(ClipRefused, match=r"unreadable frame images: 1 of 5, first '002.jpg'"):
        sample_clip(tmp_path / "broken", sampling(image_size=16))
    write_frame_images(tmp_path / "short", ramp(2))
    with pytest.raises(ClipRefused, match=r"too short: 2 frames at 25 frames/s, need at least 3"):
        sample_clip(tmp_path / "short", sampling(image_size=16, min_frames=3), frames_fps=25)


def test_the_stage_reads_a_frames_dataset(stage_workspace):
    root = stage_workspace
    data = root / "frames_data"
    write_frame_images(data / "hello" / "clip1", ramp(12), name="img_{index}.jpg")
    write_frame_images(data / "hello" / "clip2", ramp(8), name="img_{index}.png")
    write_frame_images(data / "thanks" / "clip1", ramp(10)[:, :, :20])     # portrait-ish frames
    (data / "thanks" / "clip2").mkdir()
    write_frame_images(data / "thanks" / "clip3", ramp(6))
    (data / "thanks" / "clip3" / "frame_3.jpg").write_bytes(b"")
    set_params(root, {"data": {"source": "frames", "path": "frames_data", "split": "stratified",
                               "frames_fps": 25},
                      "sample": {"val_fraction": 0.0, "test_fraction": 0.0}})
    run(SAMPLE, root)
    manifest = read_manifest(root)
    assert rows_by_path(manifest) == {
        "frames_data/hello/clip1": ("ok", ""), "frames_data/hello/clip2": ("ok", ""),
        "frames_data/thanks/clip1": ("ok", ""),
        "frames_data/thanks/clip2": ("refused", "no frame images: the clip folder holds no .jpg or .png file"),
        "frames_data/thanks/clip3": ("refused", "unreadable frame images: 1 of 6, first 'frame_3.jpg'"),
    }
    assert manifest.loc[manifest["status"] == "ok", "fps"].tolist() == ["25.0"] * 3
    with h5py.File(root / "data/frames.h5", "r") as handle:
        offsets = handle["offsets"][...]
        assert np.diff(offsets).tolist() == [len(fixed_rate_indices(n, 25, 10)) for n in (12, 8, 10)]
        assert handle.attrs["sample_fps"] == 10                     # the fixed rate, whatever the images
        hello = handle["frames"][clip_slice(offsets, 0)]
    np.testing.assert_array_equal(hello, sample_clip(data / "hello" / "clip1", sampling(fps=10, image_size=64,
                                                                                        min_frames=3),
                                                     frames_fps=25).frames)


# --- LSA64 and WLASL through the stage -----------------------------------------------------------

def test_the_stage_reads_lsa64_and_keeps_every_signer_in_one_split(stage_workspace):
    root = stage_workspace
    data = root / "lsa64"
    for sign in (1, 2):
        for signer in range(1, 9):
            write_video(data / f"{sign:03d}_{signer:03d}_001.mp4", ramp(6, height=16, width=16), fourcc="mp4v")
    (data / "README.txt").write_text("LSA64")
    (data / "clip_final.mp4").write_bytes(b"")
    set_params(root, {"data": {"source": "lsa64", "path": "lsa64", "split": "signer"},
                      "sample": {"val_fraction": 0.25, "test_fraction": 0.25}})
    run(SAMPLE, root)
    manifest = read_manifest(root)
    ok = manifest[manifest["status"] == "ok"]
    assert len(ok) == 16 and set(ok["label"]) == {"001", "002"}
    assert ok.groupby("signer")["split"].nunique().max() == 1
    assert rows_by_path(manifest[manifest["status"] != "ok"]) == {
        "lsa64/README.txt": ("refused", "not a video file: extension '.txt'"),
        "lsa64/clip_final.mp4": ("refused", "file name not in LSA64 form: expected SSS_PPP_RRR "
                                            "(sign_signer_repetition, e.g. 001_004_002.mp4)"),
    }


def test_the_stage_reads_wlasl_with_its_frame_ranges_and_given_split(stage_workspace):
    root = stage_workspace
    data = root / "wlasl"
    write_video(data / "videos" / "00001.mp4", ramp(30), fourcc="mp4v")       # whole clip is the sign
    write_video(data / "videos" / "00002.mp4", ramp(30), fourcc="mp4v")       # sign is frames 11..20
    write_video(data / "videos" / "00003.mp4", ramp(10), fourcc="mp4v")       # already cut to 51..60
    write_video(data / "videos" / "00009.mp4", ramp(10), fourcc="mp4v")       # not in the index
    index = [
        {"gloss": "book", "instances": [
            {"video_id": "00001", "split": "train", "signer_id": 1, "frame_start": 1, "frame_end": -1},
            {"video_id": "00002", "split": "test", "signer_id": 2, "frame_start": 11, "frame_end": 20}]},
        {"gloss": "drink", "instances": [
            {"video_id": "00003", "split": "val", "signer_id": 3, "frame_start": 51, "frame_end": 60},
            {"video_id": "00004", "split": "train", "signer_id": 3, "frame_start": 1, "frame_end": -1}]},
    ]
    (data / "WLASL_v0.3.json").write_text(json.dumps(index))
    set_params(root, {"data": {"source": "wlasl", "path": "wlasl", "split": "given"}})
    run(SAMPLE, root)
    manifest = read_manifest(root)
    indexed = manifest.iloc[:4]
    assert [(row.path, row.label, row.split, row.signer, row.status, row.reason, row.num_frames)
            for row in indexed.itertuples()] == [
        ("wlasl/videos/00001.mp4", "book", "train", "1", "ok", "", "30"),
        ("wlasl/videos/00002.mp4", "book", "test", "2", "ok", "", "10"),
        ("wlasl/videos/00003.mp4", "drink", "val", "3", "ok",
         "file has 10 frames, no more than its frame range 50..59: taken as already cut to it; "
         "sampled the whole file", "10"),
        ("wlasl/videos/00004.mp4", "drink", "train", "3", "refused", "video file missing", "0"),
    ]
    assert manifest.iloc[4][["path", "label", "status", "reason"]].tolist() == [
        "wlasl/videos/00009.mp4", "", "refused", "not in the index"]
    with h5py.File(root / "data/frames.h5", "r") as handle:
        ranged = handle["frames"][clip_slice(handle["offsets"][...], 1)]
    expected = 5 + 8 * (10 + fixed_rate_indices(10, 25, 10))               # frames 10..19, 0-based, at 10/s
    assert np.all(np.abs(centre_brightness(ranged) - expected) <= 6), (centre_brightness(ranged), expected)
