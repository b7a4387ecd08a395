"""Training on the recordings as a DVC experiment, in a background process that outlives the page.

Usage (the Train page):
    from app.training import start_run, going_run, latest_run, cancel_run, read_progress, failure_reason
    run = start_run(root, recordings="data/recordings", split_mode="signer", overrides=["train.epochs=30"])
    going_run(root)                          # the run going now, or None (any session, any browser)
    read_progress(run.log_text(), run.planned_stages)   # the stage running, epochs within train
    cancel_run(root, run)                    # ends the process group this module started, nothing else

The wrapper the page starts (not for people):
    python -m app.training --root <root> --run <name> --lock-fd <fd>

A run is `dvc exp run --temp --name <name> evaluate -S data.source=folder -S
data.path=<recordings, absolute> -S data.split=<mode> [-S <override>...]` in
the app's root: the command a terminal user types, so it shows in `dvc exp
show` like any other experiment. `--temp` runs it in a copy DVC makes under
.dvc/tmp, so the user's workspace (params.yaml, dvc.lock, the default model
the Live page serves, the built-in clips) stays byte for byte as it was, after
a run and after a Cancel alike. The recordings are git-ignored, so DVC's copy
does not hold them: the run names them by absolute path. The page starts a small wrapper (`main` below) in a session of
its own (`start_new_session`), so a page reload, a closed browser or a
stopped Streamlit server leaves it running. The wrapper runs DVC, waits, and
when the run succeeds copies the new served model to
`<models>/recordings/<name>/` with the run's metrics in its card, read out of
the experiment's commit and the DVC cache (`dvc.api`), where the
Model page finds it and where a later `dvc repro` of the default pipeline
never writes.

State lives under `<root>/.signlang/runs/` (git-ignored): per run a folder
with `state.json` (written by the page once, at the start, then by the
wrapper alone), `log.txt` (DVC's and the stages' output), and `cancel` (the
page's request, its own file). One lock file, `train.lock`, holds an
exclusive `flock` for as long as the run lives: the page takes it before
starting, hands it to the wrapper (`pass_fds`), and the wrapper to DVC, so a
second start while one runs is refused, and the lock goes away with the
processes, however they end (a kill, a reboot), never left stale.

Cancel sends SIGTERM to the run's process group (the wrapper's session: DVC
and the stage it runs), and SIGKILL after a grace, after checking that the
group's leader is still this run's wrapper and the lock is still held.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

RUNS_FOLDER = Path(".signlang") / "runs"     # under the app's root; git-ignored
LOCK_FILE = "train.lock"
STATE_FILE = "state.json"
LOG_FILE = "log.txt"
CANCEL_FILE = "cancel"
# The pipeline up to the metrics of the new model. Not `export` (shipping formats) nor `benchmark`
# (it times a reference model on generated frames, not your data): `dvc repro` runs them when wanted.
EXPERIMENT_TARGET = "evaluate"
RUN_NAME_PREFIX = "rec-"
RUN_NAME = re.compile(r"^rec-\d{8}-\d{6}(-\d{1,2})?$")   # what a ?run= in the page's address may name
KEPT_MODELS_FOLDER = "recordings"           # <models>/recordings/<run name>/: kept apart from the pipeline's outs
CANCEL_GRACE_SECONDS = 10.0                 # SIGTERM, then SIGKILL for what is still there
WRAPPER_MODULE = "app.training"
REPOSITORY_ROOT = Path(__file__).resolve().parents[1]

STARTING, RUNNING, SUCCEEDED, FAILED, CANCELLED, VANISHED = (
    "starting", "running", "succeeded", "failed", "cancelled", "vanished")
ACTIVE = (STARTING, RUNNING)

# Lines of the log that say where the run is.
STAGE_STARTED = re.compile(r"^Running stage '(?P<stage>[^']+)':")
STAGE_SKIPPED = re.compile(r"^Stage '(?P<stage>[^']+)' didn't change, skipping")
STAGE_FAILED = re.compile(r"^ERROR: failed to reproduce '(?P<stage>[^']+)'")
EPOCH = re.compile(r"^Epoch (?P<epoch>\d+)/(?P<epochs>\d+)\s*$")
DAG_NODE = re.compile(r'^"(?P<stage>[^"]+)";$')
STAGE_ENDED = ("Updating lock file", "Generating lock file", "ERROR: ", "Ran experiment(s)")   # DVC, after a stage
# Output of libraries, not of the pipeline: never a reason worth showing.
NOISE = re.compile(r"absl::InitializeLog|^[IWE]\d{4} |oneDNN|^WARNING: No file hash info found|"
                   r"^WARNING: '.*' is empty\.$|UserWarning|^\s+return |Downloading data from")


class RunGoing(Exception):
    """A training run is going already; `run` is it (None if its state cannot be read yet)."""

    def __init__(self, run: TrainingRun | None):
        super().__init__("a training run is going")
        self.run = run


@dataclass(frozen=True)
class TrainingRun:
    name: str
    folder: Path
    state: dict = field(repr=False)

    @property
    def status(self) -> str:
        return str(self.state.get("status", VANISHED))

    @property
    def planned_stages(self) -> list[str]:
        return list(self.state.get("planned_stages") or [])

    @property
    def log_path(self) -> Path:
        return self.folder / LOG_FILE

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@dataclass(frozen=True)
class Progress:
    stages: list[tuple[str, str]]        # (stage, waiting | running | done | skipped | failed), pipeline order
    current: str | None                  # the stage running now
    epoch: int = 0                       # within train: the epoch running, of at most `epochs`
    epochs: int = 0


# --- where things are ---------------------------------------------------------------------------

def runs_dir(root: Path) -> Path:
    return Path(root) / RUNS_FOLDER


def write_json_atomically(path: Path, payload: dict) -> None:
    from stages.lib.storage import write_json  # the project's one atomic write (h5py loads only here)
    write_json(path, payload)


def read_run(root: Path, name: str) -> TrainingRun | None:
    """The run called `name` (checked against RUN_NAME: it may come from the page's address), or None."""
    if not RUN_NAME.match(str(name)):
        return None
    folder = runs_dir(root) / name
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return TrainingRun(name, folder, state)


def list_runs(root: Path) -> list[TrainingRun]:
    """Every run with a readable state, newest first (names sort by their start time)."""
    folder = runs_dir(root)
    names = sorted((path.name for path in folder.iterdir() if path.is_dir()), reverse=True) if folder.is_dir() else []
    return [run for run in (read_run(root, name) for name in names) if run is not None]


def latest_run(root: Path) -> TrainingRun | None:
    runs = list_runs(root)
    return runs[0] if runs else None


# --- the lock -----------------------------------------------------------------------------------

def open_lock(root: Path) -> int:
    runs_dir(root).mkdir(parents=True, exist_ok=True)
    return os.open(runs_dir(root) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)


@contextmanager
def recordings_unchanged_by_runs(root: Path):
    """Hold the run lock around a write or delete in the recordings folder; RunGoing when a run holds it.

    A run's `dvc.lock` records a hash of the recordings that sample read: a clip saved or discarded
    mid-run would make it record clips the pipeline never saw. While this is held, `start_run` says a
    run is going, for the second or so a save takes.
    """
    descriptor = open_lock(root)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunGoing(going_run(root)) from None
        try:
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def going_run_name(root: Path) -> str | None:
    """The name of the run holding the lock now; None when no run is going."""
    if not (runs_dir(root) / LOCK_FILE).exists():
        return None
    descriptor = open_lock(root)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(descriptor, 200, 0).decode(errors="replace").strip() or "?"
    else:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return None
    finally:
        os.close(descriptor)


def going_run(root: Path) -> TrainingRun | None:
    name = going_run_name(root)
    return read_run(root, name) if name else None


def effective_status(root: Path, run: TrainingRun) -> str:
    """The run's status, where a run that says it is going but holds no lock any more has ended unheard."""
    if run.status not in ACTIVE or going_run_name(root) == run.name:
        return run.status
    return CANCELLED if (run.folder / CANCEL_FILE).exists() else VANISHED


# --- starting a run -----------------------------------------------------------------------------

def new_run_name(root: Path, now: datetime) -> str:
    base = f"{RUN_NAME_PREFIX}{now:%Y%m%d-%H%M%S}"
    for suffix in [""] + [f"-{index}" for index in range(2, 100)]:
        if not (runs_dir(root) / (base + suffix)).exists():
            return base + suffix
    raise RuntimeError(f"too many runs started in the second {base}")


def experiment_command(recordings: str, split_mode: str, overrides: list[str], name: str) -> list[str]:
    """The `dvc exp run --temp` of a run: list arguments, never a shell line (an override cannot become a
    command). `recordings` must be absolute: the temporary copy DVC runs in has no git-ignored folders."""
    settings = ["data.source=folder", f"data.path={recordings}", f"data.split={split_mode}", *overrides]
    return ["dvc", "exp", "run", "--temp", "--name", name, EXPERIMENT_TARGET,
            *[argument for setting in settings for argument in ("-S", setting)]]


def shell_line(command: list[str]) -> str:
    """The command as a terminal user would type it (for the page to show)."""
    import shlex
    return " ".join(shlex.quote(part) for part in command)


def run_environment(root: Path) -> dict[str, str]:
    """This interpreter's environment first on PATH (DVC runs `python -m stages.<name>`), output unbuffered
    (the page follows the log line by line), and the root's `stages` package importable."""
    environment = dict(os.environ)
    environment["PATH"] = str(Path(sys.executable).parent) + os.pathsep + environment.get("PATH", "")
    environment["PYTHONUNBUFFERED"] = "1"
    environment["PYTHONPATH"] = str(Path(root).resolve())
    return environment


def start_run(root: Path, recordings: str, split_mode: str, overrides: list[str],
              now: datetime | None = None) -> TrainingRun:
    """Start a run in the background and return it; RunGoing when one is going (the lock decides)."""
    root = Path(root).resolve()
    descriptor = open_lock(root)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise RunGoing(going_run(root)) from None
    try:
        name = new_run_name(root, now or datetime.now())
        folder = runs_dir(root) / name
        folder.mkdir()
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, name.encode(), 0)            # who holds the lock, for other sessions to see
        recordings_path = (root / recordings).resolve().as_posix()
        command = experiment_command(recordings_path, split_mode, list(overrides), name)
        state = {"name": name, "status": STARTING, "command": command, "started_at": time.time(),
                 "recordings": recordings, "split": split_mode, "overrides": list(overrides)}
        write_json_atomically(folder / STATE_FILE, state)
        with (folder / LOG_FILE).open("ab") as log:
            wrapper = subprocess.Popen(
                [sys.executable, "-m", WRAPPER_MODULE, "--root", str(root), "--run", name,
                 "--lock-fd", str(descriptor)],
                cwd=REPOSITORY_ROOT, env={**run_environment(root), "PYTHONPATH": str(REPOSITORY_ROOT)},
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, pass_fds=(descriptor,))
        # Reap the wrapper when it ends, so no zombie lingers in this server process.
        threading.Thread(target=wrapper.wait, daemon=True).start()
    finally:
        os.close(descriptor)       # the wrapper holds the lock from here on
    return TrainingRun(name, folder, state)


