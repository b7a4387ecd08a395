"""Where the per-clip work of `sample` and `extract` runs: this machine, or a Ray cluster. Results in input order.

Usage:
    from stages.lib.compute import ComputeSettings, map_in_order, map_on_workers
    compute = ComputeSettings.from_params(params)                      # params.yaml: compute
    for result in map_in_order(sample_one, jobs, compute): ...         # a function per item (sample)
    for result in map_on_workers(ClipEmbedder, (frames_path, recipe), jobs, compute): ...
        # a class built once per worker, then called per item (extract: each worker loads the encoder once)

Both hand back one result per item, in the items' order, whichever engine ran
them, so what the driver writes from them is the same bytes.

`compute.engine`:
- `local` (the default): `map_in_order` is a process pool on this machine
  (`multiprocessing.Pool.imap`, ordered); `map_on_workers` builds the worker
  once in this process and calls it item by item, as the items come. Ray is
  never imported, so a machine without it runs the default pipeline.
- `ray`: Ray Data, on Ray's own scheduler. Every item is one block, so one
  task (past `MAX_BLOCKS` items, a few share one): `map_in_order` runs Ray
  tasks, `map_on_workers` an actor pool of `compute.workers` actors (0: as
  many as the cluster's CPUs hold), each reserving `compute.cpus_per_worker`
  CPUs. `preserve_order` hands the results back in input order. A worker
  that dies costs only the items it had in flight: Ray Data restarts a dead
  actor and resubmits its tasks, and retries a task whose process died.
  With `compute.address` null a Ray instance is started on this machine for
  the run, and stopped after it; with an address the run joins that cluster
  as a driver and leaves it up.

What travels: items and results are pickled here, one bytes column, so they
come back exactly as they left (arrays, dicts, floats) without Arrow's type
conversions. The `stages` package is shipped to the workers (Ray's
`py_modules`); the data is not: a worker opens the paths its items name, so
every machine must see the data at the same absolute path (a shared
filesystem, or a copy put there by `dvc pull`; docs/scale-out.md).

An item function that raises `WorkerError` stops the run with that message
on either engine (a machine that cannot see the data); anything else per item
(a bad clip) is the stage's business and comes back as a result, never a
failed task.

Set $SIGNLANG_WORKER_LOG to a folder every worker can write, and each worker
process appends a line there per item it finished (`<host>-<pid>.log`): who
did what, and how many items a killed worker made others redo.
"""
from __future__ import annotations

import logging
import math
import multiprocessing
import os
import pickle
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENGINES = ("local", "ray")
# One item running and one waiting per actor: it never idles between items, and when it dies
# at most these two are redone.
MAX_ITEMS_IN_FLIGHT_PER_WORKER = 2
# Past this many items, blocks hold several: each block costs Ray Data a task and an object,
# and 10,000 of them take seconds to plan, not minutes.
MAX_BLOCKS = 10_000
WORKER_CPUS_VARIABLE = "SIGNLANG_WORKER_CPUS"   # set on Ray workers: the CPUs Ray reserved for each
WORKER_LOG_VARIABLE = "SIGNLANG_WORKER_LOG"
# Ray Data's own threads that call into Ray's core worker: its executor's scheduling loop, its metadata
# prefetcher and its block prefetcher (names as Ray 2.60 gives them). A run that started Ray ends them first.
BLOCK_PREFETCHER_THREAD = "Prefetcher"
RAY_DATA_THREAD_PREFIXES = ("StreamingExecutor-", "ray-data-", BLOCK_PREFETCHER_THREAD)
RAY_DATA_THREADS_SECONDS = 60


class WorkerError(RuntimeError):
    """What must stop the run, not a bad item (a worker without the data, a cluster out of reach); the message
    is for the user. Raised by an item function on a worker, or here."""


