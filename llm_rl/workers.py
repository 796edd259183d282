"""Independent jobs of one comparison (its runs, the variance probe's shards) on several CPU cores at once.

Why: the tiny preset runs one torch thread (`llm_rl.experiment.configure_threads`: a 64-wide model has nothing to
split across threads), so one `llm-rl compare` process keeps one core busy however many the machine has. The
grid's runs share nothing but the read-only warm start, and each probe shard only reads it too, so they can run
in separate processes: ``llm-rl compare RECIPE --workers N`` (``auto``: one per usable core on a CPU-only machine
with the tiny preset, else one).

What does not change with the number of workers: every job seeds itself (a run from its seed, a probe shard from
``(seed, arm, length)``), writes only its own files, and is skipped when those files say it finished, so the
metrics are the same with 1 or N workers (tested) and a killed comparison resumes the same way.

Processes are started with ``spawn`` (a forked child would inherit the parent's torch and tokenizer threads in an
undefined state) and `multiprocessing.Pool` is used rather than `concurrent.futures` because `Pool.terminate` stops
the running jobs when one fails or the user presses Ctrl-C; an interrupted job resumes from its checkpoints.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from relabel_rl.config import ConfigError

__all__ = ["Job", "resolve_workers", "run_jobs"]


@dataclass(frozen=True)
class Job:
    """One unit of work: ``fn(*args, **kwargs)``, a top-level function (workers import it by name)."""

    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_workers(requested: str | int | None, *, single_threaded: bool) -> int:
    """The number of worker processes for ``--workers`` (``None`` or ``"auto"``: one per usable core when each
    job runs one torch thread — ``single_threaded`` — else 1).

    Raises:
      ConfigError: not a positive integer or ``auto``; more than one under ``accelerate launch`` (its processes
        already split every run's work between them).
    """
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if requested is None or str(requested) == "auto":
        return 1 if launched or not single_threaded else usable_cores()
    try:
        n = int(requested)
    except ValueError:
        raise ConfigError(f"--workers must be a positive integer or 'auto', got {requested!r}") from None
    if n < 1:
        raise ConfigError(f"--workers must be a positive integer or 'auto', got {n}")
    if n > 1 and launched:
        raise ConfigError(
            "--workers > 1 under accelerate launch: its processes already share every run; use --workers 1"
        )
    return n


def run_jobs(
    jobs: Sequence[Job], *, workers: int, initializer: Callable[[], None] | None = None
) -> Iterator[tuple[Job, Any, float]]:
    """Run ``jobs`` and yield ``(job, result, seconds)`` as each finishes.

    With one worker they run here, in order. With more, in ``workers`` spawned processes (each first calls
    ``initializer``, a top-level function), started in the given order (put the longest first: the last job to
    start bounds the wall time). The first exception stops every job and is raised here, naming the job.
    """
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            t0 = time.perf_counter()
            yield job, job.fn(*job.args, **job.kwargs), time.perf_counter() - t0
        return
    context = multiprocessing.get_context("spawn")
    pool = context.Pool(processes=min(workers, len(jobs)), initializer=_init_worker, initargs=(initializer,))
    try:
        for index, result, seconds, error in pool.imap_unordered(_call, list(enumerate(jobs)), chunksize=1):
            if error is not None:
                raise error
            yield jobs[index], result, seconds
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


def _init_worker(initializer: Callable[[], None] | None) -> None:
    # tqdm's default lock is a multiprocessing RLock (a named semaphore); a worker stopped by Pool.terminate never
    # releases it and the resource tracker then reports it as leaked. A worker's bars are its own: a thread lock.
    tqdm.set_lock(threading.RLock())
    if initializer is not None:
        initializer()


def _call(item: tuple[int, Job]) -> tuple[int, Any, float, BaseException | None]:
    index, job = item
    t0 = time.perf_counter()
    try:
        return index, job.fn(*job.args, **job.kwargs), time.perf_counter() - t0, None
    except Exception as e:
        # re-raised in the parent, with the job's name in front (and the worker's traceback)
        if isinstance(e, ConfigError):
            return index, None, time.perf_counter() - t0, ConfigError(f"{job.name}: {e}")
        failure = RuntimeError(f"{job.name} failed in a worker process:\n{traceback.format_exc()}")
        return index, None, time.perf_counter() - t0, failure
