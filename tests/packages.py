"""Python packages made inside the tests: wheels and source packages with hostile parts,
served from a local folder (never from the internet)."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
import textwrap
import zipfile
from pathlib import Path

# What a hostile package reports about the process it ran in: its uid, its capabilities
# and no_new_privs, and which host paths it could read. One line, for a `.pth` file.
PROBE_EXPRESSION = (
    "(lambda os: {'uid': os.getuid(), "
    "'status': {k: v.strip() for k, v in (l.split(':', 1) for l in "
    "open('/proc/self/status') if l.startswith(('CapEff', 'CapPrm', 'NoNewPrivs')))}})"
    "(__import__('os'))"
)


def build_wheel(folder: Path, name: str, version: str, extra: dict[str, str] | None = None) -> Path:
    """Write a pure-Python wheel of `name` at `version` exposing VERSION, with `extra`
    files at the wheel's root (for example a `.pth`); return its path."""
    module = name.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f'"""Test package."""\n\nVERSION = "{version}"\n',
        **(extra or {}),
        f"{dist_info}/METADATA": _metadata(name, version),
        f"{dist_info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: modhub-tests\nRoot-Is-Purelib: true\n"
            "Tag: py3-none-any\n"
        ),
    }
    wheel = folder / f"{module}-{version}-py3-none-any.whl"
    wheel.write_bytes(_wheel_bytes(files, dist_info))
    return wheel


def build_pth_wheel(folder: Path, name: str, version: str = "1.0.0") -> Path:
    """Write a wheel whose `.pth` file records, at every interpreter start, the process's
    uid, CapEff and NoNewPrivs in the environment variable MODHUB_TEST_PTH."""
    line = f"import os; os.environ['MODHUB_TEST_PTH'] = repr({PROBE_EXPRESSION})\n"
    return build_wheel(folder, name, version, {f"{name.replace('-', '_')}.pth": line})


def build_sdist(folder: Path, name: str, version: str, build_step: str = "") -> Path:
    """Write a source package of `name` with an in-tree build backend. Its `build_wheel`
    runs `build_step` (Python source, may set `report`), then builds a wheel whose module
    holds REPORT: who the build ran as and what `report` gathered."""
    module = name.replace("-", "_")
    backend = (
        _BACKEND.replace("__BUILD_STEP__", textwrap.indent(build_step or "pass", "    "))
        .replace("__PROBE__", PROBE_EXPRESSION)
        .replace("__MODULE__", module)
        .replace("__VERSION__", version)
        .replace("__METADATA__", repr(_metadata(name, version)))
    )
    files = {
        "pyproject.toml": (
            '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n\n'
            f'[project]\nname = "{name}"\nversion = "{version}"\n'
        ),
        "backend.py": backend,
        "PKG-INFO": _metadata(name, version),
    }
    sdist = folder / f"{module}-{version}.tar.gz"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{module}-{version}/{path}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    sdist.write_bytes(buffer.getvalue())
    return sdist


_BACKEND = """\
import base64, hashlib, os, zipfile


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    report = {}
__BUILD_STEP__
    report.update(__PROBE__)
    info = "__MODULE__-__VERSION__.dist-info"
    files = {
        "__MODULE__/__init__.py": "REPORT = " + repr(report) + "\\n",
        info + "/METADATA": __METADATA__,
        info + "/WHEEL": "Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
    }
    record = []
    for path, text in files.items():
        data = text.encode()
        b64 = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(path + ",sha256=" + b64 + "," + str(len(data)))
    record.append(info + "/RECORD,,")
    files[info + "/RECORD"] = "\\n".join(record) + "\\n"
    filename = "__MODULE__-__VERSION__-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return filename
"""


def _metadata(name: str, version: str) -> str:
    return f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: modhub test\n"


def _wheel_bytes(files: dict[str, str], dist_info: str) -> bytes:
    record = []
    for path, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files = {**files, f"{dist_info}/RECORD": "\n".join(record) + "\n"}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return buffer.getvalue()
