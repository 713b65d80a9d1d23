"""Files written atomically (bytes, text, matplotlib figures, torch objects) and torch files read with a
clear error: the one place the package touches the file system for its outputs.

Every writer goes through a temporary file in the target's folder and an atomic rename, so a reader never sees
a partial file and an interrupted write leaves the old file as it was.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crossbar.errors import ConfigError


def write_bytes_atomic(path: str | os.PathLike, data: bytes | memoryview | Sequence[bytes | memoryview]) -> None:
    """Write ``data`` (bytes, or a sequence of byte chunks written one after another, with no joined copy) to
    ``path`` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in (data,) if isinstance(data, bytes | memoryview) else data:
                handle.write(chunk)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes_atomic(path, text.encode())


def write_figure_atomic(figure: Any, path: str | os.PathLike, fmt: str = "png", dpi: int = 120) -> None:
    """Render a matplotlib figure in format ``fmt`` and write it to ``path`` atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=dpi)
    write_bytes_atomic(path, buffer.getvalue())


def write_torch_file(obj: Any, path: str | os.PathLike) -> int:
    """``torch.save`` an object (a state_dict, a checkpoint dict) to ``path`` atomically; returns its bytes."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(path, buffer.getvalue())
    return buffer.tell()


def read_torch_file(path: str | os.PathLike, weights_only: bool = True) -> Any:
    """The object a ``torch.save`` file holds (``weights_only=False`` unpickles: trusted files only); a missing
    or unreadable file raises ConfigError naming it."""
    import torch

    if not Path(path).is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        return torch.load(path, weights_only=weights_only, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 (any load failure is a bad file for the user)
        raise ConfigError(f"{path}: not a torch file that can be loaded ({type(exc).__name__}: {exc})") from exc


def read_torch_module(path: str | os.PathLike) -> Any:
    """A whole torch module saved with ``torch.save(model, path)``; the file is unpickled, so trusted files
    only. A file that holds something else (a state_dict has no architecture) raises ConfigError."""
    from torch import nn

    obj = read_torch_file(path, weights_only=False)
    if not isinstance(obj, nn.Module):
        raise ConfigError(
            f"{path}: holds a {type(obj).__name__}, not a torch module; save the whole model with "
            "torch.save(model, path) (a state_dict alone has no architecture)"
        )
    return obj
