"""The layering rule of docs/architecture.md: crossbar/ is the ground floor.

No module under crossbar/ imports models/ or calibration/ (only the command line, crossbar/cli.py, faces all
three); every module of the three packages imports cleanly as the first project import of a fresh interpreter
(an import cycle shows up exactly there: ``import models.hpd`` first used to raise a circular ImportError);
``import crossbar`` pulls in neither calibration/ nor h5py.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("crossbar", "models", "calibration")
UPPER_FLOORS = ("models", "calibration")
FACES_ALL = {ROOT / "crossbar" / "cli.py"}


def _modules(package: str) -> list[tuple[str, Path]]:
    """(dotted name, file) of every module of ``package``, its __init__ files as the package's name."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found.append((".".join(parts), path))
    return found


def _imported_roots(path: Path) -> set[str]:
    """Top-level package of every import anywhere in the file (module level or inside functions)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_core_imports_neither_models_nor_calibration():
    offenders = {
        name: sorted(_imported_roots(path) & set(UPPER_FLOORS))
        for name, path in _modules("crossbar")
        if path not in FACES_ALL and _imported_roots(path) & set(UPPER_FLOORS)
    }
    assert not offenders, f"crossbar/ must not import models/ or calibration/: {offenders}"


def test_the_scan_sees_an_import_inside_a_function(tmp_path):
    source = tmp_path / "module.py"
    source.write_text("def f():\n    from models import zoo\n    import calibration.fitting\n")
    assert _imported_roots(source) == {"models", "calibration"}


# Runs in a fresh interpreter: imports the third-party modules the project uses (found by importing every
# project module once in a throwaway child), then forks one child per project module, whose first project
# import is that module. Forking spares each check a torch import of its own.
_FRESH_IMPORTS = r"""
import compileall, importlib, os, shutil, sys, tempfile, traceback
names, project = sys.argv[1:], {"crossbar", "models", "calibration"}
sys.dont_write_bytecode, sys.pycache_prefix = False, tempfile.mkdtemp()  # compile the sources once, not per child
for package in project:
    compileall.compile_dir(package, quiet=1)

def child(name):
    try:
        importlib.import_module(name)
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    os._exit(0)

read, write = os.pipe()
if os.fork() == 0:
    os.close(read)
    for name in names:
        try:
            importlib.import_module(name)
        except BaseException:
            pass
    third = {m for m in sys.modules if m.split(".")[0] not in project}
    os.write(write, "\n".join(sorted(third)).encode())
    os._exit(0)
os.close(write)
with os.fdopen(read) as pipe:
    third_party = pipe.read().split()
os.wait()
for module in third_party:
    try:
        importlib.import_module(module)
    except BaseException:
        pass
assert not project & {m.split(".")[0] for m in sys.modules}, "a third-party import pulled in the project"
failed = []
for name in names:
    pid = os.fork()
    if pid == 0:
        child(name)
    if os.waitpid(pid, 0)[1] != 0:
        failed.append(name)
shutil.rmtree(sys.pycache_prefix)
print("FAILED:" + ",".join(failed))
"""


def test_every_module_imports_first_in_a_fresh_interpreter():
    names = [name for package in PACKAGES for name, _ in _modules(package)]
    assert len(names) > 40
    result = subprocess.run(
        [sys.executable, "-c", _FRESH_IMPORTS, *names], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    failed = result.stdout.strip().rpartition("FAILED:")[2]
    assert failed == "", f"these modules fail as the first import: {failed}\n{result.stderr[-4000:]}"


@pytest.mark.parametrize(
    "code",
    [
        "import models.hpd",
        "import crossbar, sys; assert 'h5py' not in sys.modules, 'import crossbar pulled in h5py'",
        "import crossbar, sys; assert not {'models', 'calibration'} & {m.split('.')[0] for m in sys.modules}",
    ],
)
def test_documented_first_imports(code):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
