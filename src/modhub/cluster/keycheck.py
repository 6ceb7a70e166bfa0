"""The secret key's check value: every node of a cluster must hold the same secret key.

The database keeps one value derived from the key (`cluster_meta`, key `secret_key_check`):
an HMAC-SHA256 of a fixed label under a key derived from the secret for this purpose alone
(`derive_key`, HKDF). It is never the key, and tells no more about it than the signature of
an access token does. The first node to start writes it (an insert that does nothing when
another node got there first, then a read back); every node compares it at start and
refuses to start when its key gives another value.

A database made before the check value existed (it may hold sealed config already) gets
its value on the first start of this version, once one sealed secret it holds opens with
the node's key: a key that cannot open them is refused instead of being adopted.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from modhub.db import Database
from modhub.db.models import ClusterMeta, Module
from modhub.errors import ConfigurationError, ModhubError
from modhub.keys import SecretBox, derive_key

CHECK_KEY = "secret_key_check"
PURPOSE = "modhub secret key check"
LABEL = b"modhub: every node of this cluster holds this secret key"
SCHEME = "hmac-sha256:v1:"
SEALED = "$sealed"
MISMATCH = (
    "this node's MODHUB_SECRET_KEY differs from the one the cluster's database was set up "
    "with: start every node with the same MODHUB_SECRET_KEY (a node with another key could "
    "not verify the cluster's tokens nor decrypt its config secrets)"
)


def check_value(secret: str) -> str:
    """Return the check value of `secret` (safe to store: it does not reveal the key)."""
    digest = hmac.new(derive_key(secret, PURPOSE), LABEL, hashlib.sha256).hexdigest()
    return SCHEME + digest


def verify_secret_key(db: Database, secret: str) -> bool:
    """Check `secret` against the database's check value, writing it if there is none yet.

    Return whether this call wrote it. Raise ConfigurationError when the key differs from
    the cluster's (or, on a database without a check value, cannot open its secrets).
    """
    expected = check_value(secret)
    stored = _stored(db)
    wrote = False
    if stored is None:
        _adoptable(db, secret)
        wrote = _insert(db, expected)
        stored = _stored(db)
    if stored is None or not hmac.compare_digest(stored.encode(), expected.encode()):
        raise ConfigurationError(MISMATCH)
    return wrote


def _stored(db: Database) -> str | None:
    with db.read() as session:
        return session.scalar(select(ClusterMeta.value).where(ClusterMeta.key == CHECK_KEY))


def _insert(db: Database, value: str) -> bool:
    """Insert the check value unless a row is there already (another node's); no race."""
    dialect = postgresql if db.dialect == "postgresql" else sqlite
    statement = (
        dialect.insert(ClusterMeta)
        .values(key=CHECK_KEY, value=value)
        .on_conflict_do_nothing(index_elements=[ClusterMeta.key])
        .returning(ClusterMeta.key)
    )
    with db.write() as session:
        return session.execute(statement).first() is not None


def _adoptable(db: Database, secret: str) -> None:
    """Refuse a key that cannot open a secret sealed before the check value existed."""
    box = SecretBox(secret)
    for token in _sealed_tokens(db):
        try:
            box.open(token)
        except ModhubError:
            raise ConfigurationError(MISMATCH) from None
        return  # one that opens is proof enough: they were all sealed with one key


def _sealed_tokens(db: Database) -> Iterator[str]:
    with db.read() as session:
        configs: list[dict[str, Any]] = list(session.scalars(select(Module.config)))
    for config in configs:
        for value in (config or {}).values():
            # registry.config's sealed form, {"$sealed": token} (the registry is above us)
            if isinstance(value, dict) and isinstance(value.get(SEALED), str):
                yield value[SEALED]
