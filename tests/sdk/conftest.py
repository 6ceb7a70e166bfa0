"""Keep handler imports from leaking between tests: sys.path and the modules they load."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "modules"


def _inside(module: object, folders: tuple[Path, ...]) -> bool:
    """Return whether a loaded module (a file or a namespace package) comes from `folders`."""
    places = [getattr(module, "__file__", None), *(getattr(module, "__path__", None) or [])]
    return any(
        Path(place).is_relative_to(folder) for place in places if place for folder in folders
    )


@pytest.fixture(autouse=True)
def forget_handlers(tmp_path: Path) -> Iterator[None]:
    """After each test, drop what handler loading added to sys.path and sys.modules."""
    path = list(sys.path)
    yield
    sys.path[:] = path
    folders = (EXAMPLES, tmp_path)
    for name, module in list(sys.modules.items()):
        if _inside(module, folders):
            del sys.modules[name]
