"""Training runs from the app: the command, reading DVC's log, and a real run started, refused twice, cancelled.

Usage:
    python -m pytest -q tests/test_training.py          # about half a minute: one real `dvc exp run`
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from app.training import (
    CANCELLED,
    RUNNING,
    RunGoing,
    cancel_run,
    effective_status,
    experiment_command,
    failure_reason,
    going_run_name,
    pipeline_warnings,
    read_progress,
    read_run,
    start_run,
)
from tests.conftest import DVC, make_workspace, run_unchecked, write_recordings

# What DVC and the stages print, cut from a real run of the pipeline on recordings.
SUCCESSFUL_LOG = """\
WARNING: No file hash info found for '/ws/data/frames.h5'. It won't be created.
Reproducing experiment 'rec-20261201-143000'
Stage 'generate' didn't change, skipping
Running stage 'sample':
> python -m stages.sample
sample:   0%|          | 0/24 [00:00<?, ?file/s]\rsample: 100%|##########| 24/24 [00:00<00:00, 51.51file/s]
sampled 24 clips; refused 0 files (see data/manifest.csv)
Updating lock file 'dvc.lock'

Running stage 'extract':
> python -m stages.extract
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796165241.048619   14739 port.cc:153] oneDNN custom operations are on.
embedded 24 clips, reused 0 from the cache (tflite-xnnpack)
Updating lock file 'dvc.lock'

Running stage 'train':
> python -m stages.train
Epoch 1/30
4/4 - 4s - 917ms/step - accuracy: 0.4098 - loss: 1.3602 - val_accuracy: 0.3333 - val_loss: 1.3694
Epoch 2/30
4/4 - 0s - 53ms/step - accuracy: 0.5410 - loss: 1.3072 - val_accuracy: 0.2222 - val_loss: 1.3746
Epoch 3/30
"""
PLANNED = ["generate", "sample", "extract", "train", "finetune", "assemble", "calibrate", "evaluate"]

SAMPLE_FAILED_LOG = """\
Running stage 'sample':
> python -m stages.sample
sampled 0 clips; refused 6 files (see data/manifest.csv)
     6 refused, too short (e.g. data/recordings/thanks/ana_20261201-140007.mp4: too short: 2 frames at 10 frames/s, need at least 3 (sample.min_frames))
WARNING: class 'thanks' has no usable clip: all 3 of its files were refused (3 too short); it cannot be learned
WARNING: class 'wave' has no usable clip: all 3 of its files were refused (3 too short); it cannot be learned
sample: not one usable clip among 6 files found under data/recordings (data.source: folder); each file's reason is in data/manifest.csv
ERROR: failed to reproduce 'sample': failed to run: python -m stages.sample, exited with 1
"""

CRASHED_LOG = """\
Running stage 'train':
> python -m stages.train
Epoch 1/60
Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
  File "/ws/stages/train.py", line 216, in <module>
    main()
  File "/ws/stages/train.py", line 150, in train_head
    head.fit(train, validation_data=validation)
    ~~~~~~~~^^^^^^^
