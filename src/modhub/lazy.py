"""Package names imported on first use (PEP 562), for packages the command line touches:
`modhub validate` needs `lifecycle.typescript`, not the lifecycle service and its database."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def exports(package: str, homes: dict[str, str]) -> Callable[[str], Any]:
    """Return a module `__getattr__` for `package` that imports each name of `homes` (name
    to the module defining it) when it is first asked for."""

    def getattr_(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(home), name)

    return getattr_
