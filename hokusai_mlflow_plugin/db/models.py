"""The token store: tokens, registrations (one per decided model version) and the event outbox."""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Token statuses. draft -> registered is ours; deployed and archived are set by others.
DRAFT, REGISTERED, DEPLOYED, ARCHIVED = "draft", "registered", "deployed", "archived"
TOKEN_STATUSES = (DRAFT, REGISTERED, DEPLOYED, ARCHIVED)
# PostgreSQL's NOTIFY channel on which each new outbox event's id is sent at commit.
NOTIFY_CHANNEL = "hokusai_events"
# ... on which a revoked API key's id is sent at commit, and on which each gateway says it heard it.
KEYS_CHANNEL, KEYS_HEARD_CHANNEL = "hokusai_api_keys", "hokusai_api_keys_heard"
# Registration outcomes.
OUTCOME_REGISTERED, OUTCOME_REJECTED = "registered", "rejected"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: sa.DateTime(timezone=True)}


class Token(Base):
    __tablename__ = "hokusai_tokens"

    token_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    status: Mapped[str] = mapped_column(sa.String(16), default=DRAFT, index=True)
    metric_name: Mapped[str | None] = mapped_column(sa.String(64))
    baseline_value: Mapped[float | None] = mapped_column(sa.Float)
    metric_value: Mapped[float | None] = mapped_column(sa.Float)
    mlflow_run_id: Mapped[str | None] = mapped_column(sa.String(64))
    model_name: Mapped[str | None] = mapped_column(sa.String(256))
    model_version: Mapped[str | None] = mapped_column(sa.String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # A user or a team (``Principal``); None: reached by admin keys only (and, where provenance is
    # ``open``, by versions with no recorded maker).
    owner_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("hokusai_principals.id", ondelete="SET NULL"), index=True)
    owner: Mapped["Principal | None"] = relationship(lazy="selectin")
    deployment_target: Mapped[str | None] = mapped_column(sa.String(64))  # where a deployed token's version serves

    def to_dict(self) -> dict:
        return {
            "token_id": self.token_id,
            "status": self.status,
            "metric_name": self.metric_name,
            "baseline_value": self.baseline_value,
            "metric_value": self.metric_value,
            "mlflow_run_id": self.mlflow_run_id,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "deployment_target": self.deployment_target,
            "owner": self.owner.name if self.owner is not None else None,
            "owner_kind": self.owner.kind if self.owner is not None else None,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


class Registration(Base):
    """One row per decided model version: the idempotency key of the whole flow."""

    __tablename__ = "hokusai_registrations"
    __table_args__ = (sa.UniqueConstraint("model_name", "model_version", name="uq_hokusai_registrations_model"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(sa.String(256))
    model_version: Mapped[str] = mapped_column(sa.String(32))
    token_id: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    outcome: Mapped[str] = mapped_column(sa.String(16))
    reason: Mapped[str] = mapped_column(sa.Text)
    metric_name: Mapped[str | None] = mapped_column(sa.String(64))
    metric_value: Mapped[float | None] = mapped_column(sa.Float)
    baseline_value: Mapped[float | None] = mapped_column(sa.Float)
    mlflow_run_id: Mapped[str | None] = mapped_column(sa.String(64))
    delivery_id: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)  # the console's windows

    def to_dict(self) -> dict:
        return {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "token_id": self.token_id,
            "outcome": self.outcome,
            "reason": self.reason,
            "metric_name": self.metric_name,
            "metric_value": self.metric_value,
            "baseline_value": self.baseline_value,
            "mlflow_run_id": self.mlflow_run_id,
            "delivery_id": self.delivery_id,
            "created_at": iso(self.created_at),
        }


class OutboxEvent(Base):
    """The durable event log: written in the registration transaction, delivered by the relay."""

    __tablename__ = "hokusai_outbox"

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(sa.String(36), unique=True)
    event_type: Mapped[str] = mapped_column(sa.String(64), index=True)
    payload: Mapped[dict] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


# Delivery states of one (event, sink) pair.
PENDING, DELIVERED, FAILED, DEAD = "pending", "delivered", "failed", "dead"
DELIVERY_STATES = (PENDING, DELIVERED, FAILED, DEAD)


class Delivery(Base):
    """The state of one event at one sink. ``failed`` means failed and retrying."""

    __tablename__ = "hokusai_deliveries"
    __table_args__ = (
        sa.UniqueConstraint("event_id", "sink", name="uq_hokusai_deliveries_event_sink"),
        sa.Index("ix_hokusai_deliveries_due", "sink", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("hokusai_outbox.event_id", ondelete="CASCADE"))
    outbox_id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"))
    sink: Mapped[str] = mapped_column(sa.String(512))
    status: Mapped[str] = mapped_column(sa.String(16), default=PENDING, index=True)  # outbox_health's counts
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    locked_until: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(sa.String(36))
    horizon_start: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    delivered_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SinkState(Base):
    """A sink an event consumer turned off: Standard Webhooks' 410 Gone disables the endpoint until
    an operator enables it again (``hokusai events enable``). No row, or ``disabled_at`` null, is
    an enabled sink."""

    __tablename__ = "hokusai_sink_states"

    sink: Mapped[str] = mapped_column(sa.String(512), primary_key=True)
    disabled_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(sa.Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Attempt(Base):
    """Every try at a delivery: when, how it ended, how long it took."""

    __tablename__ = "hokusai_delivery_attempts"

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(sa.ForeignKey("hokusai_deliveries.id", ondelete="CASCADE"), index=True)
    attempted_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(sa.Text)
    latency_ms: Mapped[float] = mapped_column(sa.Float)


class SweepState(Base):
    """Small key/value state of the reconcile sweep (its watermark)."""

    __tablename__ = "hokusai_sweep_state"

    key: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    value: Mapped[str] = mapped_column(sa.Text)


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; we only ever store UTC
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


class ApiKey(Base):
    """An API key: its public id and the SHA-256 of its secret (the secret itself is never kept)."""

    __tablename__ = "hokusai_api_keys"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(sa.String(16), unique=True)
    secret_sha256: Mapped[str] = mapped_column(sa.String(64))
    name: Mapped[str] = mapped_column(sa.String(128))
    scopes: Mapped[str] = mapped_column(sa.String(64))  # comma-separated: read,register,admin
    # The user the key acts for; None only for an operator's admin key.
    user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("hokusai_principals.id", ondelete="SET NULL"))
    user: Mapped["Principal | None"] = relationship(lazy="selectin")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]

    def to_dict(self) -> dict:
        """Everything an operator may see of a key: never its secret, nor the secret's hash."""
        return {
            "key_id": self.key_id,
            "name": self.name,
            "scopes": self.scopes.split(","),
            "user": self.user.name if self.user is not None else None,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "revoked_at": iso(self.revoked_at),
            "last_used_at": iso(self.last_used_at),
        }


# Principals: users and teams share one namespace, so an owner's name is never ambiguous.
USER, TEAM = "user", "team"
# What a grant gives on a token (an owner, or a member of the owning team, has both).
GRANT_READ, GRANT_REGISTER = "read", "register"
# The MLflow objects whose makers are recorded.
MADE_RUN, MADE_LOGGED_MODEL = "run", "logged_model"


class Principal(Base):
    """A user or a team."""

    __tablename__ = "hokusai_principals"
    __table_args__ = (sa.CheckConstraint("kind IN ('user', 'team')", name="kind"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(128), unique=True)
    kind: Mapped[str] = mapped_column(sa.String(8))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TeamMember(Base):
    __tablename__ = "hokusai_team_members"

    team_id: Mapped[int] = mapped_column(sa.ForeignKey("hokusai_principals.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("hokusai_principals.id", ondelete="CASCADE"), primary_key=True,
                                         index=True)
    added_at: Mapped[datetime] = mapped_column(default=utcnow)


class TokenGrant(Base):
    """``read`` or ``register`` on a token, given to a user or a team beside its owner."""

    __tablename__ = "hokusai_token_grants"
    __table_args__ = (sa.CheckConstraint("permission IN ('read', 'register')", name="permission"),)

    token_id: Mapped[str] = mapped_column(sa.ForeignKey("hokusai_tokens.token_id", ondelete="CASCADE"), primary_key=True)
    principal_id: Mapped[int] = mapped_column(sa.ForeignKey("hokusai_principals.id", ondelete="CASCADE"), primary_key=True,
                                              index=True)
    permission: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MlflowMaker(Base):
    """Who made an MLflow run or logged model through the gateway: the authenticated key's user,
    recorded from MLflow's answer to the create call (never from a tag, which any writer sets)."""

    __tablename__ = "hokusai_mlflow_makers"

    # object_id first in the primary key: a decision looks its objects up by id
    object_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16), primary_key=True)  # run | logged_model
    user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("hokusai_principals.id", ondelete="SET NULL"))
    key_id: Mapped[str] = mapped_column(sa.String(16))
    admin: Mapped[bool] = mapped_column(sa.Boolean)  # made with an operator's admin key
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The experiment the run or logged model was made in (from MLflow's answer; it never changes):
    # what the gateway judges a request on the object by, without asking MLflow.
    experiment_id: Mapped[str | None] = mapped_column(sa.String(64))


# The MLflow objects that have owners (runs, logged models, traces and artifacts go with their
# experiment; model versions with their registered model), and what a share gives on them.
EXPERIMENT, REGISTERED_MODEL = "experiment", "registered_model"
SHARE_READ, SHARE_EDIT = "read", "edit"


class MlflowObject(Base):
    """The owner of an MLflow experiment (by id) or registered model (by name) made through the
    gateway: the creator's team, or the creator where it has none; None for an operator's."""

    __tablename__ = "hokusai_mlflow_objects"

    kind: Mapped[str] = mapped_column(sa.String(16), primary_key=True)  # experiment | registered_model
    object_id: Mapped[str] = mapped_column(sa.String(256), primary_key=True)  # experiment id, or model name
    owner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("hokusai_principals.id", ondelete="SET NULL"), index=True)
    creator_id: Mapped[int | None] = mapped_column(sa.ForeignKey("hokusai_principals.id", ondelete="SET NULL"))
    key_id: Mapped[str] = mapped_column(sa.String(16))
    # The owner's own experiment that stands in for MLflow's Default (id 0) (auth.mlflow_objects).
    is_default: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MlflowShare(Base):
    """``read`` or ``edit`` on an experiment or registered model, given by its owner to a team or user."""

    __tablename__ = "hokusai_mlflow_shares"
    __table_args__ = (sa.CheckConstraint("permission IN ('read', 'edit')", name="permission"),)

    kind: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    object_id: Mapped[str] = mapped_column(sa.String(256), primary_key=True)
    principal_id: Mapped[int] = mapped_column(sa.ForeignKey("hokusai_principals.id", ondelete="CASCADE"), primary_key=True,
                                              index=True)
    permission: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TokenTransition(Base):
    """One status change of a token after its registration (which its registration row records):
    deployed, undeployed, archived; who made it, when, why, and the version."""

    __tablename__ = "hokusai_token_transitions"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    token_id: Mapped[str] = mapped_column(sa.ForeignKey("hokusai_tokens.token_id", ondelete="CASCADE"), index=True)
    from_status: Mapped[str] = mapped_column(sa.String(16))
    to_status: Mapped[str] = mapped_column(sa.String(16))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(sa.String(128))  # the key's user, or the key's name for an operator's key
    key_id: Mapped[str | None] = mapped_column(sa.String(16))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    model_name: Mapped[str | None] = mapped_column(sa.String(256))
    model_version: Mapped[str | None] = mapped_column(sa.String(32))
    target: Mapped[str | None] = mapped_column(sa.String(64))

    def to_dict(self) -> dict:
        return {"from": self.from_status, "to": self.to_status, "at": iso(self.at), "actor": self.actor,
                "key_id": self.key_id, "reason": self.reason, "model_name": self.model_name,
                "model_version": self.model_version, "target": self.target}


class SignInSession(Base):
    """A person's session, signed in with an API key at the console: it opens the console and the
    MLflow UI through the gateway. The cookie holds a random id; only its SHA-256 is kept here. It
    ends at sign-out (``revoked_at``), at its key's revocation or expiry, and at ``expires_at``."""

    __tablename__ = "hokusai_sessions"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    id_sha256: Mapped[str] = mapped_column(sa.String(64), unique=True)
    key_id: Mapped[str] = mapped_column(sa.ForeignKey("hokusai_api_keys.key_id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    revoked_at: Mapped[datetime | None]
