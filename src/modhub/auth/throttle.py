"""Login throttling: a password check is reserved in the database before it is made.

A name gets at most `max_failures` checks, after which it is locked for `lockout_seconds`
from the check that reached the limit. Each check is reserved by one atomic upsert
(`INSERT … ON CONFLICT DO UPDATE … WHERE … RETURNING`): however many logins arrive at
once, in however many processes, no more than the limit are ever let through to the hash;
the others are refused before any password is looked at. A failed check leaves its
reservation counted; a successful one clears the name.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Integer, and_, bindparam, case, delete, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from modhub.db import Database
from modhub.db.models import LoginThrottle
from modhub.errors import TooManyAttempts
from modhub.settings import Settings

_TIME = LoginThrottle.locked_until.type


class LoginAttempts:
    """Reserves password checks per user name, on the database shared by every process."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings  # read at each login: the limits may be changed while running

    def reserve(self, username: str, now: datetime) -> None:
        """Count one check of `username`'s password; raise TooManyAttempts if it is locked."""
        most = self.settings.login_max_failures
        until = now + timedelta(seconds=self.settings.login_lockout_seconds)
        insert = postgresql.insert if self.db.dialect == "postgresql" else sqlite.insert
        now_p = bindparam("now", now, type_=_TIME)
        until_p = bindparam("until", until, type_=_TIME)
        limit = bindparam("limit", most, type_=Integer())
        table = LoginThrottle.__table__.c
        expired = and_(table.locked_until.is_not(None), table.locked_until <= now_p)
        count = case((expired, 1), else_=table.failures + 1)
        statement = (
            insert(LoginThrottle)
            .values(
                username=username,
                failures=1,
                locked_until=until if most <= 1 else None,
            )
            .on_conflict_do_update(
                index_elements=[table.username],
                set_={
                    "failures": count,
                    # The check that reaches the limit starts the lock (a running lock is
                    # kept: a row over a limit lowered since gets one more check, then locks).
                    "locked_until": case(
                        (count < limit, None),
                        (or_(expired, table.locked_until.is_(None)), until_p),
                        else_=table.locked_until,
                    ),
                },
                where=or_(expired, table.failures < limit, table.locked_until.is_(None)),
            )
            .returning(LoginThrottle.failures)
        )
        with self.db.write() as session:
            reserved = session.execute(statement).first()
            if reserved is not None:
                return
            locked_until = session.scalar(
                select(LoginThrottle.locked_until).where(LoginThrottle.username == username)
            )
        left = (locked_until - now).total_seconds() if locked_until else 0
        raise TooManyAttempts(max(int(left), 0) + 1)

    def clear(self, username: str) -> None:
        """Forget the checks of `username` (its password was right)."""
        with self.db.write() as session:
            session.execute(delete(LoginThrottle).where(LoginThrottle.username == username))
