"""API keys: ``hk_<key id>_<secret>``, made, checked, listed and revoked.

The key id (8 hex characters) is public and names the key in lists and logs; the secret (256
random bits) is shown once, at creation, and only its SHA-256 is kept. A random 256-bit secret
needs no slow password hash: nobody can guess it, so the hash only has to be one-way; it is
compared in constant time (the reasoning of djangorestframework-api-key 3.x and django-rest-knox).
The typed ``hk_`` prefix lets secret scanners find a leaked key.

Scopes climb: ``read`` (lists and details) < ``register`` (``POST /models/register``, and
everything that writes runs and models) < ``deploy`` (a deployer's: a token's deployments) <
``admin`` (tokens, keys, redelivery, reconcile). A key
holds the scopes it was given and every scope below them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hokusai_mlflow_plugin.core.errors import FORBIDDEN, INVALID, NOT_FOUND, UNAUTHORIZED, HokusaiError
from hokusai_mlflow_plugin.db.models import KEYS_CHANNEL, USER, ApiKey, SignInSession, utcnow

READ, REGISTER, DEPLOY, ADMIN = "read", "register", "deploy", "admin"
SCOPES = (READ, REGISTER, DEPLOY, ADMIN)  # each includes the ones before it
PREFIX = "hk_"
KEY_RE = re.compile(r"hk_([0-9a-f]{8})_([A-Za-z0-9_-]{43,128})")
LAST_USED_EVERY = timedelta(minutes=1)  # last_used_at is written at most this often per key


class ApiKeyError(HokusaiError):
    """An API-key request that cannot be carried out (a bad scope, an unknown key id)."""


class NotAuthenticated(HokusaiError):
    """No usable key: missing, malformed, unknown, revoked or expired (401). The message says
    which, and never holds the key; ``reason`` says it for counting (``MISSING`` ... ``EXPIRED``)."""

    kind = UNAUTHORIZED

    def __init__(self, message: str, reason: str = "unknown"):
        super().__init__(message)
        self.reason = reason


MISSING, MALFORMED, UNKNOWN, REVOKED, EXPIRED = "missing", "malformed", "unknown", "revoked", "expired"


class MissingScope(HokusaiError):
    """The key is good but lacks ``scope`` (403)."""

    kind = FORBIDDEN

    def __init__(self, scope: str, key_id: str):
        super().__init__(f"API key {key_id} lacks the '{scope}' scope: use a key created with --scope {scope}.")
        self.scope = scope


@dataclass(frozen=True)
class Caller:
    """Who a good key says is calling: what the API records and logs (never the secret)."""

    key_id: str
    name: str
    scopes: tuple[str, ...]
    expires_at: datetime | None = field(default=None, compare=False)
    user_id: int | None = None  # the user the key acts for; None only for an operator's admin key

    def allows(self, scope: str) -> bool:
        return allows(self.scopes, scope)


def allows(scopes, scope: str) -> bool:
    """Whether ``scopes`` cover ``scope`` (a higher scope covers the lower ones)."""
    return max((SCOPES.index(s) for s in scopes if s in SCOPES), default=-1) >= SCOPES.index(scope)


def parse_scopes(text: str) -> tuple[str, ...]:
    """``"read,register"`` -> ``("read", "register")``; a ``ApiKeyError`` names an unknown scope."""
    scopes = tuple(dict.fromkeys(s.strip().lower() for s in text.split(",") if s.strip()))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ApiKeyError(f"Unknown scope {unknown[0]!r}: use read, register, deploy or admin, comma-separated." if unknown
                        else "Give at least one scope: read, register, deploy or admin.", INVALID)
    return scopes


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m`` -> a timedelta; a ``ApiKeyError`` says the form otherwise."""
    match = re.fullmatch(r"\s*(\d{1,6})\s*([dhm])\s*", text or "")
    if not match or int(match.group(1)) == 0:
        raise ApiKeyError(f"{text!r} is not a duration: give a number of days, hours or minutes, such as 90d, 12h or 30m.", INVALID)
    unit = {"d": "days", "h": "hours", "m": "minutes"}[match.group(2)]
    return timedelta(**{unit: int(match.group(1))})


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class NewKey:
    key: str  # the whole key, to show once
    record: dict  # what ``to_dict`` shows of it


def create(
    session: Session, name: str, scopes: tuple[str, ...], expires_in: timedelta | None = None, user: str | None = None
) -> NewKey:
    """A new key, acting for ``user``. Without one, a ``read`` or ``register`` key acts for a user
    of the key's own name (made if missing), and an ``admin`` key is an operator's, of no user.
    Its secret is in ``NewKey.key`` and nowhere else, ever."""
    from hokusai_mlflow_plugin.auth import principals

    name = (name or "").strip()
    if not name or len(name) > 128:
        raise ApiKeyError("Give the key a name of 1 to 128 characters, such as 'ci-training'.", INVALID)
    if user:
        owner = principals.find(session, user, USER)
    elif allows(scopes, ADMIN):
        owner = None
    else:
        owner = principals.user_named(session, name)
    secret = secrets.token_urlsafe(32)
    key_id = secrets.token_hex(4)
    now = utcnow()
    row = ApiKey(key_id=key_id, secret_sha256=digest(secret), name=name, scopes=",".join(scopes), created_at=now,
                 expires_at=now + expires_in if expires_in else None, user_id=owner.id if owner else None)
    session.add(row)
    session.flush()
    return NewKey(f"{PREFIX}{key_id}_{secret}", row.to_dict())


