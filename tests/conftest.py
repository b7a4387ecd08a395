"""Shared fixtures: tiny videos written in tmp_path, and a throw-away copy of the pipeline.

Everything here uses the real libraries (OpenCV, HDF5, Keras, DVC); nothing is mocked.
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

# Load aiortc's native libraries (pylibsrtp, av) before TensorFlow: loaded after it,
# in one process, pylibsrtp crashes with a segmentation fault. The app imports
# streamlit-webrtc first for the same reason.
import aiortc  # noqa: F401  (import order matters, see above)
import cv2
import numpy as np
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]

# A pipeline small enough for CI on two cores: 4 signs (+ the idle class) x 4 signers x 1
# repetition, drawn at 10 frames/s (so every frame is sampled), windows of 8 frames at 64 px,
# one short stream, one fast one and one 30 s idle stream per evaluation signer. Accuracy is not the point
# at this size; plumbing is.
TINY_PARAMS = {
    "base": {"seq_len": 8, "image_size": 64},
    "generate": {"classes": 4, "signers": 4, "repetitions": 1, "val_signers": 1, "test_signers": 1,
                 "width": 96, "height": 72, "fps": 10, "seconds": 0.8, "idle_clips": 1, "idle_seconds": 2.0,
                 "streams_per_signer": 1, "signs_per_stream_min": 2, "signs_per_stream_max": 3,
                 "idle_stream_seconds": 30, "idle_streams_per_signer": 1, "fast_streams_per_signer": 1},
    "sample": {"fps": 10, "min_frames": 3},
    "train": {"epochs": 3, "patience": 2, "batch_size": 8, "lstm_units": 8, "windows_per_clip": 2},
    "benchmark": {"repeats": 2, "live_steps": 10, "eager_steps": 2, "extract_clips": 2, "e2e_steps": 1, "e2e_batch_windows": 1,
                  "train_windows": 64, "head_lstm_units": 8, "head_batch_size": 8, "clip_seconds": 1.0},
}


# Tests that need a whole pipeline run, a Ray cluster, a browser or a served app are "slow":
# `pytest -m "not slow"` runs the unit and stage tests alone (the developer's loop); the CI runs everything.
SLOW_FIXTURES = {"trained_workspace", "default_workspace", "finetuned_workspace", "keypoint_workspace", "extract_workspace",
                 "ray_cluster", "app_server", "chromium"}


# Fixtures built once per session (or module) that several tests share. Under pytest-xdist
# (`-n auto --dist loadgroup`, the developer's loop) the tests of one such fixture form an xdist group,
# so they land on one worker and the fixture is built once, not once per worker. The fine-tuned
# workspace is a copy of the trained one: one group. The first name a test uses picks its group.
SHARED_FIXTURE_GROUPS = {"finetuned_workspace": "trained_workspace", "keypoint_workspace": "trained_workspace",
                         "trained_workspace": "trained_workspace",
                         "default_workspace": "default_workspace", "ray_cluster": "ray_cluster",
                         "extract_workspace": "extract_workspace"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if SLOW_FIXTURES & used:
            item.add_marker(pytest.mark.slow)
        group = next((group for name, group in SHARED_FIXTURE_GROUPS.items() if name in used), None)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=session_order)                       # stable: within each part, the files' own order


def session_order(item) -> int:
    """Where a test runs in the session (see "the session's pipelines" below): -1 first, 4 last.

    A real-time test that needs no pipeline comes first: it leaves most of a core idle, which the
    background runs (niced) fill as they start. Then the tests that need no pipeline, then the
    pipelines' tests in the order their runs finish: the tiny one, its fine-tuning, its keypoint
    experiment (started with the tiny one's tests), the default.
    """
    used = set(getattr(item, "fixturenames", ()))       # with the fixtures its fixtures use
    position = max((position + 1 for position, name in enumerate(PIPELINE_FIXTURES) if name in used), default=0)
    if position == 0 and item.get_closest_marker("real_time"):
        return -1
    return position


def write_video(path: Path, frames_bgr: np.ndarray, fps: float = 25.0, fourcc: str = "MJPG") -> Path:
    """Write (n, H, W, 3) uint8 BGR frames; MJPG in .avi keeps colours nearly exact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames_bgr.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} to {path}"
    for frame in frames_bgr:
        writer.write(np.ascontiguousarray(frame))
    writer.release()
    return path


def read_video(path: Path) -> tuple[np.ndarray, float]:
    """Every frame of a video as (n, H, W, 3) uint8 BGR, and the frame rate its header declares."""
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return np.stack(frames), fps


