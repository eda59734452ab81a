"""A command-line tool of ``tools/`` as a module, for tests that call its ``main(argv)``.

The tools hold no logic that tests import (that is in the library); this loads one by its file,
without putting ``tools/`` on ``sys.path``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def load_tool(name: str) -> ModuleType:
    """``tools/<name>.py``, imported once per process as ``vlprompt_tools.<name>``."""
    key = f"vlprompt_tools.{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, TOOLS / f"{name}.py")
        assert spec is not None and spec.loader is not None, f"no tool {name!r} in {TOOLS}"
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]
