"""`modhub.lazy.exports`: a package's names imported when first asked for, and an unknown
name refused as a module refuses it."""

from __future__ import annotations

import subprocess
import sys

import pytest

import modhub.sandbox
from modhub.sandbox.pool import WorkerPool


def test_a_name_is_imported_on_first_use() -> None:
    probe = (
        "import sys, modhub.sandbox as s; before = 'modhub.sandbox.pool' in sys.modules; "
        "s.WorkerPool; print(before, 'modhub.sandbox.pool' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.split() == ["False", "True"], done.stderr
    assert modhub.sandbox.WorkerPool is WorkerPool


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match=r"module 'modhub\.sandbox' has no attribute 'Nope'"):
        _ = modhub.sandbox.Nope  # type: ignore[attr-defined]
