"""The backup file: one tar whose first member, `manifest.json`, describes the others.

Members (regular files only): `manifest.json`; `database/modhub.db` (SQLite) or
`database/modhub.dump` (`pg_dump --format=custom`); `key/secret.key` when the key is
included; `code/<name>@<version>.tar.gz` for each version whose code is not in the
database yet (installed before bundles were stored there). The manifest names each other
member with its size and sha256, so a truncated or altered file is refused before any of it
is restored.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from modhub.errors import ModhubError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MEMBER = re.compile(
    r"^(database/modhub\.(db|dump)|key/secret\.key|code/[a-z0-9][a-z0-9._-]*@[0-9A-Za-z.+-]+\.tar\.gz)$"
)
COPY_BYTES = 1024 * 1024
CODE = re.compile(r"^[a-z0-9][a-z0-9._-]*@[0-9A-Za-z.+-]+$")  # name@version


class BackupError(ModhubError):
    """A backup could not be written, or a file cannot be restored (the detail says why)."""

    status, title, kind = 409, "Backup refused", "backup"


@dataclass
class Member:
    """A member of the archive after the manifest."""

    name: str
    size: int
    sha256: str


@dataclass
class Manifest:
    """What `manifest.json` says about a backup."""

    modhub_version: str
    database: str  # "sqlite" or "postgresql"
    alembic_revision: str | None
    created_at: str
    key_check: str | None
    key_included: bool
    members: list[Member] = field(default_factory=list)
    code: list[str] = field(default_factory=list)  # "name@version" packed under code/
    code_missing: list[str] = field(default_factory=list)  # no bundle, no folder here
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        """Return the manifest as written (camelCase keys)."""
        return {
            "formatVersion": self.format_version,
            "modhubVersion": self.modhub_version,
            "database": self.database,
            "alembicRevision": self.alembic_revision,
            "createdAt": self.created_at,
            "keyCheck": self.key_check,
            "keyIncluded": self.key_included,
            "code": self.code,
            "codeMissing": self.code_missing,
            "members": [asdict(member) for member in self.members],
        }

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        """Return the manifest of a backup, or raise BackupError naming the bad field."""
        if not isinstance(data, dict):
            raise BackupError("manifest.json is not a JSON object: not a modhub backup")
        version = data.get("formatVersion")
        if not isinstance(version, int):
            raise BackupError("manifest.json: formatVersion is missing: not a modhub backup")
        if version > FORMAT_VERSION:
            raise BackupError(
                f"this backup has format version {version}, made by modhub "
                f"{data.get('modhubVersion', '?')}; this modhub reads format versions up to "
                f"{FORMAT_VERSION}: restore it with that version of modhub or a newer one"
            )
        try:
            members = [
                Member(str(m["name"]), int(m["size"]), str(m["sha256"])) for m in data["members"]
            ]
            manifest = cls(
                modhub_version=str(data["modhubVersion"]),
                database=str(data["database"]),
                alembic_revision=data["alembicRevision"],
                created_at=str(data["createdAt"]),
                key_check=data["keyCheck"],
                key_included=bool(data["keyIncluded"]),
                members=members,
                code=[str(c) for c in data.get("code", [])],
                code_missing=[str(c) for c in data.get("codeMissing", [])],
                format_version=version,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BackupError(f"manifest.json: field {exc} is missing or invalid") from None
        if manifest.database not in ("sqlite", "postgresql"):
            raise BackupError(f"manifest.json: database {manifest.database!r} is unknown")
        for member in manifest.members:
            if not MEMBER.match(member.name):
                raise BackupError(f"manifest.json: member {member.name!r} is not allowed")
        names = {member.name for member in manifest.members}
        database = "database/modhub." + ("db" if manifest.database == "sqlite" else "dump")
        if database not in names:
            raise BackupError(f"manifest.json: members: {database} is missing")
        if manifest.key_included != ("key/secret.key" in names):
            raise BackupError("manifest.json: keyIncluded does not match its members")
        for item in manifest.code:
            if f"code/{item}.tar.gz" not in names or not CODE.match(item):
                raise BackupError(f"manifest.json: code {item!r} is not one of its members")
        return manifest


def sha256_of(path: Path) -> str:
    """Return the sha256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while piece := handle.read(COPY_BYTES):
            digest.update(piece)
    return digest.hexdigest()


def write_archive(target: Path, manifest: Manifest, files: dict[str, Path]) -> int:
    """Write `files` (member name -> file) under `manifest` to `target` atomically, mode 0600;
    return its size. A temp file beside `target` is renamed over it once complete."""
    manifest.members = [
        Member(name, path.stat().st_size, sha256_of(path)) for name, path in files.items()
    ]
    body = json.dumps(manifest.to_json(), indent=2).encode()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    try:
        os.fchmod(fd, 0o600)  # sealed secrets, maybe the key: never for other users
        with (
            os.fdopen(fd, "wb") as raw,
            tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT) as tar,
        ):
            _add(tar, MANIFEST, len(body), _Bytes(body))
            for member in manifest.members:
                with files[member.name].open("rb") as source:
                    _add(tar, member.name, member.size, source)
            tar.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return target.stat().st_size


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size < 0 else self.at + size
        piece, self.at = self.data[self.at : end], min(end, len(self.data))
        return piece


def _add(tar: tarfile.TarFile, name: str, size: int, source: Any) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, 0
    tar.addfile(info, source)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unpack(source: Path, dest: Path) -> Manifest:
    """Unpack the backup `source` into the empty folder `dest` (member names as paths) and
    return its manifest; raise BackupError unless every member the manifest names is there,
    once, with its size and sha256, and nothing else is."""
    manifest: Manifest | None = None
    seen: set[str] = set()
    try:
        # "r|*": a copy the operator compressed (gzip, bzip2, xz) is read as it is
        with tarfile.open(source, mode="r|*") as tar:
            for info in tar:
                if manifest is None:
                    if info.name != MANIFEST:
                        raise BackupError(
                            f"{source} is not a modhub backup: its first member is not {MANIFEST}"
                        )
                    handle = tar.extractfile(info)
                    assert handle is not None
                    manifest = Manifest.from_json(json.loads(handle.read(COPY_BYTES + 1)))
                    expected = {m.name: m for m in manifest.members}
                    continue
                member = expected.get(info.name)
                if member is None or info.name in seen or not info.isfile():
                    raise BackupError(
                        f"{source}: member {info.name!r} is not one its manifest names"
                    )
                seen.add(info.name)
                handle = tar.extractfile(info)
                assert handle is not None
                _copy_checked(handle, dest / info.name, member)
    except (tarfile.TarError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BackupError(f"{source} is truncated or corrupt: {exc}") from None
    if manifest is None:
        raise BackupError(f"{source} is empty: not a modhub backup")
    missing = sorted(set(expected) - seen)
    if missing:
        raise BackupError(f"{source} is truncated or corrupt: it lacks {', '.join(missing)}")
    return manifest


def _copy_checked(handle: IO[bytes], path: Path, member: Member) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        while piece := handle.read(COPY_BYTES):
            digest.update(piece)
            size += len(piece)
            out.write(piece)
    if size != member.size or digest.hexdigest() != member.sha256:
        raise BackupError(
            f"member {member.name} does not match its manifest (read {size} bytes of "
            f"{member.size}, sha256 {digest.hexdigest()[:12]}… for {member.sha256[:12]}…): "
            "the backup is corrupt"
        )


def remove_folder(folder: Path) -> None:
    """Delete a folder this package made, and everything in it."""
    shutil.rmtree(folder, ignore_errors=True)
