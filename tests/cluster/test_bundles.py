"""Installed code in the database: packed deterministically, stored content-addressed in
1 MiB chunks with the version, never whole in memory, deleted with the last version that
refers to it, and stored at start for versions installed before bundles were. Every test
runs on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import io
import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select, update

from modhub.db.models import Bundle, BundleChunk, ModuleVersion
from modhub.errors import Conflict
from modhub.lifecycle.bundle import extract_bundle, hash_tree
from modhub.lifecycle.bundles import CHUNK_BYTES, BundleCorrupt, pack_tree
from modhub.services import Services
from tests.conftest import bearer
from tests.lifecycle.conftest import as_bundle, cheap_password_hashes, write_module

__all__ = ["cheap_password_hashes"]  # autouse: argon2 at its lowest cost for `tokens`

API = "/api/v1"
MB = 1024 * 1024


def upload(client: TestClient, token: str, folder: Path) -> Any:
    """POST the module folder, packed as a .tar.gz, to the bundle endpoint."""
    bundle = as_bundle(folder, "tar.gz")
    with bundle.open("rb") as stream:
        return client.post(
            f"{API}/modules/bundles",
            files={"file": (bundle.name, stream, "application/octet-stream")},
            headers=bearer(token),
        )


def stored(services: Services) -> dict[str, int]:
    """Return each stored bundle's sha256 and how many chunk rows it has."""
    with services.db.read() as session:
        rows = session.execute(
            select(Bundle.sha256, func.count(BundleChunk.seq))
            .outerjoin(BundleChunk, BundleChunk.sha256 == Bundle.sha256)
            .group_by(Bundle.sha256)
        ).all()
    return {sha: count for sha, count in rows}


def bundle_of(services: Services, name: str, version: str = "1.0.0") -> str | None:
    """Return the bundle sha256 the version refers to."""
    _, row = services.registry.version_info(name, version)
    return row.bundle_sha256


def test_an_uploaded_version_refers_to_its_stored_bundle(
    client: TestClient, tokens: dict[str, str], services: Services, tmp_path: Path
) -> None:
    folder = write_module(tmp_path / "sources", "demo")
    assert upload(client, tokens["admin"], folder).status_code == 201

    sha = bundle_of(services, "demo")
    assert sha is not None
    assert stored(services) == {sha: 1}
    copy = tmp_path / "copy.tar.gz"
    with copy.open("wb") as out:
        services.lifecycle.bundles.write_to(sha, out)
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == sha
    root = extract_bundle(copy, tmp_path / "unpacked")
    _, row = services.registry.version_info("demo")
    assert hash_tree(root) == row.files  # the very files registered


def test_packing_ignores_times_and_modes_but_not_content(tmp_path: Path) -> None:
    folder = write_module(tmp_path, "demo")
    first, size = pack_tree(folder, io.BytesIO())
    handler = folder / "handlers" / "main.py"
    os.utime(handler, (1_000_000, 1_000_000))
    handler.chmod(0o600)
    assert pack_tree(folder, io.BytesIO()) == (first, size)
    handler.write_text(handler.read_text() + "# changed\n")
    assert pack_tree(folder, io.BytesIO())[0] != first


def test_a_failed_registration_leaves_no_bundle(
    client: TestClient,
    tokens: dict[str, str],
    services: Services,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise Conflict("refused by the test")

    monkeypatch.setattr(services.registry, "register", refuse)
    response = upload(client, tokens["admin"], write_module(tmp_path / "sources", "demo"))

    assert response.status_code == 409
    assert stored(services) == {}
    with services.db.read() as session:
        assert session.scalar(select(func.count()).select_from(BundleChunk)) == 0


def test_removal_deletes_the_bundles_no_version_refers_to(
    client: TestClient, tokens: dict[str, str], services: Services, tmp_path: Path
) -> None:
    admin = tokens["admin"]
    sources = tmp_path / "sources"
    for name, version in (("demo", "1.0.0"), ("demo", "1.1.0"), ("other", "1.0.0")):
        assert upload(client, admin, write_module(sources, name, version)).status_code == 201
    kept = bundle_of(services, "other")
    assert len(stored(services)) == 3

    removal = client.delete(f"{API}/modules/demo", headers=bearer(admin))

    assert removal.status_code == 204, removal.text
    assert list(stored(services)) == [kept]
    with services.db.read() as session:
        chunks = session.scalars(select(BundleChunk.sha256).distinct()).all()
    assert chunks == [kept]


def test_versions_from_before_bundles_are_stored_by_the_node_that_has_their_code(
    client: TestClient, tokens: dict[str, str], services: Services, tmp_path: Path
) -> None:
    response = upload(client, tokens["admin"], write_module(tmp_path / "sources", "demo"))
    assert response.status_code == 201, response.text
    sha = bundle_of(services, "demo")
    with services.db.write() as session:  # as a version installed before migration 0006
        session.execute(update(ModuleVersion).values(bundle_sha256=None))
        session.execute(delete(BundleChunk))
        session.execute(delete(Bundle))

    again = Services.start(services.settings)
    try:
        assert bundle_of(again, "demo") == sha  # the same bytes: packing is deterministic
        assert stored(again) == {sha: 1}
    finally:
        again.close()


def test_a_large_bundle_is_never_whole_in_memory(services: Services, tmp_path: Path) -> None:
    folder = write_module(tmp_path, "big")
    with (folder / "data.bin").open("wb") as out:  # incompressible, so the pack is as big
        for _ in range(24):
            out.write(os.urandom(MB))
    bundles = services.lifecycle.bundles

    tracemalloc.start()
    try:
        sha = bundles.store(folder)
        _, stored_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        copy = tmp_path / "copy.tar.gz"
        with copy.open("wb") as out:
            bundles.write_to(sha, out)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    size = copy.stat().st_size
    assert size > 24 * MB
    assert stored(services)[sha] == -(-size // CHUNK_BYTES)
    assert stored_peak < 6 * MB, stored_peak
    assert read_peak < 6 * MB, read_peak
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == sha


def test_a_corrupt_bundle_is_refused(services: Services, tmp_path: Path) -> None:
    bundles = services.lifecycle.bundles
    sha = bundles.store(write_module(tmp_path, "demo"))
    with services.db.write() as session:
        data = session.scalars(select(BundleChunk.data).where(BundleChunk.sha256 == sha)).one()
        flipped = bytes([data[0] ^ 0xFF]) + data[1:]
        session.execute(update(BundleChunk).values(data=flipped))

    with pytest.raises(BundleCorrupt, match="does not match its sha256"):
        bundles.write_to(sha, io.BytesIO())
