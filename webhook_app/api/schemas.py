"""The API's request and response shapes: pydantic models that validate each request and are the
schemas of the OpenAPI document (one source of truth). Every rule the server applies to a request
is stated here, as a pattern, a length, an enum, a range or ``dependentRequired``, from the same
regular expressions and tables the domain checks with; ``webhook_app.api.document`` adds what
flask-openapi3 does not say (media types, headers, tags, links)."""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from hokusai_mlflow_plugin.auth import keys, principals
from hokusai_mlflow_plugin.core import cursors, tags
from hokusai_mlflow_plugin.core.metrics import METRICS
from hokusai_mlflow_plugin.mlflow_io import versions


def whole(regex) -> str:
    """A compiled regular expression of the domain (matched with ``fullmatch``) as a JSON Schema
    pattern, which matches anywhere unless anchored."""
    return f"^(?:{regex.pattern})$"


TOKEN_ID = whole(tags.TOKEN_RE)
PRINCIPAL = whole(principals.NAME_RE)
KEY_ID = r"^[0-9a-f]{8}$"  # the key id of keys.KEY_RE, hk_<key id>_<secret>
assert keys.KEY_RE.pattern.startswith("hk_([0-9a-f]{8})_"), "KEY_ID no longer matches the keys' form"
EVENT_ID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"  # uuid4, as the outbox makes them
MODEL_URI = f"^(?:{versions.RUNS_URI.pattern}|{versions.MODELS_URI.pattern})$"
# MLflow's rule for a registered model's name (no '/' nor ':', not blank), narrowed to what a path,
# a tag and a filter carry safely: letters, digits, '.', '_', '-' and inner spaces.
MODEL_NAME = r"^[A-Za-z0-9](?:[A-Za-z0-9._ -]{0,254}[A-Za-z0-9._-])?$"
# Free text the server compares or stores: any characters but NUL, which PostgreSQL's text refuses.
TEXT = r"^[^\x00]*$"
MetricName = Literal[tuple(sorted(METRICS))]  # type: ignore[valid-type]

TokenStatus = Literal["draft", "registered", "deployed", "archived"]
DeliveryStatus = Literal["pending", "failed", "dead", "delivered"]
Limit = Field(default=50, ge=1, le=100, description="Items per page, 1 to 100.")
RowCursor = Field(default=None, pattern=cursors.ROW_CURSOR, description="The `next` cursor of the previous page.")
TokenCursor = Field(default=None, pattern=cursors.TOKEN_CURSOR, description="The `next` cursor of the previous page.")


def _no_default(schema: dict) -> None:
    schema.pop("default", None)


def Optional(**rules) -> Any:  # noqa: N802 (a Field, as pydantic spells them)
    """A field a request may leave out, but not send as null: absent, it is None."""
    return Field(default=None, json_schema_extra=_no_default, **rules)


class Strict(BaseModel):
    """A request's query, path or body: unknown fields refused. ``dependent`` names the fields
    that need others once present (JSON Schema's ``dependentRequired``, checked here too)."""

    model_config = ConfigDict(extra="forbid")
    dependent: ClassVar[dict[str, tuple[str, ...]]] = {}

    @model_validator(mode="after")
    def _dependent_required(self):
        for field, needs in self.dependent.items():
            if field in self.model_fields_set:
                missing = [n for n in needs if n not in self.model_fields_set or getattr(self, n) is None]
                if missing:
                    raise ValueError(f"{field} needs {', '.join(missing)} too (for example metric auroc)")
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler):
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        if cls.dependent:
            target["dependentRequired"] = {k: list(v) for k, v in cls.dependent.items()}
        return schema


