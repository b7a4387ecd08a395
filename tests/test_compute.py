"""Both compute engines give the same results in the items' order; a worker error stops the run with its message.

The Ray tests join the session's one Ray head (`ray_cluster` in conftest.py), as a
stage joins a cluster through `compute.address`.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from stages.lib.compute import ComputeSettings, WorkerError, map_in_order, map_on_workers, worker_cpu_count
from tests.conftest import REPO_ROOT, command_env, free_port

LOCAL = ComputeSettings()
ITEMS = list(range(12))


def uneven_square(number: int) -> tuple[int, int]:
    """Every fourth item is slow, so later items finish first and must still come back in order."""
    time.sleep(0.3 if number % 4 == 0 else 0.01)
    return number, number * number


class CountingWorker:
    """State built once per worker: it adds `offset` and counts the items it saw."""

    def __init__(self, offset: int):
        self.offset = offset
        self.items_seen = 0

    def __call__(self, number: int) -> tuple[int, int, int]:
        self.items_seen += 1
        time.sleep(0.3 if number % 4 == 0 else 0.01)
        return number + self.offset, self.items_seen, worker_cpu_count()


def refuse_seven(number: int) -> int:
    if number == 7:
        raise WorkerError("worker test-host cannot see /data/clip7.mp4")
    return number


def ship_this_module_to_ray_workers() -> None:
    """The workers import `stages` (shipped by the compute module), not the tests: send these functions by value."""
    import ray.cloudpickle
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def test_local_results_come_back_in_the_items_order():
    assert list(map_in_order(uneven_square, ITEMS, LOCAL)) == [(n, n * n) for n in ITEMS]


def test_a_local_worker_is_built_once_and_takes_items_as_they_come():
    taken = []

    def items():
        for number in ITEMS:
            taken.append(number)
            yield number
    results = map_on_workers(CountingWorker, (100,), items(), LOCAL)
    first = next(results)
    assert first == (100, 1, os.cpu_count()) and taken == [0]      # one item read, one result: nothing ahead
    rest = list(results)
    assert [result[0] for result in rest] == [n + 100 for n in ITEMS[1:]]
    assert [result[1] for result in rest] == list(range(2, 13))    # one worker saw them all


@pytest.mark.parametrize("mapper", ["function", "worker"])
def test_a_worker_error_stops_a_local_run_with_its_message(mapper):
    with pytest.raises(WorkerError, match=r"^worker test-host cannot see /data/clip7.mp4$"):
        if mapper == "function":
            list(map_in_order(refuse_seven, ITEMS, LOCAL))
        else:
            list(map_on_workers(type("Refuser", (), {"__call__": lambda self, n: refuse_seven(n)}), (), ITEMS, LOCAL))


def test_the_local_engine_never_imports_ray():
    program = ("import functools, sys\n"
               "from stages.lib.compute import ComputeSettings, map_in_order, map_on_workers\n"
               "import stages.sample, stages.extract\n"
               "assert list(map_in_order(abs, [-1, -2], ComputeSettings())) == [1, 2]\n"
               "assert list(map_on_workers(functools.partial, (int,), ['3'], ComputeSettings())) == [3]\n"
               "assert not any(name == 'ray' or name.startswith('ray.') for name in sys.modules), 'ray imported'\n")
    result = subprocess.run([sys.executable, "-c", program], cwd=REPO_ROOT, env=command_env(REPO_ROOT),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_on_ray_tasks_and_actors_give_the_local_results_in_order(ray_cluster):
    ship_this_module_to_ray_workers()
    on_ray = ComputeSettings("ray", ray_cluster, workers=2, cpus_per_worker=1)
    assert list(map_in_order(uneven_square, ITEMS, on_ray)) == list(map_in_order(uneven_square, ITEMS, LOCAL))

    results = list(map_on_workers(CountingWorker, (100,), ITEMS, on_ray))
    assert [result[0] for result in results] == [n + 100 for n in ITEMS]
    assert {result[2] for result in results} == {1}          # each actor runs on the CPUs Ray reserved for it
    # Two actors shared the items, each counting its own from 1: built once each, not once per item.
    counts = sorted(result[1] for result in results)
    assert counts[-1] > 1 and counts.count(1) == 2


def test_a_worker_error_on_ray_stops_the_run_with_its_message_not_a_ray_traceback(ray_cluster):
    ship_this_module_to_ray_workers()
    on_ray = ComputeSettings("ray", ray_cluster, workers=2, cpus_per_worker=1)
    with pytest.raises(WorkerError) as raised:
        list(map_in_order(refuse_seven, ITEMS, on_ray))
    assert str(raised.value) == "worker test-host cannot see /data/clip7.mp4"


def test_joining_a_cluster_that_is_not_there_fails_at_once_saying_what_to_start():
    address = f"127.0.0.1:{free_port()}"                  # nothing listens there
    started = time.monotonic()
    with pytest.raises(WorkerError, match=rf"cannot join the Ray cluster at {address}: .*is `ray start --head"):
        list(map_in_order(abs, ITEMS, ComputeSettings("ray", address)))
    assert time.monotonic() - started < 60                # not Ray's minutes of retries
