"""Interrupted and growing work: SIGKILLed stages (or Ray workers) resume without redoing clips or leaving half files."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from stages.lib.compute import MAX_ITEMS_IN_FLIGHT_PER_WORKER, WORKER_LOG_VARIABLE
from tests.conftest import command_env, make_stage_workspace, run, set_params, write_video

STAGE = [sys.executable, "-m"]
# Enough work per clip (about 20 frames at 128 px) that a kill lands part-way through the clips.
RESUME_PARAMS = {"base": {"image_size": 128}, "backbone": {"weights": "imagenet"},
                 "generate": {"repetitions": 4, "fps": 25, "seconds": 1.2}, "sample": {"min_frames": 3}}
CLIPS = 4 * 4 * 4 + 4                  # 4 signs x 4 signers x 4 repetitions, + 1 idle clip per signer


@pytest.fixture(scope="module")
def extract_workspace(tmp_path_factory) -> Path:
    """CLIPS synthetic clips sampled and embedded once (this also builds the backbone's cached files)."""
    root = make_stage_workspace(tmp_path_factory.mktemp("resume") / "repo", RESUME_PARAMS)
    run(STAGE + ["stages.generate"], root)
    run(STAGE + ["stages.sample"], root)
    run(STAGE + ["stages.weights"], root)
    run(STAGE + ["stages.extract"], root)
    return root


def cached_clips(root: Path) -> list[Path]:
    """Finished cache files only: a half-written one is `*.npy.<random>.partial`."""
    return sorted((root / "features/cache").rglob("*.npy"))


def start_in_own_group(command: list[str], cwd: Path) -> subprocess.Popen:
    """Start a stage in its own process group, so one SIGKILL reaches it and its workers."""
    return subprocess.Popen(command, cwd=cwd, env=command_env(cwd), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def kill_when(process: subprocess.Popen, condition, timeout: float = 180.0) -> None:
    """SIGKILL the process group as soon as `condition()` holds (polled every 5 ms).

    The timeout only catches a stage that hangs: these tests run while the session's pipelines keep
    the CPU busy in the background (tests/conftest.py), where a stage's start-up takes longer.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the stage finished before it could be interrupted"
        assert time.monotonic() < deadline, "the stage never reached the point to interrupt"
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def read_embeddings(root: Path) -> np.ndarray:
    with h5py.File(root / "features/embeddings.h5", "r") as handle:
        return handle["embeddings"][...]


def test_sigkilled_extract_resumes_without_redoing_clips_and_matches_an_uninterrupted_run(extract_workspace):
    root = extract_workspace
    uninterrupted = read_embeddings(root)                        # (frames, 1280) from the fixture's full run
    old_file = (root / "features/embeddings.h5").read_bytes()
    for cached in cached_clips(root):                            # forget the clips, keep the backbone's files
        cached.unlink()

    process = start_in_own_group(STAGE + ["stages.extract"], root)
    kill_when(process, lambda: len(cached_clips(root)) >= 3)
    done = len(cached_clips(root))
    assert 3 <= done < CLIPS, done
    assert (root / "features/embeddings.h5").read_bytes() == old_file     # the old complete file, untouched
    for cached in cached_clips(root):
        array = np.load(cached)                                           # no cache file is half written
        assert array.ndim == 2 and array.shape[1] == 1280 and len(array) > 5

    resumed = run(STAGE + ["stages.extract"], root)
    assert f"embedded {CLIPS - done} clips, reused {done} from the cache" in resumed.stdout
    np.testing.assert_allclose(read_embeddings(root), uninterrupted, rtol=0, atol=1e-5)
    assert not list((root / "features").glob("*.partial"))


def worker_logs(folder: Path) -> dict[int, list[str]]:
    """pid -> lines of each worker's log ($SIGNLANG_WORKER_LOG): "started", then "done <item>" per item."""
    return {int(path.stem.rsplit("-", 1)[1]): path.read_text().splitlines() for path in folder.glob("*.log")}


def items_done(logs: dict[int, list[str]]) -> list[int]:
    return [int(line.split()[1]) for lines in logs.values() for line in lines if line.startswith("done ")]


def test_a_ray_worker_killed_mid_run_costs_only_its_clips_and_the_run_finishes(extract_workspace, ray_cluster,
                                                                             tmp_path):
    root = tmp_path / "repo"                # a copy: the shared workspace stays local, as the other tests expect
    shutil.copytree(extract_workspace, root)
    uninterrupted = read_embeddings(root)                         # the fixture's local run
    for cached in cached_clips(root):
        cached.unlink()
    set_params(root, {"compute": {"engine": "ray", "address": ray_cluster, "workers": 2}})
    log_folder = tmp_path / "worker_logs"
    log_folder.mkdir()
    output = tmp_path / "extract.out"
    with output.open("w") as stdout:
        process = subprocess.Popen(STAGE + ["stages.extract"], cwd=root, stdout=stdout, stderr=subprocess.STDOUT,
                                   env={**command_env(root), WORKER_LOG_VARIABLE: str(log_folder)})

    def a_worker_is_busy() -> int | None:                          # a worker with two clips done: kill it now
        for pid, lines in worker_logs(log_folder).items():
            if sum(line.startswith("done ") for line in lines) >= 2:
                return pid
        assert process.poll() is None, output.read_text()[-3000:]
        return None
    deadline = time.monotonic() + 300
    while (victim := a_worker_is_busy()) is None:
        assert time.monotonic() < deadline, "no Ray worker got to work"
        time.sleep(0.005)
    os.kill(victim, signal.SIGKILL)
    done_before_the_kill = len(items_done(worker_logs(log_folder)))
    assert process.wait(timeout=600) == 0, output.read_text()[-3000:]

    assert done_before_the_kill < CLIPS                             # it died mid-run, with work left
    assert f"embedded {CLIPS} clips, reused 0 from the cache" in output.read_text()
    np.testing.assert_allclose(read_embeddings(root), uninterrupted, rtol=0, atol=1e-6)
    logs = worker_logs(log_folder)
    done = Counter(items_done(logs))
    assert set(done) == set(range(CLIPS))                           # every clip embedded, the victim's by others
    redone = sum(count - 1 for count in done.values())
    assert redone <= MAX_ITEMS_IN_FLIGHT_PER_WORKER                 # only what the dead worker had in flight
    assert any(pid != victim and lines.count("started") for pid, lines in logs.items())
    assert not list((root / "features").rglob("*.partial"))

    again = run(STAGE + ["stages.extract"], root)          # the cache, filled from Ray's results, is reused:
    assert f"embedded 0 clips, reused {CLIPS}" in again.stdout and "compute: Ray" not in again.stdout  # no Ray
    np.testing.assert_allclose(read_embeddings(root), uninterrupted, rtol=0, atol=1e-6)


def copy_clips(clips: list[Path], dataset: Path) -> None:
    """Copy `<class>/<clip>.mp4` files into `dataset`, keeping their class folders."""
    for clip in clips:
        (dataset / clip.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, dataset / clip.parent.name / clip.name)


def test_adding_ten_clips_embeds_those_ten_only(extract_workspace, tmp_path):
    root = tmp_path / "repo"                # a copy: the shared workspace stays as the other tests expect
    shutil.copytree(extract_workspace, root)
    source, dataset = root / "data/synthetic", root / "mine"
    clips = sorted(source.glob("*/*.mp4"))
    assert len(clips) == CLIPS
    # Clips of this dataset are the synthetic ones, sampled at another rate: new content, new cache keys.
    set_params(root, {"data": {"source": "folder", "path": "mine", "split": "stratified"}, "sample": {"fps": 8}})
    copy_clips(clips[:20], dataset)
    run(STAGE + ["stages.sample"], root)
    first = run(STAGE + ["stages.extract"], root)
    assert "embedded 20 clips, reused 0" in first.stdout

    copy_clips(clips[20:30], dataset)
    run(STAGE + ["stages.sample"], root)
    grown = run(STAGE + ["stages.extract"], root)
    assert "embedded 10 clips, reused 20" in grown.stdout
    with h5py.File(root / "features/embeddings.h5", "r") as handle:
        assert len(handle["offsets"]) == 31


def test_sigkilled_sample_leaves_the_previous_outputs_and_reruns_cleanly(tmp_path):
    root = make_stage_workspace(tmp_path / "repo",
                                {"data": {"source": "folder", "path": "mine", "split": "stratified"}})
    gradient = np.tile(np.linspace(0, 255, 128, dtype=np.uint8)[None, :, None], (96, 1, 3))
    long_clip = write_video(tmp_path / "long.avi", np.stack([np.roll(gradient, i, axis=1) for i in range(200)]))
    for index in range(4):
        (root / "mine" / f"sign{index}").mkdir(parents=True)
        shutil.copy(long_clip, root / "mine" / f"sign{index}" / "clip0.avi")
    run(STAGE + ["stages.sample"], root)
    old_frames = (root / "data/frames.h5").read_bytes()
    old_manifest = (root / "data/manifest.csv").read_text()

    for index in range(4):                                      # the dataset grows: 60 more long clips
        for copy in range(1, 16):
            shutil.copy(long_clip, root / "mine" / f"sign{index}" / f"clip{copy}.avi")
    process = start_in_own_group(STAGE + ["stages.sample"], root)
    kill_when(process, lambda: any((root / "data").glob("frames.h5.*.partial")))
    assert (root / "data/frames.h5").read_bytes() == old_frames
    assert (root / "data/manifest.csv").read_text() == old_manifest

    run(STAGE + ["stages.sample"], root)
    manifest = pd.read_csv(root / "data/manifest.csv", keep_default_na=False)
    assert len(manifest) == 64 and (manifest["status"] == "ok").all()
    with h5py.File(root / "data/frames.h5", "r") as handle:
        assert len(handle["offsets"]) == 65
    assert not list((root / "data").glob("*.partial"))
