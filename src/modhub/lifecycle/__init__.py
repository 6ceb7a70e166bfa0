"""The lifecycle: bundles, per-module environments, install, upgrade, remove, recovery."""

from modhub.lifecycle.operations import Operations, OperationView
from modhub.lifecycle.recovery import recover
from modhub.lifecycle.service import Lifecycle

__all__ = ["Lifecycle", "OperationView", "Operations", "recover"]
