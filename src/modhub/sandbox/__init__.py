"""Module workers: separate processes that run module code under limits."""

from modhub.sandbox.launch import ModuleRuntime, isolation
from modhub.sandbox.pool import PoolLimits, WorkerPool

__all__ = ["ModuleRuntime", "PoolLimits", "WorkerPool", "isolation"]