@dataclass(frozen=True)
class ComputeSettings:
    engine: str = "local"            # local | ray
    address: str | None = None       # ray: None starts a Ray here; "host:port" (or "auto") joins a cluster
    workers: int = 0                 # ray: parallel tasks or actors; 0 = as many as the cluster's CPUs hold
    cpus_per_worker: int = 1         # ray: CPUs reserved per task or actor (extract's TFLite threads)

    @classmethod
    def from_params(cls, params: dict) -> ComputeSettings:
        compute = params["compute"]
        return cls(compute["engine"], compute["address"], int(compute["workers"]), int(compute["cpus_per_worker"]))

    def describe(self) -> str:
        if self.engine == "local":
            return "local"
        return f"ray ({self.address or 'a Ray started on this machine'})"


def worker_cpu_count() -> int:
    """CPUs this worker may use: what Ray reserved for it, or every core of this machine when local."""
    return int(os.environ.get(WORKER_CPUS_VARIABLE) or os.cpu_count() or 1)


def map_in_order(function: Callable[[Any], Any], items: Iterable, settings: ComputeSettings) -> Iterator:
    """function(item) for every item, on worker processes, yielded in the items' order."""
    if settings.engine == "local":
        return map_in_local_pool(function, items)
    return map_on_ray(items, settings, function=function)


def map_on_workers(worker_class: type, worker_args: tuple, items: Iterable, settings: ComputeSettings) -> Iterator:
    """worker(item) for every item, with `worker_class(*worker_args)` built once per worker; in order.

    Locally the one worker lives in this process and `items` is consumed as it
    goes (a lazy iterable keeps reading ahead of the work). On Ray, the items
    are pickled first, all of them; an item may shed what another process can
    fetch for itself (see extract's ClipJob).
    """
    if settings.engine == "local":
        return map_in_this_process(worker_class, worker_args, items)
    return map_on_ray(items, settings, worker_class=worker_class, worker_args=worker_args)


# --- local -------------------------------------------------------------------------------------------

def map_in_local_pool(function: Callable, items: Iterable) -> Iterator:
    # imap yields in input order; chunks of 2 keep every process busy without
    # holding many decoded clips in the queue.
    with multiprocessing.Pool(os.cpu_count() or 1) as pool:
        yield from pool.imap(LoggedFunction(function).call_positioned, enumerate(items), chunksize=2)


def map_in_this_process(worker_class: type, worker_args: tuple, items: Iterable) -> Iterator:
    worker = LoggedWorker(worker_class, worker_args)
    for position, item in enumerate(items):
        yield worker(item, position)


class WorkLog:
    """One line per finished item in $SIGNLANG_WORKER_LOG/<host>-<pid>.log, when that variable is set."""

    def __init__(self):
        folder = os.environ.get(WORKER_LOG_VARIABLE)
        self.pid = os.getpid()
        self.path = Path(folder) / f"{socket.gethostname()}-{self.pid}.log" if folder else None
        self.write("started")

    def write(self, line: str) -> None:
        if self.path is not None:
            with self.path.open("a") as handle:     # appended and closed per line: a kill loses no finished line
                handle.write(f"{line}\n")


_process_log: WorkLog | None = None


def process_log() -> WorkLog:
    """This process's log (a forked pool process gets its own, not its parent's)."""
    global _process_log
    if _process_log is None or _process_log.pid != os.getpid():
        _process_log = WorkLog()
    return _process_log


class LoggedFunction:
    """An item function whose finished items are logged (picklable: pool processes and Ray tasks receive it)."""

    def __init__(self, function: Callable):
        self.function = function

    def __call__(self, item, position: int):
        result = self.function(item)
        process_log().write(f"done {position}")
        return result

    def call_positioned(self, positioned: tuple[int, Any]):
        position, item = positioned
        return self(item, position)


class LoggedWorker:
    """worker_class(*worker_args), built once, whose finished items are logged."""

    def __init__(self, worker_class: type, worker_args: tuple):
        process_log()
        self.worker = worker_class(*worker_args)

    def __call__(self, item, position: int):
        result = self.worker(item)
        process_log().write(f"done {position}")
        return result