def list_keys(session: Session, limit: int = 1000) -> list[ApiKey]:
    return list(session.scalars(sa.select(ApiKey).order_by(ApiKey.created_at, ApiKey.id).limit(limit)))


def get(session: Session, key_id: str) -> ApiKey:
    row = session.scalars(sa.select(ApiKey).where(ApiKey.key_id == key_id.strip().lower())).one_or_none()
    if row is None:
        raise ApiKeyError(f"No API key '{key_id}': see 'hokusai apikey list'.", NOT_FOUND)
    return row


def revoke(session: Session, key_id: str) -> ApiKey:
    """Revoke a key, and end the sessions signed in with it. On PostgreSQL the commit also
    NOTIFYs ``KEYS_CHANNEL`` with its id, which every gateway hears (``auth.revocation``)."""
    row = get(session, key_id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    # The people signed in with it are signed out (auth.sessions refuses them anyway: this records when).
    session.execute(sa.update(SignInSession).where(SignInSession.key_id == row.key_id, SignInSession.revoked_at.is_(None))
                    .values(revoked_at=utcnow()))
    if session.get_bind().dialect.name == "postgresql":  # again if already revoked: harmless, and heard
        session.execute(sa.select(sa.func.pg_notify(KEYS_CHANNEL, row.key_id)))
    return row


FIND = sa.select(ApiKey.__table__).where(ApiKey.__table__.c.key_id == sa.bindparam("key_id"))
TOUCH = (
    sa.update(ApiKey.__table__)
    .where(ApiKey.__table__.c.key_id == sa.bindparam("touched_key_id"))
    .values(last_used_at=sa.bindparam("now"))
)
_UNKNOWN = digest("no key has this secret")  # compared against for unknown ids: same work either way


def bearer(header: str | None) -> str | None:
    """The key an ``Authorization: Bearer hk_...`` header sends; None without the header."""
    if not header:
        return None
    kind, _, value = header.partition(" ")
    if kind.lower() != "bearer" or not value.strip():
        raise NotAuthenticated("The Authorization header must be 'Bearer hk_...'.", MALFORMED)
    return value.strip()


def split(key: str | None) -> tuple[str, str]:
    """``hk_<key id>_<secret>`` -> ``(key id, secret)``; ``NotAuthenticated`` for a missing or
    malformed key."""
    if not key:
        raise NotAuthenticated("An API key is required: send 'Authorization: Bearer hk_...'.", MISSING)
    match = KEY_RE.fullmatch(key.strip())
    if match is None:
        raise NotAuthenticated("The API key is malformed: it has the form hk_<key id>_<secret>, its id 8 lower-case "
                               "hex digits (a key is case-sensitive: send it exactly as it was shown).", MALFORMED)
    return match.group(1), match.group(2)


def authenticate(conn: sa.Connection, key: str | None, now: datetime | None = None) -> Caller:
    """The caller a key names; ``NotAuthenticated`` for a missing, malformed, unknown, revoked
    or expired key. Records the key's use at most once a minute, so that reads stay reads."""
    key_id, secret = split(key)
    now = now or utcnow()
    caller, touch = judge(conn.execute(FIND, {"key_id": key_id}).one_or_none(), key_id, secret, now)
    if touch:
        conn.execute(TOUCH, {"touched_key_id": key_id, "now": now})
    return caller


def judge(row, key_id: str, secret: str, now: datetime) -> tuple[Caller, bool]:
    """What the database's row for ``key_id`` (None if it has none) says of a request with
    ``secret``: the caller, and whether to record the key's use now; ``NotAuthenticated`` if
    the key is not in force. The same for every caller, however it read the row."""
    matches = hmac.compare_digest(digest(secret), row.secret_sha256 if row else _UNKNOWN)
    if row is None or not matches:
        raise NotAuthenticated(f"API key {key_id} is not known: check the key, or create one with 'hokusai apikey create'.",
                               UNKNOWN)
    if row.revoked_at is not None:
        raise NotAuthenticated(f"API key {key_id} was revoked: use another key.", REVOKED)
    if row.expires_at is not None and _aware(row.expires_at) <= now:
        raise NotAuthenticated(f"API key {key_id} expired: create a new one with 'hokusai apikey create'.", EXPIRED)
    touch = row.last_used_at is None or now - _aware(row.last_used_at) >= LAST_USED_EVERY
    expires_at = _aware(row.expires_at) if row.expires_at is not None else None
    return Caller(key_id, row.name, tuple(row.scopes.split(",")), expires_at, row.user_id), touch


def require(caller: Caller, scope: str) -> None:
    if not caller.allows(scope):
        raise MissingScope(scope, caller.key_id)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
