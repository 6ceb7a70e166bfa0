"""Where module code, environments and staging folders live under the data dir."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """`modules/<name>/<version>/` for code, `envs/<name>/<version>/` for environments."""

    root: Path

    @property
    def modules(self) -> Path:
        """Return the folder of every module's code."""
        return self.root / "modules"

    @property
    def envs(self) -> Path:
        """Return the folder of every module's environments."""
        return self.root / "envs"

    @property
    def staging(self) -> Path:
        """Return the folder where bundles are unpacked before they are accepted."""
        return self.root / "staging"

    @property
    def uv_cache(self) -> Path:
        """Return uv's cache, on the same filesystem as the environments (hard links)."""
        return self.root / "cache" / "uv"

    def code(self, name: str, version: str) -> Path:
        """Return the code folder of one module version."""
        return self.modules / name / version

    def env(self, name: str, version: str) -> Path:
        """Return the environment of one module version."""
        return self.envs / name / version
