"""Where a command's CPU time goes: every process's CPU seconds, grouped by workspace and what it runs.

Usage:
    python3 .ci/cpu_by_process.py cpu.json -- .ci/run      # run a command, sampling /proc every second
    python3 .ci/cpu_by_process.py cpu.json                 # the table again, from the samples kept

Reads /proc/<pid>/stat for every process on the machine once a second (Linux only, standard library
only, so it runs before the virtual environment exists) and keeps each process's latest CPU time
(user + system), its command line and working directory. A process that lives less than a second
may be missed, and one that ends loses at most its last second. Processes are grouped by the pytest
workspace they ran in (the tmp_path folder: `default`, `trained`, a test's name), or the checkout,
and by what they are (a pipeline stage, the dvc driver, pytest itself, Streamlit, Chromium, Ray,
pip). Kernel threads (no command line) are one group. Processes already running when the command
starts count from then on, not from their own start (the kernel's threads have run since boot).
"""
from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
import threading
import time

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def read_process(pid: str) -> tuple[str, float] | None:
    """(a key unique to this process's life, its CPU seconds so far), or None once it has gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()          # after "pid (comm) ": state is fields[0]
    return f"{pid}:{fields[19]}", (int(fields[11]) + int(fields[12])) / CLOCK_TICKS   # start time; utime + stime


def describe(pid: str) -> tuple[str, str]:
    """(command line, working directory) of a process, empty where it cannot be read."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            command = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()[:300]
        return command, os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return "", ""


def sample_once(seen: dict, started: float, first_pass: bool) -> None:
    """Each process's CPU time since sampling began into `seen` (key -> record).

    A process already running at the first pass counts from there (the kernel's threads have run
    since boot), one started later from its start.
    """
    now = round(time.monotonic() - started, 1)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        found = read_process(pid)
        if found is None:
            continue
        key, cpu_seconds = found
        if key not in seen:
            command, folder = describe(pid)
            seen[key] = {"cpu": 0.0, "before": cpu_seconds if first_pass else 0.0, "command": command,
                         "cwd": folder, "first": now, "last": now}
        seen[key].update(cpu=cpu_seconds - seen[key]["before"], last=now)


def sample_until(done: threading.Event, seen: dict, started: float) -> None:
    while not done.wait(1.0):
        sample_once(seen, started, first_pass=False)


def group_of(record: dict) -> tuple[str, str]:
    """(where it ran, what it is) for one process record."""
    command, folder = record["command"], record["cwd"]
    workspace = re.search(r"/pytest-\d+/([^/]+?)\d*/", folder + "/")
    where = workspace.group(1) if workspace else folder
    stage = re.search(r"-m stages\.(\w+)", command)
    kinds = (("dvc-run", lambda: "dvc" in command and (" repro" in command or " exp run" in command)),
             ("dvc", lambda: "dvc" in command), ("pytest", lambda: "pytest" in command),
             ("streamlit", lambda: "streamlit" in command), ("chromium", lambda: "chrom" in command),
             ("ray", lambda: "ray" in command), ("pip", lambda: "pip" in command))
    if not command:
        return "(kernel)", "kernel threads"
    if stage:
        return where, f"stage {stage.group(1)}"
    return where, next((kind for kind, matches in kinds if matches()), command.split(" ")[0][-30:])


def summary(seen: dict, rows: int = 40) -> str:
    cpu, spans = collections.Counter(), {}
    for record in seen.values():
        group = group_of(record)
        cpu[group] += record["cpu"]
        first, last = spans.get(group, (record["first"], record["last"]))
        spans[group] = (min(first, record["first"]), max(last, record["last"]))
    lines = [f"{sum(cpu.values()):.0f} CPU seconds in all; the largest groups (seconds from the start):",
             f"{'CPU s':>8}  {'where':34} {'what':18} {'from':>6} {'to':>6}"]
    for (where, what), seconds in cpu.most_common(rows):
        first, last = spans[(where, what)]
        lines.append(f"{seconds:8.1f}  {where[-34:]:34} {what[:18]:18} {first:6.0f} {last:6.0f}")
    return "\n".join(lines)


def main() -> int:
    arguments = sys.argv[1:]
    if not arguments or (len(arguments) > 1 and arguments[1] != "--"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    output, command = arguments[0], arguments[2:]
    if not command:
        with open(output) as handle:
            print(summary(json.load(handle)))
        return 0
    seen, done, started = {}, threading.Event(), time.monotonic()
    sample_once(seen, started, first_pass=True)           # before the command: what was already running
    sampler = threading.Thread(target=sample_until, args=(done, seen, started), daemon=True)
    sampler.start()
    try:
        returncode = subprocess.call(command)
    finally:
        done.set()
        sampler.join()
        sample_once(seen, started, first_pass=False)
        with open(output, "w") as handle:
            json.dump(seen, handle)
    print(summary(seen))
    return returncode


if __name__ == "__main__":
    sys.exit(main())