# --- cancelling ---------------------------------------------------------------------------------

def is_run_leader(process_id: int, run_name: str) -> bool:
    """Is `process_id` alive, leading its own group, and this run's wrapper (its command line names it)?"""
    try:
        if os.getpgid(process_id) != process_id:
            return False
    except ProcessLookupError:
        return False
    command_line = Path(f"/proc/{process_id}/cmdline")
    if command_line.exists():     # Linux: check what it runs, against a reused process id
        arguments = command_line.read_bytes().split(b"\0")
        return WRAPPER_MODULE.encode() in arguments and run_name.encode() in arguments
    return True


def cancel_run(root: Path, run: TrainingRun) -> bool:
    """End the run's process group (SIGTERM, SIGKILL after a grace); False when it is not going."""
    process_group = int(run.state.get("process_group") or 0)
    if going_run_name(root) != run.name or not process_group or not is_run_leader(process_group, run.name):
        return False
    (run.folder / CANCEL_FILE).write_text(f"{time.time()}\n")
    os.killpg(process_group, signal.SIGTERM)
    threading.Thread(target=kill_after_grace, args=(root, run.name, process_group), daemon=True).start()
    return True


def kill_after_grace(root: Path, run_name: str, process_group: int) -> None:
    """THREAD BOUNDARY: a thread of the server. SIGKILL whatever of the group still holds the lock."""
    deadline = time.monotonic() + CANCEL_GRACE_SECONDS
    while time.monotonic() < deadline:
        if going_run_name(root) != run_name:
            return
        time.sleep(0.5)
    try:
        os.killpg(process_group, signal.SIGKILL)
    except ProcessLookupError:
        pass


