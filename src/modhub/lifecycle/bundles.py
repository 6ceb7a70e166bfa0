"""Installed code in the database: each version's code folder packed once, content-addressed
by sha256, in 1 MiB chunks, so that any node can materialize it and none holds it whole.

The pack is deterministic (entries sorted, mtimes 0, owner root, fixed modes, gzip without
a name or time): the same folder gives the same bytes, hence the same sha256, on every node.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import tarfile
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from sqlalchemy import delete, exists, insert, select, update
from sqlalchemy.exc import IntegrityError

from modhub.db import Database
from modhub.db.models import Bundle, BundleChunk, Module, ModuleVersion
from modhub.errors import ModhubError
from modhub.lifecycle.bundle import DIR_MODE, FILE_MODE, _folder_kind, _walk

log = logging.getLogger("modhub.bundles")
CHUNK_BYTES = 1024 * 1024


class BundleCorrupt(ModhubError):
    """A stored bundle's bytes do not match its sha256 (or its recorded size)."""

    status, title, kind = 503, "Stored bundle corrupt", "bundle-corrupt"


class _Hashing:
    """A write-only stream that hashes and counts what passes through to `out`."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


def pack_tree(folder: Path, out: IO[bytes]) -> tuple[str, int]:
    """Write `folder` to `out` as a deterministic .tar.gz; return (sha256, size) of the bytes."""
    stream = _Hashing(out)
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=stream, mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w|", format=tarfile.PAX_FORMAT) as archive,
    ):
        for name, path, info in _walk(folder):
            kind = _folder_kind(name, info)
            member = tarfile.TarInfo(name)
            member.mtime = 0
            member.uid = member.gid = 0
            member.uname = member.gname = ""
            if kind == "dir":
                member.type, member.mode = tarfile.DIRTYPE, DIR_MODE
                archive.addfile(member)
                continue
            member.mode, member.size = FILE_MODE, info.st_size
            with path.open("rb") as source:
                archive.addfile(member, source)
    return stream.digest.hexdigest(), stream.size


class BundleStore:
    """Stores, reads and deletes packed code in `bundles` and `bundle_chunks`."""

    def __init__(self, db: Database, scratch: Path) -> None:
        self.db = db
        self.scratch = scratch  # where packs are spooled: the data dir, never memory

    def store(self, folder: Path) -> str:
        """Pack `folder` and store it unless a bundle with its sha256 is there; return it."""
        self.scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=self.scratch, prefix="pack-") as spool:
            sha256, size = pack_tree(folder, spool)
            if self.has(sha256):
                return sha256
            spool.seek(0)
            try:
                self._insert(sha256, size, spool)
            except IntegrityError:  # another node stored the same bytes meanwhile
                if not self.has(sha256):
                    raise
        return sha256

    def _insert(self, sha256: str, size: int, spool: IO[bytes]) -> None:
        """Write the bundle row and its chunks in one transaction, one chunk in memory."""
        chunks = math.ceil(size / CHUNK_BYTES)
        with self.db.write() as session:
            connection = session.connection()
            connection.execute(insert(Bundle).values(sha256=sha256, size=size, chunks=chunks))
            for seq in range(chunks):
                data = spool.read(CHUNK_BYTES)
                connection.execute(insert(BundleChunk).values(sha256=sha256, seq=seq, data=data))

    def has(self, sha256: str) -> bool:
        """Return whether a bundle with this sha256 is stored."""
        with self.db.query() as connection:
            found = connection.execute(select(Bundle.sha256).where(Bundle.sha256 == sha256))
            return found.first() is not None

    def write_to(self, sha256: str, out: IO[bytes]) -> None:
        """Copy a stored bundle into `out` chunk by chunk; raise BundleCorrupt unless its
        bytes have the sha256 and size it was stored with (or NotFound-like ModhubError)."""
        with self.db.query() as connection:
            row = connection.execute(
                select(Bundle.size, Bundle.chunks).where(Bundle.sha256 == sha256)
            ).first()
        if row is None:
            raise BundleCorrupt(f"bundle {sha256} is not stored in the database", sha256=sha256)
        size, chunks = row
        stream = _Hashing(out)
        with self.db.query() as connection:
            for seq in range(chunks):  # one statement a chunk: one chunk in memory at a time
                data = connection.execute(
                    select(BundleChunk.data).where(
                        BundleChunk.sha256 == sha256, BundleChunk.seq == seq
                    )
                ).scalar()
                if data is None:
                    raise BundleCorrupt(
                        f"bundle {sha256} is missing chunk {seq} of {chunks}", sha256=sha256
                    )
                stream.write(bytes(data))
                del data
        if stream.size != size or stream.digest.hexdigest() != sha256:
            raise BundleCorrupt(
                f"bundle {sha256} does not match its sha256 (read {stream.size} bytes with "
                f"sha256 {stream.digest.hexdigest()}): refused",
                sha256=sha256,
            )

    def attach(self, name: str, version: str, sha256: str) -> None:
        """Record that the code of `name` `version` is the bundle `sha256`."""
        with self.db.write() as session:
            module_id = select(Module.id).where(Module.name == name).scalar_subquery()
            session.execute(
                update(ModuleVersion)
                .where(ModuleVersion.module_id == module_id, ModuleVersion.version == version)
                .values(bundle_sha256=sha256)
            )

    def delete_unreferenced(
        self, candidates: list[str] | None = None, *, older_than: timedelta | None = None
    ) -> int:
        """Delete the bundles (of `candidates`, or all) that no version refers to, stored
        before `older_than` ago if given; return how many went. The age spares a bundle
        that another node stored and is about to register."""
        referenced = exists().where(ModuleVersion.bundle_sha256 == Bundle.sha256)
        query = select(Bundle.sha256).where(~referenced)
        if older_than is not None:
            query = query.where(Bundle.created_at < datetime.now(UTC) - older_than)
        if candidates is not None:
            if not candidates:
                return 0
            query = query.where(Bundle.sha256.in_(candidates))
        with self.db.write() as session:
            gone = list(session.execute(query).scalars())
            if gone:
                session.execute(delete(BundleChunk).where(BundleChunk.sha256.in_(gone)))
                session.execute(delete(Bundle).where(Bundle.sha256.in_(gone)))
        return len(gone)

    def shas_of(self, name: str) -> list[str]:
        """Return the bundles the versions of module `name` refer to."""
        with self.db.query() as connection:
            found = connection.execute(
                select(ModuleVersion.bundle_sha256)
                .join(Module, Module.id == ModuleVersion.module_id)
                .where(Module.name == name, ModuleVersion.bundle_sha256.is_not(None))
            )
            return [sha for sha in found.scalars() if sha]

    def backfill(self, code_of: Callable[[str, str], Path]) -> list[str]:
        """Store the code of every version that has code but no bundle (installed before
        migration 0006) and whose code folder this node has; return "name@version" of each.
        Versions whose code is on another node stay as they are (that node stores them)."""
        with self.db.query() as connection:
            rows = connection.execute(
                select(Module.name, ModuleVersion.version)
                .join(Module, Module.id == ModuleVersion.module_id)
                .where(ModuleVersion.path.is_not(None), ModuleVersion.bundle_sha256.is_(None))
            ).all()
        stored: list[str] = []
        for name, version in rows:
            folder = code_of(name, version)
            if not folder.is_dir():
                continue
            try:
                self.attach(name, version, self.store(folder))
            except Exception:  # one bad folder must not stop the start-up
                log.exception("could not store the code of %s@%s in the database", name, version)
                continue
            stored.append(f"{name}@{version}")
        if stored:
            log.info("stored the code of %s in the database", ", ".join(stored))
        return stored