def gray_ramp_frames(count: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Frame i is a flat gray of brightness 10 + 20 * i: the frame index can be read back."""
    return np.stack([np.full((height, width, 3), 10 + 20 * i, np.uint8) for i in range(count)])


def write_frame_images(folder: Path, frames_bgr: np.ndarray, name: str = "frame_{index}.jpg") -> list[Path]:
    """Write (n, H, W, 3) uint8 BGR frames as one image each; `name` formats the file name from the index."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, frame in enumerate(frames_bgr):
        path = folder / name.format(index=index)
        assert cv2.imwrite(str(path), frame), f"OpenCV cannot write {path}"
        paths.append(path)
    return paths


def write_recordings(folder: Path, clips: dict[str, int], signers: tuple[str, ...] = ("ana", "ben"),
                     frames: int = 12, fps: float = 10.0) -> list[Path]:
    """`clips[sign]` recordings of each sign (the idle class `_none` too) in the app's layout
    (<folder>/<sign>/<signer>_<YYYYmmdd-HHMMSS>.mp4), signers taking turns, written as the Record page
    writes them. Each clip is `frames` flat frames (48 x 64) of a gray that says its sign and number."""
    from datetime import datetime, timedelta

    from app.recordings import write_recording
    written, started = [], datetime(2026, 12, 1, 14, 0, 0)
    for sign_number, (sign, count) in enumerate(sorted(clips.items())):
        for clip in range(count):
            gray = 20 + (37 * sign_number + 11 * clip) % 200
            images = [np.full((48, 64, 3), min(gray + index, 255), np.uint8) for index in range(frames)]
            started += timedelta(seconds=7)
            written.append(write_recording(images, fps, folder, sign, signers[clip % len(signers)], started))
    return written


def deep_update(target: dict, changes: dict) -> dict:
    for key, value in changes.items():
        if isinstance(value, dict):
            deep_update(target.setdefault(key, {}), value)
        else:
            target[key] = value
    return target


def command_env(cwd: Path) -> dict[str, str]:
    """This interpreter's environment first on PATH, and `cwd` importable (its `stages` package)."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(cwd)
    return env


def run_unchecked(command: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run a command like `run`, but hand back a failing result instead of raising."""
    return subprocess.run(command, cwd=cwd, env=command_env(cwd), capture_output=True, text=True, timeout=timeout)


def run(command: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run a command with this interpreter's environment first on PATH; fail with its output."""
    result = run_unchecked(command, cwd, timeout)
    if result.returncode != 0:
        raise command_failed(command, result.returncode, result.stdout, result.stderr)
    return result


def command_failed(command: list[str], returncode: int, stdout: str, stderr: str) -> AssertionError:
    """The error for a command that failed: the command, its exit status, the ends of its output."""
    return AssertionError(f"{' '.join(command)} failed ({returncode}):\n{stdout[-4000:]}\n{stderr[-4000:]}")


EMPTY_REPOSITORY: dict[str, Path] = {}            # "root": the one `empty_repository` made
EMPTY_REPOSITORY_LOCK = threading.Lock()          # the background runs make workspaces on threads


def empty_repository() -> Path:
    """A git + DVC repository with nothing committed, made once per process; `make_workspace` copies it.

    `dvc init` and `dvc config` are two Python processes, about 1.5 s of CPU; made afresh for every
    workspace, that was tens of seconds of CPU a session (the app tests alone make sixteen).
    """
    with EMPTY_REPOSITORY_LOCK:
        if "root" not in EMPTY_REPOSITORY:
            folder = Path(tempfile.mkdtemp(prefix="signlang-empty-repository-"))
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            root = folder / "repo"
            root.mkdir()
            run(["git", "init", "-q"], root)
            run(["git", "config", "user.email", "ci@example.invalid"], root)
            run(["git", "config", "user.name", "ci"], root)
            run(DVC + ["init", "-q"], root)
            run(DVC + ["config", "core.analytics", "false"], root)
            EMPTY_REPOSITORY["root"] = root
        return EMPTY_REPOSITORY["root"]


def make_workspace(root: Path, changes: dict | None = TINY_PARAMS) -> Path:
    """A copy of the pipeline (code, dvc.yaml, params with `changes`) in its own git + DVC repository at `root`."""
    root.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(empty_repository(), root, symlinks=True)     # fails, as mkdir did, if `root` exists
    shutil.copytree(REPO_ROOT / "stages", root / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "dvc.yaml", root / "dvc.yaml")
    params = deep_update(yaml.safe_load((REPO_ROOT / "params.yaml").read_text()), changes or {})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy(REPO_ROOT / ".gitignore", root / ".gitignore")
    for folder in ("data", "data/weights", "features", "models", "reports"):
        (root / folder).mkdir()
        (root / folder / ".gitkeep").touch()
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "tiny pipeline"], root)
    return root


