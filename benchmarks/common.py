"""Helpers shared by the benchmarks: thread pinning, machine facts, atomic JSON output.

Benchmarks import this as a sibling module (``python benchmarks/<script>.py`` puts this folder on the path).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def configure_threads(threads: int, wait_policy: str) -> dict[str, Any]:
    """Set the thread environment; must run before numpy, torch or numba are imported."""
    preloaded = sorted(m for m in ("numpy", "torch", "numba") if m in sys.modules)
    for name in THREAD_ENV:
        os.environ[name] = str(threads)
    if wait_policy != "default":
        os.environ["OMP_WAIT_POLICY"] = wait_policy.upper()
    import numba
    import torch

    torch.set_num_threads(threads)
    numba.set_num_threads(threads)
    return {
        "threads": threads,
        "env": {name: os.environ.get(name) for name in (*THREAD_ENV, "OMP_WAIT_POLICY")},
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "numba_num_threads": numba.get_num_threads(),
        "set_before_import": not preloaded,
        "preloaded_modules": preloaded,
    }


def machine_info(threading: dict[str, Any]) -> dict[str, Any]:
    import numba
    import numpy as np
    import torch

    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cores_available": available_cores(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "torch_blas": "mkl" if torch.backends.mkl.is_available() else "other",
        "threading": threading,
    }
    info["crossbar"] = crossbar_source_state()
    try:
        import aihwkit

        info["aihwkit"] = aihwkit.__version__
    except ImportError:
        info["aihwkit"] = None
    with contextlib.suppress(OSError):
        info["loadavg_start"] = os.getloadavg()
    return info


def crossbar_source_state() -> dict[str, Any]:
    """Version, git commit and uncommitted changes of the crossbar package timed (it may be mid-edit)."""
    import subprocess

    import crossbar

    state: dict[str, Any] = {"version": crossbar.__version__, "path": str(Path(crossbar.__file__).parent)}
    root = Path(crossbar.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "crossbar"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return state
    if commit.returncode == 0:
        state["git_commit"] = commit.stdout.strip()
        state["uncommitted"] = [line[3:] for line in status.stdout.splitlines()]
    return state


def thread_pools() -> list[dict[str, Any]]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keys = ("user_api", "internal_api", "num_threads", "filepath", "version")
    return [{k: pool.get(k) for k in keys} for pool in threadpool_info()]


def shared_data() -> Path:
    """The shared data folder (``models.data.data_dir``: ``$CROSSBAR_DATA``, else ../shared/data beside the
    repository). Imports torch: call it after ``configure_threads``."""
    from models.data import data_dir

    return data_dir()


def data_label(path: Path) -> str:
    """How results name an input file: relative to the folder above the shared data folder (for example
    ``shared/data/rram-relaxation/techC``) when it lies there, else the path as given."""
    base = shared_data().resolve().parent.parent
    resolved = Path(path).resolve()
    return str(resolved.relative_to(base) if resolved.is_relative_to(base) else path)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON through crossbar's atomic writer (temp file, then rename)."""
    from crossbar.fileio import write_text_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def module_at_revision(revision: str, path: str, name: str) -> Any:
    """Import the file ``path`` of this repository as it was at git ``revision`` (a baseline measured beside
    the current code in the same run), from a temporary copy named ``name``."""
    import importlib.util
    import subprocess
    import tempfile

    root = Path(__file__).resolve().parents[1]
    text = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=root, capture_output=True, text=True, check=True)
    folder = Path(tempfile.mkdtemp(prefix="crossbar-baseline-"))
    (folder / f"{name}.py").write_text(text.stdout)
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def timed(fn: Callable[[], Any], reps: int) -> dict[str, float]:
    """Median and min seconds per call over ``reps`` calls after one untimed warm-up call."""
    fn()
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return {"median_s": statistics.median(samples), "min_s": min(samples), "reps": reps}