# --- reading the log ----------------------------------------------------------------------------

def log_lines(text: str) -> list[str]:
    """Lines as a terminal shows them: of a progress bar redrawn with carriage returns, its last state."""
    return [line.rsplit("\r", 1)[-1].rstrip() for line in text.splitlines()]


def read_progress(log_text: str, planned_stages: list[str]) -> Progress:
    states = {stage: "waiting" for stage in planned_stages}
    current, epoch, epochs = None, 0, 0
    for line in log_lines(log_text):
        if started := STAGE_STARTED.match(line):
            if current:
                states[current] = "done"
            current = started["stage"]
            states[current] = "running"
            epoch = epochs = 0
        elif skipped := STAGE_SKIPPED.match(line):
            states[skipped["stage"]] = "skipped"
        elif failed := STAGE_FAILED.match(line):
            states[failed["stage"]] = "failed"
            current = None
        elif (numbered := EPOCH.match(line)) and current == "train":
            epoch, epochs = int(numbered["epoch"]), int(numbered["epochs"])
        elif line.startswith("Ran experiment(s):") and current:
            states[current] = "done"
            current = None
    order = planned_stages + [stage for stage in states if stage not in planned_stages]
    return Progress([(stage, states[stage]) for stage in order], current, epoch, epochs)


def log_tail(log_text: str, lines: int = 20) -> str:
    return "\n".join(line for line in log_lines(log_text)[-lines:])