# --- ray ---------------------------------------------------------------------------------------------

def map_on_ray(items: Iterable, settings: ComputeSettings, function: Callable | None = None,
               worker_class: type | None = None, worker_args: tuple = ()) -> Iterator:
    """Ray Data over the pickled items: tasks running `function`, or an actor pool of `worker_class`."""
    if settings.address is not None:
        send_token_if_there_is_one()     # before Ray is imported: it reads the mode once
    try:
        import ray
        from ray.data import ActorPoolStrategy, DataContext, TaskPoolStrategy
    except ImportError as error:
        raise WorkerError(f"compute.engine is 'ray' but Ray Data cannot be imported ({error}): "
                          "pip install -r requirements.txt, or set compute.engine: local") from None

    rows = [{"position": position, "payload": pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)}
            for position, item in enumerate(items)]
    if not rows:
        return
    started_here = connect(settings)
    try:
        context = DataContext.get_current()
        context.execution_options.preserve_order = True   # results in input order: deterministic outputs
        context.enable_progress_bars = False              # the stage's own bar counts clips, cluster-wide
        dataset = ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_BLOCKS))
        if worker_class is None:
            tasks = TaskPoolStrategy(size=settings.workers) if settings.workers else None   # None: as CPUs allow
            dataset = dataset.map_batches(RayFunctionBatch(function), batch_size=1,
                                          num_cpus=settings.cpus_per_worker, compute=tasks)
        else:
            pool = ActorPoolStrategy(size=actor_count(settings),
                                     max_tasks_in_flight_per_actor=MAX_ITEMS_IN_FLIGHT_PER_WORKER)
            dataset = dataset.map_batches(RayWorkerBatch, fn_constructor_args=(worker_class, worker_args),
                                          batch_size=1, compute=pool, num_cpus=settings.cpus_per_worker)
        results = iter(dataset.iter_rows())
        try:
            for row in results:
                result = pickle.loads(row["payload"])
                if isinstance(result, WorkerFailure):
                    raise WorkerError(result.message)
                yield result
        finally:
            # Stop Ray Data's executor thread before Ray shuts down: left running (a worker's error ends
            # the loop early), it touched the shut-down core worker, and Ray then ended this whole
            # process (seen in CI: "The core worker has already been shutdown ... The process will exit").
            results.close()
    finally:
        if started_here:
            wait_for_ray_data_threads(RAY_DATA_THREADS_SECONDS)
            ray.shutdown()


def wait_for_ray_data_threads(timeout_seconds: float) -> None:
    """Join Ray Data's threads before `ray.shutdown()`. Closing the results shuts its executor down, but
    that gives its scheduling loop only 2 s to stop; on a busy CPU a thread still at work after the
    shutdown touched the shut-down core worker, and Ray ended this whole process (CI, twice after a
    worker's error: "The core worker has already been shutdown ... The process will exit", no test
    summary)."""
    deadline = time.monotonic() + timeout_seconds
    for thread in threading.enumerate():
        if thread is threading.current_thread() or not thread.name.startswith(RAY_DATA_THREAD_PREFIXES):
            continue
        if thread.name == BLOCK_PREFETCHER_THREAD:
            # The block prefetcher's thread waits, parked, for more blocks until its owner's stop(), which
            # Ray Data calls only when the owner is collected: call it now (the thread runs its owner's method).
            owner = getattr(getattr(thread, "_target", None), "__self__", None)
            if callable(getattr(owner, "stop", None)):
                owner.stop()
        thread.join(max(0.0, deadline - time.monotonic()))


