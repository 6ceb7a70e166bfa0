"""The registry: module versions, the dependency graph, status and configuration."""

from modhub.registry.service import Registry, parse_manifest
from modhub.registry.status import Status

__all__ = ["Registry", "Status", "parse_manifest"]