ValueError: Input 0 of layer "head" is incompatible with the layer: expected shape=(None, 8, 1280)
ERROR: failed to reproduce 'train': failed to run: python -m stages.train, exited with 1
"""


def test_the_command_is_dvc_exp_run_outside_the_workspace_with_every_setting_as_its_own_argument():
    command = experiment_command("/home/ana/signs/data/recordings", "signer", ["train.epochs=3", "base.image_size=64"],
                                 "rec-1")
    assert command == ["dvc", "exp", "run", "--temp", "--name", "rec-1", "evaluate", "-S", "data.source=folder",
                       "-S", "data.path=/home/ana/signs/data/recordings", "-S", "data.split=signer",
                       "-S", "train.epochs=3", "-S", "base.image_size=64"]


def test_progress_names_the_stage_running_and_the_epoch_within_train():
    progress = read_progress(SUCCESSFUL_LOG, PLANNED)
    assert progress.stages == [("generate", "skipped"), ("sample", "done"), ("extract", "done"),
                               ("train", "running"), ("finetune", "waiting"), ("assemble", "waiting"),
                               ("calibrate", "waiting"), ("evaluate", "waiting")]
    assert (progress.current, progress.epoch, progress.epochs) == ("train", 3, 30)
    finished = read_progress(SUCCESSFUL_LOG + "Updating lock file 'dvc.lock'\n\nRan experiment(s): rec-1\n", PLANNED)
    assert finished.current is None and ("train", "done") in finished.stages


def test_a_failed_stage_is_explained_in_the_pipelines_words():
    reason = failure_reason(SAMPLE_FAILED_LOG)
    assert reason == [
        "class 'thanks' has no usable clip: all 3 of its files were refused (3 too short); it cannot be learned",
        "class 'wave' has no usable clip: all 3 of its files were refused (3 too short); it cannot be learned",
        "sample: not one usable clip among 6 files found under data/recordings (data.source: folder); each file's "
        "reason is in data/manifest.csv",
        "the sample stage stopped there"]
    assert read_progress(SAMPLE_FAILED_LOG, PLANNED).stages[1] == ("sample", "failed")


def test_a_crash_shows_its_error_line_never_the_traceback():
    reason = failure_reason(CRASHED_LOG)
    assert reason == ['ValueError: Input 0 of layer "head" is incompatible with the layer: expected '
                      'shape=(None, 8, 1280)', "the train stage stopped there"]
    assert not any("Traceback" in line or "File " in line for line in reason)


def test_an_error_of_dvc_itself_is_shown_and_library_noise_is_not():
    log = ("WARNING: No file hash info found for 'x'. It won't be created.\n"
           "ERROR: Unable to acquire lock. Most likely another DVC process is running.\n")
    assert failure_reason(log) == ["Unable to acquire lock. Most likely another DVC process is running."]
    assert pipeline_warnings(SUCCESSFUL_LOG) == []


def test_a_run_name_from_the_address_never_reaches_the_file_system(tmp_path):
    for name in ("../../etc", "rec-20261201-143000/../../x", "", "state.json"):
        assert read_run(tmp_path, name) is None


# --- a real run -------------------------------------------------------------------------------------

@pytest.fixture
def recorded_workspace(tmp_path):
    """A tiny pipeline repository with recordings of two signs and idle clips by two signers."""
    root = make_workspace(tmp_path / "repo")
    write_recordings(root / "data" / "recordings", {"wave": 6, "thanks": 6, "_none": 6})
    yield root
    run_name = going_run_name(root)
    if run_name:                      # a failed assertion must not leave a run behind
        cancel_run(root, read_run(root, run_name))
        wait_until(lambda: going_run_name(root) is None, 30)


def wait_until(condition, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    return None


def process_alive(process_id: int) -> bool:
    try:
        os.kill(process_id, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{process_id}/stat").read_text().split(") ")[1].startswith("Z")   # not a zombie


def workspace_state(root: Path) -> tuple[str, str, bytes]:
    """What a run must leave as it was: `git status`, `dvc status`, and params.yaml's bytes."""
    git = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True)
    dvc = run_unchecked(DVC + ["status", "--json"], root)
    return git.stdout, dvc.stdout, (root / "params.yaml").read_bytes()


def test_one_run_at_a_time_and_cancel_ends_its_process_group_and_nothing_else(recorded_workspace):
    root = recorded_workspace
    before = workspace_state(root)
    bystander = subprocess.Popen(["sleep", "120"], start_new_session=True)     # someone else's process
    try:
        run = start_run(root, "data/recordings", "stratified", ["train.epochs=2"])
        with pytest.raises(RunGoing) as refused:
            start_run(root, "data/recordings", "stratified", [])
        assert refused.value.run.name == run.name
        running = wait_until(lambda: (current := read_run(root, run.name)).status == RUNNING and current, 60)
        assert running, read_run(root, run.name).log_text()
        group = running.state["process_group"]
        assert wait_until(lambda: "Running stage" in running.log_text(), 60), running.log_text()

        assert cancel_run(root, running)
        assert wait_until(lambda: going_run_name(root) is None, 30), "the run still holds its lock"
        assert wait_until(lambda: subprocess.run(["pgrep", "-g", str(group)], capture_output=True).returncode, 15)
        assert effective_status(root, read_run(root, run.name)) == CANCELLED
        assert workspace_state(root) == before                 # a Cancel leaves no half-run workspace
        assert process_alive(bystander.pid) and process_alive(os.getpid())
        assert not cancel_run(root, read_run(root, run.name))                 # nothing left to cancel

        again = start_run(root, "data/recordings", "stratified", ["generate.classes=99"])   # the lock is free
        assert wait_until(lambda: going_run_name(root) is None, 120)
        assert "generate.classes is 99; the built-in vocabulary has 12" in read_run(root, again.name).state["reason"]
        assert workspace_state(root) == before
    finally:
        os.killpg(bystander.pid, signal.SIGKILL)
        bystander.wait()
