"""Run a sweep: the points not yet in the results file, on a dask cluster or serially in this process.

Only the client process writes the results file: workers return each point's metrics, and every batch of
completed points is appended at once. A worker that dies mid-point loses nothing already written; the
scheduler reruns its point on another worker (up to dask's ``distributed.scheduler.allowed-failures``
times, 3 by default, then the point is reported as failed and the sweep goes on).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import dask
import numba
import torch
from distributed import Client, LocalCluster, WorkerPlugin, as_completed
from threadpoolctl import threadpool_limits
from tqdm import tqdm

import crossbar
from crossbar import progress as progress_bars
from crossbar.sweep.grid import expand
from crossbar.sweep.point import Point, evaluate_point
from crossbar.sweep.spec import SweepSpec
from crossbar.sweep.store import ResultsStore, writer_lock

PLUGIN_NAME = "crossbar-single-threaded"


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch, numba and the BLAS/OpenMP pools (numpy, scipy) on one thread inside the block, then restore.

    One point per core: on a loaded machine, idle BLAS threads spin-waiting for a core made a point of the
    default chip take 24-51 s instead of 1.2 s (2 cores shared, load average ~11).
    """
    before = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(before[0])
        numba.set_num_threads(before[1])


class SingleThreaded(WorkerPlugin):
    """Pins torch, numba and the BLAS/OpenMP pools to one thread on every worker, including workers that join
    or restart later."""

    def setup(self, worker: Any) -> None:
        torch.set_num_threads(1)
        numba.set_num_threads(1)
        threadpool_limits(1)


def run_point(point: Point) -> dict[str, Any]:
    """``evaluate_point`` plus where and when it ran (runs on a worker)."""
    metrics = evaluate_point(point)
    finished = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return {**metrics, "worker": f"{socket.gethostname()}:{os.getpid()}", "finished_at": finished}


def result_row(point: Point, result: dict[str, Any], sweep: str) -> dict[str, Any]:
    """One row of the results file: key, grid coordinates, metrics, provenance and the exact config (JSON)."""
    return {
        "key": point.key,
        "sweep": sweep,
        **point.coordinates(),
        **result,
        "crossbar_version": crossbar.__version__,
        "config": json.dumps(point.config(), sort_keys=True),
    }


@dataclass
class SweepRun:
    """What a run did: ``points`` of the grid, ``skipped`` (already in the file), ``computed`` now, and
    ``failures``: (grid coordinates, error text) of points that raised or killed their workers too often."""

    points: list[Point]
    skipped: int = 0
    computed: int = 0
    failures: list[tuple[dict[str, Any], str]] = field(default_factory=list)


# dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which makes glibc hand freed memory back to the OS
# at once; the large temporaries of programming a chip (IR drop) are then mapped afresh every time, and a
# point took 2.18 s instead of 1.17 s (default chip, digits MLP, one thread; see docs/sweeps.md). Unset it.
NO_MALLOC_TRIM = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


def local_cluster(workers: int) -> LocalCluster:
    """``workers`` single-threaded worker processes on this machine (no dashboard)."""
    with dask.config.set(NO_MALLOC_TRIM):
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            env={"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
        )


def available_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass
class SweepPlan:
    """The grid of a spec against a results file: all ``points`` and those not yet in ``store`` (``todo``)."""

    spec: SweepSpec
    points: list[Point]
    store: ResultsStore
    todo: list[Point]


def plan_sweep(spec: SweepSpec, results: str | os.PathLike) -> SweepPlan:
    """Expand and validate the grid and read the results file; raises before any work starts."""
    points = expand(spec)
    store = ResultsStore(results)
    done = store.keys()
    return SweepPlan(spec, points, store, [p for p in points if p.key not in done])


def run_sweep(
    spec: SweepSpec, results: str | os.PathLike, client: Client | None = None, progress: bool | None = None
) -> SweepRun:
    """Evaluate every point of ``spec`` missing from the ``results`` Parquet file, appending rows as they finish.

    ``client``: a dask client (LocalCluster or a remote scheduler); None runs the points one after the other
    in this process, single-threaded like a worker, which gives the same numbers. The results file's writer
    lock is held throughout: a second sweep on the same file raises ConfigError before any work.
    ``progress``: a bar of the points done, on standard error (None: when it is a terminal; ``crossbar.progress``).
    """
    with writer_lock(results):
        plan = plan_sweep(spec, results)
        run = SweepRun(plan.points, skipped=len(plan.points) - len(plan.todo))
        bar = progress_bars.bar(
            total=len(plan.points), initial=run.skipped, desc=spec.name, unit="point", progress=progress
        )
        with bar:
            if client is None:
                _run_serial(plan, run, bar)
            elif plan.todo:
                _run_distributed(plan, run, bar, client)
    return run


def _error_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(exc)).strip()


def _failure(future: Any) -> str:
    """The error of a future that did not finish (an exception, KilledWorker, or cancellation)."""
    try:
        return _error_text(future.exception())
    except BaseException as cancelled:  # noqa: BLE001 (a cancelled future raises instead of returning)
        return _error_text(cancelled)


def _run_serial(plan: SweepPlan, run: SweepRun, bar: tqdm) -> None:
    with single_threaded():
        for point in plan.todo:
            try:
                result = run_point(point)
            except Exception as exc:  # noqa: BLE001 (a failing point is reported; the sweep goes on)
                run.failures.append((point.coordinates(), _error_text(exc)))
            else:
                plan.store.append([result_row(point, result, plan.spec.name)])
                run.computed += 1
            bar.update(1)


def _run_distributed(plan: SweepPlan, run: SweepRun, bar: tqdm, client: Client) -> None:
    client.register_plugin(SingleThreaded(), name=PLUGIN_NAME)
    by_key = {f"crossbar-point-{p.key}": p for p in plan.todo}
    futures = [client.submit(run_point, p, key=k, pure=False) for k, p in by_key.items()]
    try:
        for batch in as_completed(futures).batches():
            rows = []
            for future in batch:
                point = by_key[future.key]
                if future.status == "finished":
                    rows.append(result_row(point, future.result(), plan.spec.name))
                else:
                    run.failures.append((point.coordinates(), _failure(future)))
                future.release()
            plan.store.append(rows)
            run.computed += len(rows)
            bar.update(len(batch))
    finally:
        client.cancel(futures)