def failure_reason(log_text: str) -> list[str]:
    """What went wrong, in the pipeline's words: its warnings and the failing stage's message, no traceback.

    A stage that stops on purpose ends with its SystemExit message (e.g. "sample: not one usable clip
    ..."); one that crashed, with a traceback, of which only the last line (the error) is kept.
    """
    lines = [line for line in log_lines(log_text) if line.strip()]
    warnings = pipeline_warnings(log_text)
    failed_at = next((index for index, line in enumerate(lines) if STAGE_FAILED.match(line)), None)
    if failed_at is None:
        errors = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR: ")]
        return warnings + (errors[-1:] or ["the run stopped without saying why; see its log"])
    stage = STAGE_FAILED.match(lines[failed_at])["stage"]
    started_at = max((index for index, line in enumerate(lines[:failed_at]) if STAGE_STARTED.match(line)),
                     default=-1)
    output = [line for line in lines[started_at + 1:failed_at] if not NOISE.search(line)
              and not line.startswith(("> ", "WARNING: "))]
    message = stage_message(output)
    return warnings + ([message] if message else []) + [f"the {stage} stage stopped there"]


def pipeline_warnings(log_text: str) -> list[str]:
    """The stages' own warnings (e.g. "class 'thanks' has no usable clip ..."): printed while a stage ran,
    not DVC's bookkeeping between stages nor the libraries' noise."""
    warnings, in_stage = [], False
    for line in log_lines(log_text):
        if STAGE_STARTED.match(line):
            in_stage = True
        elif line.startswith(STAGE_ENDED):
            in_stage = False
        elif in_stage and line.startswith("WARNING: ") and not NOISE.search(line):
            warnings.append(line.removeprefix("WARNING: "))
    return warnings


def stage_message(output: list[str]) -> str:
    """The failing stage's last words: its SystemExit message, or the error line closing a traceback."""
    if not output:
        return ""
    tracebacks = [index for index, line in enumerate(output) if line.startswith("Traceback (most recent call last)")]
    if not tracebacks:
        return output[-1]
    after = [line for line in output[tracebacks[-1]:] if not line.startswith((" ", "\t", "Traceback", "^", "~"))]
    return after[-1] if after else ""


# --- the wrapper (runs in its own session) ------------------------------------------------------

def planned_stages(root: Path) -> list[str]:
    """The stages `dvc exp run <target>` goes through, in pipeline order (`dvc dag --dot <target>`)."""
    try:
        result = subprocess.run(executable(["dvc", "dag", "--dot", EXPERIMENT_TARGET]), cwd=root,
                                capture_output=True, text=True, timeout=120, env=run_environment(root))
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [match["stage"] for match in map(DAG_NODE.match, result.stdout.splitlines()) if match]


def executable(command: list[str]) -> list[str]:
    """`dvc ...` as this interpreter's module: the DVC installed beside the app, whatever PATH says."""
    return [sys.executable, "-m", *command] if command[0] == "dvc" else command


