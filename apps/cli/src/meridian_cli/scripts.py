"""Load a repository script (scripts/*.py) as a module.

The scripts are stdlib-only so they run before any virtualenv exists (CI bootstrap); tests and the
benchmark import them through this one loader.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[4]


def load_script(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    path = REPO / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