def connect(settings: ComputeSettings) -> bool:
    """Start or join Ray for this run; True when this call did (so the run ends it again)."""
    import ray

    import stages
    if ray.is_initialized():
        return False
    runtime_env = {"py_modules": [stages],    # our code travels to every worker; the data does not
                   "env_vars": {WORKER_CPUS_VARIABLE: str(settings.cpus_per_worker),
                                **({WORKER_LOG_VARIABLE: os.environ[WORKER_LOG_VARIABLE]}
                                   if os.environ.get(WORKER_LOG_VARIABLE) else {})}}
    quiet = dict(logging_level=logging.WARNING, log_to_driver=True, configure_logging=True)
    started = time.perf_counter()
    if settings.address is None:
        # "local": a new Ray for this run only, never one that someone else started on this machine.
        ray.init(address="local", include_dashboard=False, runtime_env=runtime_env, **quiet)
    else:
        check_reachable(settings.address)
        try:
            ray.init(address=settings.address, runtime_env=runtime_env, **quiet)
        except (ConnectionError, RuntimeError) as error:
            raise WorkerError(f"cannot join the Ray cluster at {settings.address} ({type(error).__name__}: "
                              f"{str(error).splitlines()[0]}): is `ray start --head` running there, and does "
                              "this machine hold its token in ~/.ray/auth_token? (docs/scale-out.md)") from None
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    resources = ray.cluster_resources()
    print(f"compute: Ray {'started here' if settings.address is None else 'at ' + settings.address} in "
          f"{time.perf_counter() - started:.1f} s: {len(ray.nodes())} node(s), {resources.get('CPU', 0):g} CPUs",
          flush=True)
    return True


def check_reachable(address: str, timeout_seconds: float = 5.0) -> None:
    """Fail in seconds on a head that does not answer: ray.init would retry for minutes."""
    if address == "auto" or address.startswith("ray://"):
        return
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=timeout_seconds).close()
    except OSError as error:
        raise WorkerError(f"cannot join the Ray cluster at {address}: {error}; is `ray start --head "
                          f"--port={port}` running on {host}? (docs/scale-out.md)") from None


def send_token_if_there_is_one() -> None:
    """Join a cluster with the token this machine holds, as `ray start` does (Ray 2.59+).

    `ray start --head` turns token authentication on when a token exists
    (~/.ray/auth_token, $RAY_AUTH_TOKEN or $RAY_AUTH_TOKEN_PATH), but a driver
    joining it sends that token only under RAY_AUTH_MODE=token; without it the
    cluster refuses the driver. An explicit RAY_AUTH_MODE is left as it is.
    Ray reads the mode when it is first imported, so this runs before that.
    """
    has_token = (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                 or (Path.home() / ".ray" / "auth_token").exists())
    if has_token:
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def actor_count(settings: ComputeSettings) -> int:
    """compute.workers, or as many actors as the cluster's CPUs hold at compute.cpus_per_worker each."""
    import ray
    if settings.workers:
        return settings.workers
    return max(1, math.floor(ray.cluster_resources().get("CPU", 1) / settings.cpus_per_worker))


class RayFunctionBatch:
    """One Ray Data batch (one item) through an item function: {position, payload} in and out."""

    def __init__(self, function: Callable):
        self.function = LoggedFunction(function)

    def __call__(self, batch: dict) -> dict:
        return run_batch(self.function, batch)


class RayWorkerBatch:
    """The actor Ray Data keeps per pool slot: builds the worker once, then runs one item per batch."""

    def __init__(self, worker_class: type, worker_args: tuple):
        self.worker = LoggedWorker(worker_class, worker_args)

    def __call__(self, batch: dict) -> dict:
        return run_batch(self.worker, batch)


@dataclass(frozen=True)
class WorkerFailure:
    """A WorkerError travelling back as a result: Ray Data would wrap the exception and keep only its text."""
    message: str


def run_batch(call: Callable, batch: dict) -> dict:
    import numpy as np
    positions = [int(position) for position in batch["position"]]
    results = []
    for position, payload in zip(positions, batch["payload"]):
        try:
            result = call(pickle.loads(payload), position)
        except WorkerError as error:
            result = WorkerFailure(str(error))
        results.append(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    return {"position": np.array(positions, np.int64), "payload": np.array(results, dtype=object)}
