"""`.ci/cpu_by_process.py`, the CI profiler: its groups, and the CPU time of a real busy child.

Usage:
    python -m pytest -q tests/test_cpu_by_process.py
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / ".ci" / "cpu_by_process.py"


def load_tool():
    """The script as a module (its folder, `.ci`, is no package)."""
    spec = importlib.util.spec_from_file_location("cpu_by_process", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_processes_are_grouped_by_workspace_and_what_they_run():
    tool = load_tool()
    record = {"cpu": 1.0, "first": 0, "last": 1}
    stage = {**record, "command": "/venv/bin/python -m stages.extract", "cwd": "/tmp/pytest-of-ci/pytest-3/default0/repo"}
    driver = {**record, "command": "/venv/bin/python -m dvc exp run -S train.seed=1", "cwd": "/tmp/pytest-of-ci/pytest-3/trained0/repo"}
    kernel = {**record, "command": "", "cwd": ""}
    assert tool.group_of(stage) == ("default", "stage extract")
    assert tool.group_of(driver) == ("trained", "dvc-run")
    assert tool.group_of(kernel) == ("(kernel)", "kernel threads")


def test_a_busy_childs_cpu_time_is_counted_and_bad_arguments_are_refused(tmp_path):
    samples = tmp_path / "cpu.json"
    busy = "import time\nend = time.process_time() + 2.5\nwhile time.process_time() < end: pass\nimport time; time.sleep(1.2)"
    result = subprocess.run([sys.executable, str(SCRIPT), str(samples), "--", sys.executable, "-c", busy],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    records = json.loads(samples.read_text()).values()
    # Only the child started here (it inherits this test's own tmp_path as its working folder): the profiler
    # sees every process on the machine, and tests running beside this one start `python -c` children too.
    child = [record for record in records if record["command"].startswith(f"{sys.executable} -c")
             and record.get("cwd") == str(tmp_path)]
    assert len(child) == 1 and 1.5 <= child[0]["cpu"] <= 3.5, child     # the last second may be lost
    assert result.stdout.splitlines()[0].endswith("the largest groups (seconds from the start):")
    assert any(line.split()[0] == f"{child[0]['cpu']:.1f}" for line in result.stdout.splitlines()[2:])

    refused = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "Usage" in refused.stderr
