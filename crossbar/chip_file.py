"""A programmed chip instance in one file: programmed once, read many times, as a real chip is.

    crossbar.save(analog, "chip.xbar")     # analog = crossbar.compile(model, chip, seed=...)
    analog = crossbar.load("chip.xbar")    # outputs bit-identical to the saved instance's
    crossbar.chip_file.read_header("chip.xbar")   # what it holds, without loading it

Layout: the line ``MAGIC``, one line of JSON (the header), then the payload, a ``torch.save`` of the whole
compiled module. The header holds the file format version, the crossbar version that wrote it, the payload's
length and SHA-256, and for every tiled layer its placement, shape, seed and chip configuration. The payload
holds the model as compiled: every layer's programmed state (the effective weights of every tile, the
conductance each word line drives, DAC/ADC ranges and scales, per-cell read-noise variances: the frozen
``crossbar.engine.TileRecord``), the number of forwards it has run (the per-forward noise stream continues from
there), its float weights (for fine-tuning and reprogramming) and every digital module of the model. Loading
programs nothing. The file is written atomically. A file of another format version, or a truncated or altered
one, is refused with a ConfigError before anything is unpickled.

The payload is a pickle: load chip files you trust, as with ``torch.load``. The model's classes must be
importable where it is loaded (e.g. ``transformers`` for a Hugging Face model).

Memory: neither ``save`` nor ``load`` holds the payload in memory. ``save`` streams ``torch.save`` into a
temporary file beside the target (hashing as it writes) and copies it behind the header in chunks; ``load``
hashes the payload in chunks and ``torch.load``s the compiled module straight from the file. The programmed
arrays are stored once each, as raw tensor storages (``AnalogTiles.__getstate__``), so a loaded instance takes
the memory the compiled one took.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from crossbar.errors import ConfigError
from crossbar.fileio import write_bytes_atomic
from crossbar.layers import TiledLinear

MAGIC = b"crossbar chip file\n"
FORMAT_VERSION = 2  # 2: each programmed array stored once, as a tensor storage (1: numpy pickles, views copied)
_CHUNK = 16 * 1024 * 1024  # bytes read or copied at a time
_HEADER_LIMIT = 64 * 1024 * 1024  # bytes: a header line longer than this is not a header


def _layers(module: nn.Module) -> dict[str, TiledLinear]:
    return {name: layer for name, layer in module.named_modules() if isinstance(layer, TiledLinear)}


def _header(module: nn.Module, payload_bytes: int, payload_sha256: str) -> dict[str, Any]:
    from crossbar import __version__

    layers = {
        name: {
            "placement": layer.placement,
            "shape": [layer.out_features, layer.in_features],
            "seed": int(layer.seed),
            "chip": layer.chip.to_dict(),
        }
        for name, layer in _layers(module).items()
    }
    return {
        "format_version": FORMAT_VERSION,
        "crossbar_version": __version__,
        "model_class": f"{type(module).__module__}.{type(module).__qualname__}",
        "payload_bytes": payload_bytes,
        "payload_sha256": payload_sha256,
        "layers": layers,
    }


class _HashingWriter:
    """A write-only file that hashes (SHA-256) and counts what ``torch.save`` writes through it."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle, self.sha256, self.bytes = handle, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.bytes += len(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


def _chunks(handle: BinaryIO, size: int) -> Iterator[bytes]:
    """The next ``size`` bytes of ``handle``, ``_CHUNK`` at a time (fewer if the file ends first)."""
    while size > 0:
        chunk = handle.read(min(_CHUNK, size))
        if not chunk:
            return
        size -= len(chunk)
        yield chunk


def save(compiled: nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Write the programmed chip instance ``compiled`` (from ``crossbar.compile``) to ``path`` atomically;
    returns the header written. Raises ValueError for a module with no tiled layer."""
    if not isinstance(compiled, nn.Module) or not _layers(compiled):
        raise ValueError(
            f"crossbar.save: {type(compiled).__name__} has no tiled layer; save what crossbar.compile returns"
        )
    path = Path(path)
    fd, payload_path = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".payload")
    try:
        with os.fdopen(fd, "w+b") as payload:
            writer = _HashingWriter(payload)
            torch.save(compiled, writer)
            header = _header(compiled, writer.bytes, writer.sha256.hexdigest())
            line = json.dumps(header, separators=(",", ":")).encode() + b"\n"
            payload.seek(0)
            write_bytes_atomic(path, itertools.chain((MAGIC, line), _chunks(payload, writer.bytes)))
    finally:
        Path(payload_path).unlink(missing_ok=True)
    return header


def _read_header(handle: io.BufferedReader, path: Path) -> dict[str, Any]:
    if handle.read(len(MAGIC)) != MAGIC:
        raise ConfigError(f"{path}: not a crossbar chip file (written by crossbar.save)")
    line = handle.readline(_HEADER_LIMIT)
    if not line.endswith(b"\n"):
        raise ConfigError(f"{path}: the chip file is truncated or corrupt (its header line does not end)")
    try:
        header = json.loads(line)
        version = header["format_version"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: the chip file's header is corrupt ({type(exc).__name__}: {exc})") from exc
    if version != FORMAT_VERSION:
        raise ConfigError(
            f"{path}: chip file format version {version!r} (written by crossbar "
            f"{header.get('crossbar_version', '?')}); this crossbar reads version {FORMAT_VERSION}. "
            "Compile and save the chip again with this version"
        )
    return header


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The header of a chip file (format and crossbar versions, payload size and SHA-256, and per tiled layer
    its placement, shape, seed and chip configuration), read without loading the model."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    with path.open("rb") as handle:
        return _read_header(handle, path)


def load(path: str | os.PathLike) -> nn.Module:
    """The chip instance saved at ``path`` by ``crossbar.save``, as it was saved (train/eval mode included),
    ready to run: nothing is programmed again. Raises ConfigError for a missing file, another format version,
    a truncated or altered payload, or a model whose classes cannot be imported here."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    with path.open("rb") as handle:
        header = _read_header(handle, path)
        start, expected = handle.tell(), header.get("payload_bytes")
        stored = path.stat().st_size - start
        if stored != expected:
            raise ConfigError(
                f"{path}: the chip file is truncated or corrupt: {stored} payload bytes, expected {expected}"
            )
        digest = hashlib.sha256()
        for chunk in _chunks(handle, stored):
            digest.update(chunk)
        if digest.hexdigest() != header.get("payload_sha256"):
            raise ConfigError(f"{path}: the chip file is corrupt: its payload does not match the SHA-256 in its header")
        handle.seek(start)
        try:
            module = torch.load(handle, weights_only=False, map_location="cpu")
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"{path}: the saved model ({header.get('model_class')}) needs code not importable here: {exc}"
            ) from exc
    if not isinstance(module, nn.Module) or set(_layers(module)) != set(header.get("layers", {})):
        raise ConfigError(f"{path}: the payload does not hold the compiled model its header describes")
    return module
