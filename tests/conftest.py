import sys
import threading
from pathlib import Path

import pytest
from torch.nn.modules import module as torch_module

sys.path.insert(0, str(Path(__file__).parent))  # test helpers (spice.py) import as top-level modules

from crossbar.compiler import DIGITAL_REASON, converter_for  # noqa: E402
from crossbar.layers import TiledLinear  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "tiles_may_idle: a test whose compiled models skip some tiled layers by design")


class _TileGuard:
    """Every outermost forward of a module that holds tiled layers must call the tiles of each of them, and
    must meet no module that ``crossbar.compile`` maps left unconverted and unexplained (e.g. the second name
    of a shared module). Counts ``TiledLinear.tile_calls``; the hooks are torch's global ones, which do not
    disable fast paths, so a fused kernel that reads a weight directly shows up as an unused tile."""

    def __init__(self):
        self.local = threading.local()
        self.failures = []

    def pre(self, module, args):
        stack = self.local.__dict__.setdefault("stack", [])
        if not stack:
            tiled = {m: m.tile_calls for m in module.modules() if isinstance(m, TiledLinear)}
            stack.append((module, tiled))
        else:
            stack.append(None)

    def post(self, module, args, output):
        stack = self.local.__dict__.get("stack", [])
        if not stack:
            return
        entry = stack.pop()
        if entry is None or not entry[1] or output is None:  # output None: the forward raised
            return
        names = {m: n for n, m in module.named_modules(remove_duplicate=False)}
        idle = [names[m] or "(model)" for m, calls in entry[1].items() if m.tile_calls == calls]
        if idle:
            self.failures.append(f"{type(module).__name__} forward did not use the tiles of {idle}")
        for name, sub in module.named_modules(remove_duplicate=False):
            unmapped = not isinstance(sub, TiledLinear) and converter_for(sub) is not None
            if unmapped and getattr(sub, DIGITAL_REASON, None) is None:
                self.failures.append(f"{name}: a {type(sub).__name__} left unconverted in a compiled model")


@pytest.fixture(autouse=True)
def tiles_used_in_every_forward(request):
    """The guard of ``_TileGuard`` around every test (opt out: ``@pytest.mark.tiles_may_idle``)."""
    if request.node.get_closest_marker("tiles_may_idle"):
        yield
        return
    guard = _TileGuard()
    handles = [
        torch_module.register_module_forward_pre_hook(guard.pre),
        torch_module.register_module_forward_hook(guard.post, always_call=True),
    ]
    try:
        yield guard
    finally:
        for handle in handles:
            handle.remove()
    assert not guard.failures, "; ".join(dict.fromkeys(guard.failures))
