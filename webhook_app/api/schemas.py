"""The API's request and response shapes: pydantic models that validate each request and are the
schemas of the OpenAPI document (one source of truth)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TokenStatus = Literal["draft", "registered", "deployed", "archived"]
DeliveryStatus = Literal["pending", "failed", "dead", "delivered"]
Limit = Field(default=50, ge=1, le=100, description="Items per page, 1 to 100.")
Cursor = Field(default=None, description="The `next` cursor of the previous page.")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    q: str | None = Field(default=None, max_length=64, description="A part of the token id.")
    unowned: bool = Field(default=False, description="Only tokens with no owner (which admin keys alone reach).")
    limit: int = Limit
    cursor: str | None = Cursor


class TokenPath(Strict):
    token_id: str = Field(max_length=64)


PrincipalName = Field(min_length=1, max_length=128, description="A user's or a team's name.")


class TokenCreate(Strict):
    token_id: str = Field(min_length=1, max_length=64, description="Stored upper case, as the platform does.")
    metric: str | None = Field(default=None, max_length=64, description="auroc, accuracy, f1, ... (see the README).")
    baseline: float | None = Field(default=None, description="The value the metric must reach.")
    owner: str | None = Field(default=None, min_length=1, max_length=128,
                              description="The user or team that owns it. Without one, only admin keys reach the token.")


class OwnerBody(Strict):
    owner: str | None = Field(min_length=1, max_length=128, description="A user or team; null: no owner (admins only).")


class GrantPath(Strict):
    token_id: str = Field(max_length=64)
    name: str = PrincipalName


class GrantBody(Strict):
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


class RegisterBody(Strict):
    token_id: str = Field(min_length=1, max_length=64)
    model_uri: str = Field(min_length=1, max_length=1000, description="runs:/<run id>/<artifact path> or models:/m-<model id>.")
    model_name: str | None = Field(default=None, min_length=1, max_length=256, description="Default: hokusai-<token id>.")
    metric: str | None = Field(default=None, max_length=64, description="Must be the token's own, when it has one.")
    baseline: float | None = Field(default=None, description="Must be the token's own, when it has one: a tag may not lower the bar.")


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
    token: str | None = Field(default=None, max_length=64)
    status: Literal["registered", "rejected"] | None = None
    model: str | None = Field(default=None, max_length=256)
    limit: int = Limit
    cursor: str | None = Cursor


class RegistrationPage(BaseModel):
    items: list[Registration]
    next: str | None


# -- events --------------------------------------------------------------------------------------


class EventQuery(Strict):
    status: DeliveryStatus | None = Field(default=None, description="Events with a delivery in this state.")
    type: str | None = Field(default=None, max_length=64)
    token: str | None = Field(default=None, max_length=64)
    limit: int = Limit
    cursor: str | None = Cursor


class EventPath(Strict):
    event_id: str = Field(max_length=64)


class BulkRedeliverQuery(Strict):
    status: Literal["dead", "failed"] = "dead"
    since: str | None = Field(default=None, description="ISO-8601: only deliveries created since then.")


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


class PrincipalCreate(Strict):
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


class KeyCreate(Strict):
    name: str = Field(min_length=1, max_length=128)
    scopes: list[Literal["read", "register", "admin"]] = Field(min_length=1)
    user: str | None = Field(default=None, min_length=1, max_length=128,
                             description="The user the key acts for. Default: a read or register key acts for a user "
                                         "of its own name; an admin key is an operator's.")
    expires_in: str | None = Field(default=None, max_length=16, description="A lifetime such as 90d, 12h or 30m.")


class KeyPath(Strict):
    key_id: str = Field(max_length=16)


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
