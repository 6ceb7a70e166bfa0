"""The lifecycle: bundles, per-module environments, install, upgrade, remove, recovery.

Its names are imported on first use (PEP 562), so `modhub validate` can use
`lifecycle.typescript` without the services, SQLAlchemy and the database models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modhub.lazy import exports

if TYPE_CHECKING:
    from modhub.lifecycle.operations import Operations, OperationView
    from modhub.lifecycle.recovery import recover
    from modhub.lifecycle.service import Lifecycle

__all__ = ["Lifecycle", "OperationView", "Operations", "recover"]
_HOMES = {
    "Lifecycle": "modhub.lifecycle.service",
    "OperationView": "modhub.lifecycle.operations",
    "Operations": "modhub.lifecycle.operations",
    "recover": "modhub.lifecycle.recovery",
}

__getattr__ = exports(__name__, _HOMES)
