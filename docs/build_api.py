"""Build the API reference: HTML pages of every public module of crossbar, models and calibration, from their
docstrings and type hints, with pdoc (a dev dependency). CI runs it, so a module that no longer imports or a
broken docstring reference fails the build instead of rotting.

    python docs/build_api.py docs/api        # then open docs/api/index.html
"""

from __future__ import annotations

import os
import pkgutil
import sys
import warnings
from pathlib import Path

PACKAGES = ("crossbar", "models", "calibration")


def public_modules() -> list[str]:
    """Every importable module name of PACKAGES whose own name has no leading underscore."""
    import importlib

    names = []
    for package in PACKAGES:
        names.append(package)
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
            if not info.name.rpartition(".")[2].startswith("_"):
                names.append(info.name)
    return names


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    os.environ.setdefault("PDOC_ALLOW_EXEC", "1")  # numba and platform probes run subprocesses at import
    import pdoc
    import pdoc.render

    pdoc.render.configure(docformat="restructuredtext", show_source=True)
    modules = public_modules()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*modules, output_directory=Path(argv[0]))
    # pdoc warns (and goes on) where a module fails to import; repeated specs of a package's submodules are fine.
    failures = [str(w.message) for w in caught if "already been added" not in str(w.message) and "pdoc" in w.filename]
    for message in failures:
        print(f"docs/build_api.py: {message}", file=sys.stderr)
    if failures:
        return 1
    print(f"docs/build_api.py: {len(modules)} modules documented in {argv[0]}/index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
