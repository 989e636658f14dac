"""Modules loaded on first use, for heavy libraries most hosts never need.

``verify_keys`` pulls in ``cryptography`` (~4 MB of the idle daemon's RSS, its OpenSSL
bindings), yet only a host with ``TWILIGHT_VERIFY_KEY`` ever calls it. The standard
library's ``importlib.util.LazyLoader`` recipe: the module object exists at once, and
runs its code at the first attribute read.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_module(name: str) -> ModuleType:
    """``name``, imported for real at its first attribute access (at once if loaded)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module named {name!r}")
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