@pytest.fixture
def workspace(tmp_path: Path):
    """A fresh tiny pipeline repository for one test."""
    return make_workspace(tmp_path / "repo")


DVC = [sys.executable, "-m", "dvc"]
FIRST_REPRO_LOG = "first_repro.log"      # beside the trained workspace: what its first `dvc repro` printed
EXPERIMENT_LOG = "exp_run.log"           # beside an experiment's workspace: what its `dvc exp run` printed
# Each run's session gets the lowest priority, through `nice` and, where the kernel groups processes
# by session (autogroup, on in this machine's kernel: then `nice` ranks processes only within one
# session), through /proc/<pid>/autogroup as well. Measured here: two niced busy loops in their own
# sessions took 66 % of the two cores from two un-niced ones, 4 % once their autogroup was niced too.
BACKGROUND_NICENESS = 19
PIPELINE_SECONDS = 3600                   # the longest a session's pipeline may take (the default one, on a busy CPU)


# --- the session's pipelines, run in the background ----------------------------------------------
# Pipeline runs serve many tests: the tiny pipeline (`trained_workspace`), two experiments on copies
# of its committed baseline (`finetuned_workspace`, `keypoint_workspace`) and the default pipeline
# (`default_workspace`). Each keeps about 1.5 of the two cores busy; run one after another, when their
# first test came, they were over a third of CI's 30 minutes on a slow machine. So, when the session
# starts, the ones its selected tests need start on threads of this process (the work is in `dvc`
# subprocesses) while the tests that need none of them run, and each fixture waits for its own.
# `session_order` puts those tests first. The runs are niced (`BACKGROUND_NICENESS`): a second busy
# process of the same priority on the two cores once made the record test miss its sign, so the
# real-time browser tests (marked `real_time`) used to wait for every run and came last, leaving a
# core idle for their four minutes; niced, the runs only take what the tests leave. Under
# pytest-xdist a fixture runs its pipeline when its first test needs it, as before.
# In the order their runs finish, which is the order of their tests (`session_order`).
PIPELINE_FIXTURES = ("trained_workspace", "finetuned_workspace", "keypoint_workspace", "default_workspace")
# The experiments on the baseline: their `-S` settings.
BASELINE_EXPERIMENTS = {
    "finetuned_workspace": ["finetune.enabled=true", "finetune.epochs=1", "finetune.batch_size=2",
                            "finetune.mixed_precision=mixed_bfloat16"],
    "keypoint_workspace": ["backbone.name=keypoints"],
}
# Started when the trained workspace's first test starts, not with the session: the first tests keep
# both cores busy, the trained workspace's tests (one `dvc` command at a time) leave most of one free.
STARTED_WITH_THE_TRAINED_TESTS = {"keypoint_workspace"}


def lower_session_priority(pid: int) -> None:
    """The lowest CPU priority for the session that process `pid` leads, where the kernel has autogroups."""
    try:
        Path(f"/proc/{pid}/autogroup").write_text(f"{BACKGROUND_NICENESS}\n")
    except OSError:                                     # no autogroups: `nice` alone ranks the processes
        pass


