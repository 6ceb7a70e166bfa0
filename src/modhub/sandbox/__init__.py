"""Module workers: separate processes that run module code under limits.

Its names are imported on first use (PEP 562): `sandbox.launch` alone (what `modhub
validate` needs to run esbuild) does not bring the worker pool and its metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modhub.lazy import exports

if TYPE_CHECKING:
    from modhub.sandbox.launch import ModuleRuntime, isolation
    from modhub.sandbox.pool import PoolLimits, WorkerPool

__all__ = ["ModuleRuntime", "PoolLimits", "WorkerPool", "isolation"]
_HOMES = {
    "ModuleRuntime": "modhub.sandbox.launch",
    "isolation": "modhub.sandbox.launch",
    "PoolLimits": "modhub.sandbox.pool",
    "WorkerPool": "modhub.sandbox.pool",
}

__getattr__ = exports(__name__, _HOMES)
