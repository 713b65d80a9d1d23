"""Row-block matrix products on single-threaded BLAS, one task per core.

The tile products of a layer run as independent (B x rows) @ (rows x out) products, one per row block. They
are spread over a small thread pool with numpy's BLAS held at one thread for the duration: OpenBLAS's own
worker threads spin for a long time after each call, and on a two-core machine that spinning takes the
cores from the numba kernels that follow (measured: a forward 1.5-2x slower). torch's BLAS (MKL) has no such
problem but is about 1.4x slower than OpenBLAS for these shapes on the AMD machines here.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from threadpoolctl import ThreadpoolController

_SMALL = 1 << 22  # multiply-adds below which one thread does all the blocks
_lock = threading.Lock()
_state: dict[str, object] = {}


def _pool_and_blas() -> tuple[ThreadPoolExecutor, object]:
    with _lock:
        threads = numba.get_num_threads()
        if _state.get("threads") != threads:
            _state["pool"] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="crossbar-blas")
            _state["threads"] = threads
            _state["blas"] = ThreadpoolController().select(user_api="blas")
        return _state["pool"], _state["blas"]  # type: ignore[return-value]


def row_block_products(x: np.ndarray, weights: np.ndarray, row_slices: list[slice], out: np.ndarray) -> None:
    """out[r] = x[:, row_slices[r]] @ weights[row_slices[r]] for every row block r.

    x: (B, in) float32; weights: (in, N) float32; out: (R, B, N) float32. The (block, batch-half) tasks are
    spread over the cores; each product is a single-threaded BLAS sgemm.
    """
    pool, blas = _pool_and_blas()
    batch = x.shape[0]
    tasks = [(r, slice(0, batch)) for r in range(len(row_slices))]
    workers = pool._max_workers  # noqa: SLF001 (the size it was made with)
    if len(tasks) < workers and batch >= 2 * workers:  # few blocks: split the batch too
        bounds = np.linspace(0, batch, workers + 1).astype(int)
        tasks = [(r, slice(a, b)) for r in range(len(row_slices)) for a, b in zip(bounds, bounds[1:], strict=False)]

    def run(chunk: list[tuple[int, slice]]) -> None:
        for r, rows_of_batch in chunk:
            cols = row_slices[r]
            np.matmul(x[rows_of_batch, cols], weights[cols], out=out[r, rows_of_batch])

    multiply_adds = batch * x.shape[1] * weights.shape[1]
    with blas.limit(limits=1):
        if multiply_adds < _SMALL or workers == 1:
            run(tasks)
        else:
            list(pool.map(run, [tasks[k::workers] for k in range(workers)]))
