"""The results file: one Parquet table, one row per finished point, rewritten atomically on every append.

Each append writes the whole table to a temporary file and renames it over the old one
(``crossbar.fileio.write_bytes_atomic``), so a kill at any moment leaves either the previous or the new
complete file, never a torn one. Rows carry the point's ``key`` (see ``Point.key``); a rerun skips keys
already present. A sweep holds ``writer_lock`` on its results file while it reads and appends, so a second
sweep on the same file stops at once instead of replacing the first one's rows with its own.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from crossbar.config import ConfigError
from crossbar.fileio import write_bytes_atomic

try:
    import fcntl
except ImportError:  # not POSIX: sweeps on one results file are not guarded against each other
    fcntl = None


@contextlib.contextmanager
def writer_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive writer lock of the results file ``path`` for the block.

    An advisory ``flock`` on the sidecar file ``.NAME.lock`` beside it: the operating system releases it when
    the holder ends, even when killed, so a lock never goes stale. The holder removes the file as it leaves
    the block; only a killed sweep leaves it behind (0 bytes, harmless: the next sweep locks and removes it).
    A second holder, in this or another process on the same machine or NFS client, gets ConfigError at once.
    """
    path = Path(path)
    if fcntl is None or not path.parent.is_dir():
        yield  # no lock on this platform; a missing folder is reported by ResultsStore
        return
    lock_path = path.parent / f".{path.name}.lock"
    handle = _lock(lock_path, path)
    try:
        yield
    finally:
        # Removed while still locked: a sweep that opened this file meanwhile finds it gone once it gets the
        # lock, and locks a new file instead (``_lock``), so two sweeps never both hold one.
        with contextlib.suppress(FileNotFoundError):
            lock_path.unlink()
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _lock(lock_path: Path, path: Path) -> IO:
    """Open and ``flock`` the sidecar file, until the file locked is the one at ``lock_path``."""
    while True:
        handle = open(lock_path, "a+")  # noqa: SIM115 (held beyond this function, closed by writer_lock)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.close()
            raise ConfigError(
                f"{path}: another sweep is writing this results file; wait for it to end or choose another path"
            ) from exc
        try:
            here = os.stat(lock_path)
        except FileNotFoundError:
            here = None
        locked = os.fstat(handle.fileno())
        if here is not None and (here.st_dev, here.st_ino) == (locked.st_dev, locked.st_ino):
            return handle
        fcntl.flock(handle, fcntl.LOCK_UN)  # the previous holder removed this file as it ended: lock anew
        handle.close()


class ResultsStore:
    """The results table at ``path`` (created on the first append; an existing file is read and kept)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.table: pa.Table | None = None
        if self.path.is_dir():
            raise ConfigError(f"{self.path}: is a folder; the results are one Parquet file")
        if self.path.exists():
            try:
                self.table = pq.read_table(self.path)
            except (pa.ArrowException, OSError) as exc:
                raise ConfigError(
                    f"{self.path}: exists but is not a readable Parquet results file ({exc}); "
                    "it is left as it is: move it away or choose another results path"
                ) from exc
            if "key" not in self.table.column_names:
                raise ConfigError(f"{self.path}: a Parquet file without a 'key' column is not a sweep results file")
        elif not self.path.parent.is_dir():
            raise ConfigError(f"{self.path}: folder {self.path.parent} does not exist")

    def keys(self) -> set[str]:
        """Keys of the points already in the file."""
        return set() if self.table is None else set(self.table.column("key").to_pylist())

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Add ``rows`` (dicts; columns are the union of their keys, missing values null) and rewrite the file."""
        if not rows:
            return
        columns = list(dict.fromkeys(name for row in rows for name in row))
        new = pa.table({name: pa.array([row.get(name) for row in rows]) for name in columns})
        table = new if self.table is None else pa.concat_tables([self.table, new], promote_options="permissive")
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        write_bytes_atomic(self.path, buffer.getvalue())
        self.table = table

    def frame(self) -> pd.DataFrame:
        """The table as a pandas DataFrame (empty when nothing is written yet)."""
        return pd.DataFrame() if self.table is None else self.table.to_pandas()
