"""HPD lives in the core, ``crossbar.hpd`` (a mapping transform that ``crossbar.compile`` applies); this name
stays importable for scripts written against the earlier layout."""

from crossbar.hpd import ORIENTATIONS, HPDLinear, HPDSpec, apply, decompose, default_layer, resolve_name

__all__ = ["ORIENTATIONS", "HPDLinear", "HPDSpec", "apply", "decompose", "default_layer", "resolve_name"]