class Body(Strict):
    """A JSON body: types as JSON has them (no number from a string, no string from a number)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Judged(Body):
    """A body with a metric and a baseline: the baseline in the metric's valid range (the gate's
    table, ``core.metrics``), stated as ``if``/``then`` per metric."""

    dependent: ClassVar[dict[str, tuple[str, ...]]] = {"baseline": ("metric",)}

    @model_validator(mode="after")
    def _baseline_in_range(self):
        baseline, metric = getattr(self, "baseline", None), getattr(self, "metric", None)
        if baseline is not None and metric is not None and not METRICS[metric].in_range(baseline):
            raise ValueError(f"the baseline {baseline!r} for {metric} is outside its valid range {METRICS[metric].range_text}")
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler):
        schema = super().__get_pydantic_json_schema__(core_schema, handler)
        target = handler.resolve_ref_schema(schema)
        target["allOf"] = [_range_rule(m) for m in sorted(METRICS.values(), key=lambda m: m.name)]
        return schema


def _range_rule(metric) -> dict[str, Any]:
    bounds = {}
    if not math.isinf(metric.low):
        bounds["minimum"] = metric.low
    if not math.isinf(metric.high):
        bounds["maximum"] = metric.high
    return {"if": {"properties": {"metric": {"const": metric.name}}, "required": ["metric", "baseline"]},
            "then": {"properties": {"baseline": bounds}}}


class Problem(BaseModel):
    """RFC 9457 problem details, the one error shape of the API."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[dict] | None = Field(default=None, description="For a 422: each failing field and why.")


# -- tokens --------------------------------------------------------------------------------------


class TokenQuery(Strict):
    status: TokenStatus | None = None
    q: str | None = Field(default=None, max_length=64, pattern=TEXT, description="A part of the token id.")
    unowned: bool = Field(default=False, description="Only tokens with no owner (which admin keys alone reach).")
    limit: int = Limit
    cursor: str | None = TokenCursor


TokenId = Field(min_length=1, max_length=64, pattern=TOKEN_ID, description="Stored upper case, as the platform does.")
PrincipalName = Field(min_length=1, max_length=128, pattern=PRINCIPAL, description="A user's or a team's name.")


class TokenPath(Strict):
    token_id: str = TokenId


class TokenCreate(Judged):
    token_id: str = TokenId
    metric: MetricName = Optional(description="The metric the token's model is judged on.")
    baseline: float = Optional(allow_inf_nan=False, description="The value the metric must reach; needs its metric.")
    owner: str = Optional(min_length=1, max_length=128, pattern=PRINCIPAL,
                       description="The user or team that owns it. Without one, only admin keys reach the token.")


class OwnerBody(Body):
    owner: str | None = Field(min_length=1, max_length=128, pattern=PRINCIPAL,
                              description="A user or team; null: no owner (admins only).")


class GrantPath(Strict):
    token_id: str = TokenId
    name: str = PrincipalName


class GrantBody(Body):
    permission: Literal["read", "register"]


class Grant(BaseModel):
    name: str
    kind: Literal["user", "team"]
    permission: Literal["read", "register"]


class GrantList(BaseModel):
    items: list[Grant]


class Token(BaseModel):
    token_id: str
    status: str
    metric_name: str | None = None
    baseline_value: float | None = None
    metric_value: float | None = None
    mlflow_run_id: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    owner: str | None = Field(default=None, description="The user or team that owns it; null: admins only.")
    owner_kind: Literal["user", "team"] | None = None
    deployment_target: str | None = Field(default=None, description="Where a deployed token's version serves.")
    created_at: str | None = None
    updated_at: str | None = None


class Registration(BaseModel):
    model_name: str
    model_version: str
    token_id: str | None = None
    outcome: str
    reason: str
    metric_name: str | None = None
    metric_value: float | None = None
    baseline_value: float | None = None
    mlflow_run_id: str | None = None
    delivery_id: str | None = None
    created_at: str | None = None


class TokenDetail(Token):
    registrations: list[Registration]
    grants: list[Grant] | None = Field(default=None, description="Who else may read or register (admin keys only).")


class TokenPage(BaseModel):
    items: list[Token]
    next: str | None = Field(description="The URL of the next page, or null at the end.")


# -- registering ---------------------------------------------------------------------------------