def experiment_commit(root: Path, name: str) -> str:
    """The commit `dvc exp run --name <name>` made under refs/exps/ (the run's results live there)."""
    listed = subprocess.run(["git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps/"], cwd=root,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    for line in listed:
        commit, reference = line.split(" ", 1)
        if reference.endswith(f"/{name}"):
            return commit
    raise KeyError(f"no experiment named {name} under refs/exps/")


def materialise_experiment_files(root: Path, commit: str, relative_paths: list[str], target: Path) -> None:
    """Each path as the experiment left it (git for git-tracked files, the DVC cache for outputs), under
    `target` with the same relative layout; the workspace is never touched."""
    import dvc.api
    for relative in relative_paths:
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        with dvc.api.open(relative, repo=str(root), rev=commit, mode="rb") as source:
            destination.write_bytes(source.read())


def keep_model(root: Path, run: TrainingRun) -> tuple[Path, dict]:
    """Copy the run's served model, out of its experiment, to <models>/recordings/<run>/ with its metrics;
    (model path, metrics)."""
    import shutil

    import yaml

    from app.reports import is_number, read_json
    from stages.lib.served import copy_bundle
    commit = experiment_commit(root, run.name)
    params = yaml.safe_load(subprocess.run(["git", "show", f"{commit}:params.yaml"], cwd=root, capture_output=True,
                                           text=True, check=True).stdout)    # the experiment's params
    paths = params["paths"]
    bundle = [paths[key] for key in ("model", "model_card", "frame_encoder_tflite", "head_tflite",
                                     "spotting_calibration")]
    staging = run.folder / "outputs"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        materialise_experiment_files(root, commit, [*bundle, paths["metrics"]], staging)
        metrics = {key: value for key, value in (read_json(staging / paths["metrics"]) or {}).items()
                   if is_number(value) or isinstance(value, str)}
        card_updates = {"metrics": metrics, "experiment": run.name, "trained_on": {
            "recordings": run.state.get("recordings"), "split": run.state.get("split"),
            "overrides": run.state.get("overrides")}}
        model_path = root / paths["model"]
        kept = copy_bundle(staging / paths["model"], model_path.parent / KEPT_MODELS_FOLDER / run.name, card_updates)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return kept, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description="Run one training experiment for the app (see the module doc).")
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--run", required=True)
    parser.add_argument("--lock-fd", required=True, type=int)   # inherited, already locked: held till we end
    arguments = parser.parse_args()
    root = arguments.root.resolve()
    run = read_run(root, arguments.run)
    if run is None:
        raise SystemExit(f"no run {arguments.run!r} under {runs_dir(root)}")
    cancelled = threading.Event()
    # SIGTERM comes to the whole group on Cancel: DVC and its stage end with us; note why, then finish.
    signal.signal(signal.SIGTERM, lambda signum, frame: cancelled.set())
    state = {**run.state, "status": RUNNING, "pid": os.getpid(), "process_group": os.getpgid(0)}
    write_json_atomically(run.folder / STATE_FILE, state)
    state["planned_stages"] = planned_stages(root)
    write_json_atomically(run.folder / STATE_FILE, state)
    print(f"$ {shell_line(state['command'])}", flush=True)
    returncode = 1
    if not cancelled.is_set():
        # The lock travels on to DVC too: should this wrapper die alone, the run still counts as going.
        process = subprocess.Popen(executable(state["command"]), cwd=root, env=run_environment(root),
                                   stdin=subprocess.DEVNULL, pass_fds=(arguments.lock_fd,))
        returncode = process.wait()      # a SIGTERM's handler returns, and the wait goes on (PEP 475)
    state.update(returncode=returncode, ended_at=time.time(), warnings=pipeline_warnings(run.log_text()))
    if cancelled.is_set():
        state["status"] = CANCELLED
    elif returncode != 0:
        state.update(status=FAILED, reason=failure_reason(TrainingRun(run.name, run.folder, state).log_text()))
    else:
        try:
            kept, metrics = keep_model(root, TrainingRun(run.name, run.folder, state))
            state.update(status=SUCCEEDED, model=kept.relative_to(root).as_posix(), metrics=metrics)
        except (OSError, ValueError, KeyError, subprocess.CalledProcessError) as error:
            state.update(status=FAILED, reason=[f"the run finished, but its model could not be kept: {error}"])
    write_json_atomically(run.folder / STATE_FILE, state)
    print(f"training run {run.name}: {state['status']}", flush=True)


if __name__ == "__main__":
    main()
