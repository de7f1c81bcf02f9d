"""The console's aggregates: tokens by status, decisions per hour and in the last day (of the
tokens a caller may read), tokens nobody owns, and whether a signed-in key is still in force. Each
is one bounded query; functions take a session (or a connection) and never commit."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hokusai_mlflow_plugin.auth import ownership
from hokusai_mlflow_plugin.auth.keys import Caller
from hokusai_mlflow_plugin.db.models import (
    OUTCOME_REGISTERED,
    OUTCOME_REJECTED,
    TOKEN_STATUSES,
    USER,
    ApiKey,
    Principal,
    Registration,
    Token,
    utcnow,
)

OUTCOMES = (OUTCOME_REGISTERED, OUTCOME_REJECTED)


def tokens_by_status(session: Session, caller: Caller | None = None) -> dict[str, int]:
    """How many tokens ``caller`` may read (None: all) are in each status (every status, zero
    where none). The caller's rights are in the query's WHERE."""
    query = _where(sa.select(Token.status, sa.func.count()).group_by(Token.status),
                   ownership.visible(caller) if caller is not None else None)
    counts = dict(session.execute(query).all())
    return {status: counts.get(status, 0) for status in TOKEN_STATUSES} | counts


def decisions(session: Session, hours: int = 7 * 24, recent: timedelta = timedelta(hours=24), now: datetime | None = None,
              caller: Caller | None = None) -> dict:
    """Registered and rejected versions of the tokens ``caller`` may read (None: all) per UTC hour
    over the last ``hours`` (``"hours"``, oldest first, every hour present, zeros where nothing was
    decided), and in the last ``recent`` exactly (``"recent"``). One scan: a GROUP BY of at most
    2 x ``hours`` rows, the recent ones counted by a FILTER in the same pass."""
    now = (now or utcnow()).astimezone(timezone.utc)
    last = now.replace(minute=0, second=0, microsecond=0)
    first = last - timedelta(hours=hours - 1)
    hour = _hour(session.get_bind().dialect.name)
    query = (sa.select(hour, Registration.outcome, sa.func.count(), sa.func.count().filter(Registration.created_at >= now - recent))
             .where(Registration.created_at >= min(first, now - recent))
             .group_by(hour, Registration.outcome))
    rows = session.execute(_where(query, ownership.visible_registrations(caller) if caller is not None else None)).all()
    counts: dict[tuple[datetime, str], int] = {}
    totals = {outcome: 0 for outcome in OUTCOMES}
    for bucket, outcome, n, n_recent in rows:
        counts[(_as_hour(bucket), outcome)] = n
        totals[outcome] = totals.get(outcome, 0) + n_recent
    buckets = []
    for i in range(hours):
        at = first + timedelta(hours=i)
        buckets.append({"hour": at, **{outcome: counts.get((at, outcome), 0) for outcome in OUTCOMES}})
    return {"hours": buckets, "recent": totals}


def unowned_tokens(session: Session) -> int:
    """How many tokens have no owner, once the deployment has users (else 0): each is reached by
    admin keys only, so no user's key sees it. One query."""
    has_users = sa.exists(sa.select(Principal.id).where(Principal.kind == USER))
    return session.scalar(sa.select(sa.func.count()).select_from(Token).where(Token.owner_id.is_(None), has_users))


def _where(query: sa.Select, clause) -> sa.Select:
    return query if clause is None else query.where(clause)


def _hour(dialect: str):
    """The UTC hour of ``created_at`` as SQL: the one expression that differs by database."""
    if dialect == "postgresql":
        return sa.func.date_trunc("hour", sa.func.timezone("UTC", Registration.created_at)).label("hour")
    return sa.func.strftime("%Y-%m-%d %H:00:00", Registration.created_at).label("hour")  # SQLite stores UTC text


def _as_hour(value) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def key_in_force(conn: sa.Connection, key_id: str, now: datetime | None = None) -> Caller | None:
    """The caller key ``key_id`` names if it is neither revoked nor expired, else None: the check
    each console page makes of the key its session was signed in with (one SELECT by key id)."""
    row = conn.execute(
        sa.select(ApiKey.key_id, ApiKey.name, ApiKey.scopes, ApiKey.expires_at, ApiKey.revoked_at, ApiKey.user_id).where(ApiKey.key_id == key_id)
    ).one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    expires = row.expires_at
    if expires is not None and (expires if expires.tzinfo else expires.replace(tzinfo=timezone.utc)) <= (now or utcnow()):
        return None
    return Caller(row.key_id, row.name, tuple(row.scopes.split(",")), user_id=row.user_id)