class RegisterBody(Judged):
    token_id: str = TokenId
    model_uri: str = Field(min_length=1, max_length=1000, pattern=MODEL_URI, examples=["models:/m-" + "0" * 32],
                           description="runs:/<run id>/<artifact path> or models:/m-<model id>.")
    model_name: str = Optional(min_length=1, max_length=256, pattern=MODEL_NAME,
                            description="Default: hokusai-<token id>.")
    metric: MetricName = Optional(description="Must be the token's own, when it has one.")
    baseline: float = Optional(allow_inf_nan=False,
                            description="Must be the token's own, when it has one: a tag may not lower the bar.")


class Decision(BaseModel):
    status: Literal["registered", "rejected"]
    reason: str
    token_id: str | None = None
    model_name: str
    model_version: str
    run_id: str | None = None
    metric_name: str | None = None
    metric_value: float | None = None
    baseline: float | None = None


class RegistrationQuery(Strict):
    token: str | None = Field(default=None, max_length=64, pattern=TOKEN_ID)
    status: Literal["registered", "rejected"] | None = None
    model: str | None = Field(default=None, max_length=256, pattern=TEXT)
    limit: int = Limit
    cursor: str | None = RowCursor


class RegistrationPage(BaseModel):
    items: list[Registration]
    next: str | None


# -- events --------------------------------------------------------------------------------------


class EventQuery(Strict):
    status: DeliveryStatus | None = Field(default=None, description="Events with a delivery in this state.")
    type: str | None = Field(default=None, max_length=64, pattern=TEXT)
    token: str | None = Field(default=None, max_length=64, pattern=TOKEN_ID)
    limit: int = Limit
    cursor: str | None = RowCursor


class EventPath(Strict):
    event_id: str = Field(max_length=36, pattern=EVENT_ID)


# RFC 3339's date-time, its offset included (what ``format: date-time`` means); pydantic alone takes
# more (a number of seconds, a date, no offset), which the document would not say.
_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})")


def _rfc3339(value: Any) -> Any:
    if isinstance(value, str) and not _RFC3339.fullmatch(value):
        raise ValueError("use an RFC 3339 date-time with its offset, such as 2026-12-01T00:00:00Z")
    return value


DateTime = Annotated[datetime, BeforeValidator(_rfc3339)]


class BulkRedeliverQuery(Strict):
    status: Literal["dead", "failed"] = "dead"
    since: DateTime | None = Field(default=None, description="RFC 3339, with its offset: only deliveries created since then.")


class Delivery(BaseModel):
    sink: str | None
    status: str
    attempts: int
    last_error: str | None = None
    delivered_at: str | None = None


class Event(BaseModel):
    event_id: str
    event_type: str
    created_at: str | None
    payload: dict
    deliveries: list[Delivery]


class Attempt(BaseModel):
    at: str | None
    status_code: int | None
    error: str | None
    latency_ms: float


class DeliveryDetail(Delivery):
    next_attempt_at: str | None = None
    history: list[Attempt]


class EventDetail(Event):
    deliveries: list[DeliveryDetail]


class EventPage(BaseModel):
    items: list[Event]
    next: str | None


class Redelivered(BaseModel):
    redelivered: int = Field(description="Deliveries made due again now.")


# -- reconcile -----------------------------------------------------------------------------------


class Outcome(BaseModel):
    status: str
    reason: str
    model_name: str
    model_version: str
    token_id: str | None = None


class Swept(BaseModel):
    decided: list[Outcome]


# -- principals and keys (admin) -------------------------------------------------------------------


class PrincipalCreate(Body):
    name: str = PrincipalName


class UserPath(Strict):
    name: str = PrincipalName


class TeamPath(Strict):
    name: str = PrincipalName


class MemberPath(Strict):
    name: str = PrincipalName
    user: str = PrincipalName


class User(BaseModel):
    name: str
    teams: list[str]
    created_at: str | None = None


class Team(BaseModel):
    name: str
    members: list[str]
    created_at: str | None = None


class UserList(BaseModel):
    items: list[User]


class TeamList(BaseModel):
    items: list[Team]


