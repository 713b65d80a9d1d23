"""Progress bars for work that can take more than a few seconds: programming tiles, IR-drop matrices, evaluation
over chip instances, sensitivity analysis, energy estimation, sweeps.

Every public function that does such work takes ``progress``: ``None`` (the default) shows bars when standard
error is a terminal and the command line's ``--quiet`` is not in force (``quiet()``); ``True`` always shows
them, ``False`` never. Bars are tqdm bars on standard error, erased when done, so standard output (a table, or
JSON) holds only the result. In a notebook (standard error is not a terminal) pass ``progress=True``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator

from tqdm import tqdm

_quiet = 0  # depth of active quiet() blocks
_inherited: list[bool] = []  # the choices of the enclosing inherit() blocks


def enabled(progress: bool | None) -> bool:
    """Whether to show a bar: ``progress`` itself; for None, the choice of the innermost ``inherit`` block, else
    whether standard error is a terminal and not quiet."""
    if progress is None and _inherited:
        return _inherited[-1]
    if progress is None:
        return _quiet == 0 and sys.stderr is not None and sys.stderr.isatty()
    return bool(progress)


@contextlib.contextmanager
def inherit(progress: bool | None) -> Iterator[None]:
    """Within the block, bars of inner steps asked with None follow ``enabled(progress)`` (a call given
    ``progress=False`` shows none of its inner bars, e.g. the IR-drop matrices of a compile)."""
    _inherited.append(enabled(progress))
    try:
        yield
    finally:
        _inherited.pop()


def bar(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    initial: int = 0,
    desc: str,
    unit: str,
    progress: bool | None,
) -> tqdm:
    """A tqdm bar on standard error (``desc``: what runs; ``unit``: what one step is; ``initial``: steps done
    before it starts), disabled unless ``enabled(progress)``. Use it as a context manager, or iterate over it
    as over ``iterable``."""
    return tqdm(
        iterable,
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=not enabled(progress),
        leave=False,
        dynamic_ncols=True,
    )


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Within the block, ``progress=None`` shows no bars (the command line's ``--quiet``); ``True`` still does."""
    global _quiet
    _quiet += 1
    try:
        yield
    finally:
        _quiet -= 1