class SessionPipelines:
    """The session's pipeline runs as futures, and the `dvc` processes they have running (killed at the end)."""

    def __init__(self, tmp_path_factory):
        self.tmp_path_factory = tmp_path_factory
        self.executor = ThreadPoolExecutor(max_workers=len(PIPELINE_FIXTURES), thread_name_prefix="pipeline")
        self.futures: dict[str, Future] = {}
        self.held_back: dict[str, Path] = {}            # fixture -> its root, until `release`
        self.processes: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.closed = False

    def start(self, names: set[str]) -> None:
        """Start the runs behind fixtures `names` (and the baseline they build on) that have not started yet."""
        names = {name for name in names if name not in self.futures and name not in self.held_back}
        if names & BASELINE_EXPERIMENTS.keys() and "trained_workspace" not in self.futures:
            names.add("trained_workspace")
        roots = {name: self.tmp_path_factory.mktemp(name.removesuffix("_workspace")) / "repo" for name in names}
        if "trained_workspace" in roots:
            copies = [root for name, root in roots.items() if name in BASELINE_EXPERIMENTS]
            self.futures["trained_workspace"] = self.executor.submit(
                self.prepare_trained, roots["trained_workspace"], copies)
        for name in BASELINE_EXPERIMENTS.keys() & roots.keys():
            if name in STARTED_WITH_THE_TRAINED_TESTS:
                self.held_back[name] = roots[name]
            else:
                self.futures[name] = self.executor.submit(self.prepare_experiment, name, roots[name])
        if "default_workspace" in roots:
            self.futures["default_workspace"] = self.executor.submit(self.prepare_default, roots["default_workspace"])

    def release(self) -> None:
        """Start the runs held back for the trained workspace's tests."""
        for name, root in self.held_back.items():
            self.futures[name] = self.executor.submit(self.prepare_experiment, name, root)
        self.held_back.clear()

    def result(self, name: str) -> Path:
        """The workspace of fixture `name`, once its run has finished (started now if it had not been)."""
        self.start({name})
        if name in self.held_back:
            self.release()
        return self.futures[name].result(timeout=PIPELINE_SECONDS)

    def close(self) -> None:
        with self.lock:
            self.closed = True                          # a run between two commands starts no more
            for process in self.processes:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)   # the dvc process and the stage it runs
        self.executor.shutdown(wait=True, cancel_futures=True)

    def run(self, command: list[str], cwd: Path) -> str:
        """`run` for a long `dvc` command that `close` can stop: its stdout; raises with its output if it fails."""
        with self.lock:
            if self.closed:
                raise RuntimeError(f"the session ended before {' '.join(command)} could start")
            process = subprocess.Popen(["nice", "-n", str(BACKGROUND_NICENESS), *command], cwd=cwd,
                                       env=command_env(cwd), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, start_new_session=True)
            self.processes.add(process)
            lower_session_priority(process.pid)
        try:
            stdout, stderr = process.communicate(timeout=PIPELINE_SECONDS)
        finally:
            with self.lock:
                self.processes.discard(process)
        if process.returncode != 0:
            raise command_failed(command, process.returncode, stdout, stderr)
        return stdout

    def prepare_trained(self, root: Path, copies: list[Path]) -> Path:
        """A tiny pipeline run once through `dvc repro` with pretrained weights, then committed.

        The committed baseline is copied to `copies` (the experiments' roots) before the trained
        workspace's tests, which run experiments on it, can start.
        """
        make_workspace(root)
        set_params(root, {"backbone": {"weights": "imagenet"}, "train": {"epochs": 15, "lstm_units": 16}})
        (root.parent / FIRST_REPRO_LOG).write_text(self.run(DVC + ["repro"], root))
        run(["git", "add", "-A"], root)
        run(["git", "commit", "-qm", "baseline results"], root)
        for copy in copies:
            shutil.copytree(root, copy, symlinks=True)
        return root

    def prepare_experiment(self, name: str, root: Path) -> Path:
        """A copy of the trained baseline after `dvc exp run` with fixture `name`'s settings.

        The copy was made by `prepare_trained` if both started together; otherwise (pytest-xdist) it is
        made here, while no test runs on this worker.
        """
        trained_root = self.futures["trained_workspace"].result()
        if not root.exists():
            shutil.copytree(trained_root, root, symlinks=True)
        settings = [argument for setting in BASELINE_EXPERIMENTS[name] for argument in ("-S", setting)]
        (root.parent / EXPERIMENT_LOG).write_text(self.run(DVC + ["exp", "run"] + settings, root))
        return root

    def prepare_default(self, root: Path) -> Path:
        """The repository's pipeline at its default params, through `dvc repro calibrate` (the served model and
        the spotting settings the Live page starts with), on the repository's DVC cache."""
        make_workspace(root, changes=None)
        (REPO_ROOT / ".dvc" / "cache").mkdir(parents=True, exist_ok=True)
        run(DVC + ["cache", "dir", str(REPO_ROOT / ".dvc" / "cache")], root)
        self.run(DVC + ["repro", "calibrate"], root)
        return root


@pytest.fixture(scope="session")
def session_pipelines(tmp_path_factory):
    pipelines = SessionPipelines(tmp_path_factory)
    yield pipelines
    pipelines.close()