class KeyCreate(Body):
    name: str = Field(min_length=1, max_length=128, pattern=PRINCIPAL,
                      description="A read or register key with no user acts for a user of this name: a name of that form.")
    scopes: list[Literal["read", "register", "deploy", "admin"]] = Field(min_length=1)
    user: str = Optional(min_length=1, max_length=128, pattern=PRINCIPAL,
                             description="The user the key acts for. Default: a read or register key acts for a user "
                                         "of its own name; an admin key is an operator's.")
    expires_in: str = Optional(max_length=16, pattern=r"^[1-9][0-9]{0,5}[dhm]$",
                            description="A lifetime such as 90d, 12h or 30m.")


class KeyPath(Strict):
    key_id: str = Field(min_length=8, max_length=8, pattern=KEY_ID)


class ApiKey(BaseModel):
    key_id: str
    name: str
    scopes: list[str]
    user: str | None = None
    created_at: str | None = None
    expires_at: str | None = None
    revoked_at: str | None = None
    last_used_at: str | None = None


class NewApiKey(ApiKey):
    key: str = Field(description="The whole key, hk_<key id>_<secret>: shown once, never again.")


class ApiKeyList(BaseModel):
    items: list[ApiKey]


class Me(BaseModel):
    key_id: str
    name: str
    scopes: list[str]
    user: str | None = None
    teams: list[str]
    admin: bool


# -- the token's life after registration -----------------------------------------------------------


class DeploymentBody(Strict):
    # Python's engine: the target's pattern says what MLflow's aliases refuse ('latest', v<number>)
    # with lookaheads, which pydantic's default engine does not run.
    model_config = ConfigDict(extra="forbid", regex_engine="python-re")

    model_name: str = Field(min_length=1, max_length=256, pattern=TEXT, description="The token's registered model.")
    version: str = Field(min_length=1, max_length=32, pattern=r"^[0-9]+$", description="The token's registered version.")
    target: str = Field(min_length=1, max_length=64, pattern=r"^(?![Ll][Aa][Tt][Ee][Ss][Tt]$)(?![vV][0-9]+$)[A-Za-z0-9_-]+$",
                        description="Where it serves, such as production; it becomes the version's alias in MLflow (so not 'latest' nor v<number>).")


class Deployment(Token):
    alias_set: bool = Field(description="Whether MLflow shows the target as the version's alias (false: MLflow did not "
                                        "answer; the deployment stands, call again to set it).")


class ArchiveBody(Strict):
    reason: str | None = Field(default=None, max_length=2000, pattern=TEXT, description="Why, for the token's history.")


class Transition(BaseModel):
    from_: str = Field(alias="from")
    to: str
    at: str | None
    actor: str = Field(description="The user who acted (or 'key <name>' for an operator's key; 'mlflow' for the registration).")
    key_id: str | None = None
    reason: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    target: str | None = None
    run_id: str | None = None


class HistoryPage(BaseModel):
    items: list[Transition]


# -- MLflow objects' shares (webhook_app.api.mlflow_shares) ----------------------------------------------

EXPERIMENT_ID = r"^[0-9]{1,19}$"  # MLflow's experiment ids are integers


class ExperimentPath(Strict):
    experiment_id: str = Field(max_length=19, pattern=EXPERIMENT_ID, description="The experiment's id in MLflow.")


class ExperimentSharePath(ExperimentPath):
    name: str = PrincipalName


class ModelPath(Strict):
    model_name: str = Field(min_length=1, max_length=256, pattern=MODEL_NAME, description="The registered model's name.")


class ModelSharePath(ModelPath):
    name: str = PrincipalName


class ShareBody(Body):
    permission: Literal["read", "edit"] = Field(description="read: see it; edit: also write it (only the owner shares).")


class MlflowShare(BaseModel):
    name: str
    kind: Literal["user", "team"]
    permission: Literal["read", "edit"]


class MlflowShares(BaseModel):
    kind: Literal["experiment", "registered_model"]
    object_id: str
    owner: str | None = Field(description="The owning team or user; null: made by an operator's key (admins only).")
    shares: list[MlflowShare]