@pytest.fixture(scope="session", autouse=True)
def start_pipelines_in_background(request, session_pipelines):
    """At the session's first test: start every pipeline run that the session's tests will ask for."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:       # a worker runs only some of the items
        needed = {name for item in request.session.items for name in getattr(item, "fixturenames", ())}
        session_pipelines.start(needed & set(PIPELINE_FIXTURES))


@pytest.fixture(scope="session")
def trained_workspace(session_pipelines) -> Path:
    """A tiny pipeline run once through `dvc repro` with pretrained weights, then committed.

    Shared by the whole session: the model tests read it, and the DVC tests run
    experiments on it, each restoring this baseline afterwards (`restore_baseline`).
    Its first test starts the runs held back for these tests (the keypoint experiment).
    """
    root = session_pipelines.result("trained_workspace")
    session_pipelines.release()
    return root


@pytest.fixture(scope="session")
def default_workspace(session_pipelines) -> Path:
    """The repository's pipeline at its default params, through `dvc repro calibrate`: the model a user gets.

    It shares the repository's DVC cache, so on a checkout that has already run
    `dvc repro` the run cache restores every stage in seconds; a fresh clone (CI)
    runs the default pipeline once for the whole session.
    """
    return session_pipelines.result("default_workspace")


@pytest.fixture(scope="session")
def finetuned_workspace(trained_workspace, session_pipelines) -> Path:
    """A copy of the trained tiny pipeline after `dvc exp run -S finetune.enabled=true` (1 epoch, mixed bfloat16).

    One fine-tuning run for the session: the DVC tests read what it re-ran and
    the state it left, the fine-tuning tests read what it made.
    """
    return session_pipelines.result("finetuned_workspace")


@pytest.fixture(scope="session")
def keypoint_workspace(trained_workspace, session_pipelines) -> Path:
    """A copy of the trained tiny pipeline after `dvc exp run -S backbone.name=keypoints`."""
    return session_pipelines.result("keypoint_workspace")


def restore_baseline(root: Path) -> None:
    """Put the committed baseline back: params, lock and reports from git, outputs from the DVC cache.

    `git clean` too: an experiment's new files in a git-tracked output (fine-tuning's
    curves under reports/finetune) would otherwise outlive it and make that output
    look changed to the next experiment.
    """
    run(["git", "reset", "--hard", "-q"], root)
    run(["git", "clean", "-fdq"], root)
    run(DVC + ["checkout", "--force", "-q"], root)


def make_stage_workspace(root: Path, changes: dict | None = None) -> Path:
    """The stages and tiny params in `root`, without git or DVC: enough for `python -m stages.<name>`."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO_ROOT / "stages", root / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    params = deep_update(yaml.safe_load((REPO_ROOT / "params.yaml").read_text()), TINY_PARAMS)
    (root / "params.yaml").write_text(yaml.safe_dump(deep_update(params, changes or {}), sort_keys=False))
    for folder in ("data", "features", "models", "reports"):
        (root / folder).mkdir(exist_ok=True)
    return root


@pytest.fixture
def stage_workspace(tmp_path: Path) -> Path:
    """A light copy of the pipeline (no git, no DVC) for running single stages."""
    return make_stage_workspace(tmp_path / "stages_workspace")


def set_params(root: Path, changes: dict) -> None:
    path = root / "params.yaml"
    params = deep_update(yaml.safe_load(path.read_text()), changes)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


RAY_CLUSTER_CPUS = 2


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory) -> str:
    """A Ray head started with `ray start --head` on this machine, for the whole session: its address.

    Stages join it through `compute.address`, exactly as they would join a real
    cluster, and the tests that need Ray share it, so the session pays for one Ray
    start-up. It is stopped by killing its process group, never by `ray stop`,
    which would stop every Ray on the machine.
    """
    log_path = tmp_path_factory.mktemp("ray") / "ray_start.log"
    port = free_port()
    # Token authentication on, as on any machine where Ray has run (a token in ~/.ray/auth_token);
    # drivers joining it send the token (the compute module does so for the stages, and this
    # process does from here on, before it first imports Ray).
    run([str(Path(sys.executable).parent / "ray"), "get-auth-token", "--generate"], REPO_ROOT)
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    with log_path.open("w") as log:       # a file, not a pipe: a full pipe would stall the head
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}",
             f"--num-cpus={RAY_CLUSTER_CPUS}", "--include-dashboard=false", "--disable-usage-stats"],
            stdout=log, stderr=subprocess.STDOUT, env=command_env(REPO_ROOT), start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log_path.read_text():
            assert process.poll() is None, f"ray start failed:\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"ray start did not finish:\n{log_path.read_text()[-3000:]}"
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
