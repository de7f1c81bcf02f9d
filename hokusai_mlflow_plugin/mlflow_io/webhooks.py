"""Install (or update) the MLflow webhook that calls the receiver, and explain MLflow's refusals
with the MLflow variable to set; make the secrets it is signed with, kept in owner-only files."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from mlflow.exceptions import MlflowException, RestException

from hokusai_mlflow_plugin.core.errors import CONFIG, HokusaiError, MlflowUnavailable, first_line
from hokusai_mlflow_plugin.mlflow_io.client import pages

# MLflow's answers that mean "no" (rather than "could not ask")
_REFUSALS = {"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "NOT_IMPLEMENTED", "FEATURE_DISABLED", "PERMISSION_DENIED"}

EVENTS = ["model_version.created", "model_version_tag.set"]
DEFAULT_NAME = "hokusai"


class WebhookInstallError(HokusaiError):
    """MLflow refused the webhook; the message names what to change."""

    kind = CONFIG


def new_secret() -> str:
    """A webhook secret: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def save_secret(path: Path, text: str, *, replace: bool = True) -> Path:
    """Write ``text`` to ``path`` readable by its owner only (mode 0600 from the first byte, so it
    is never readable by others, even for a moment). ``replace=False`` refuses an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if replace else os.O_EXCL)
    with os.fdopen(os.open(path, flags, 0o600), "w") as f:
        f.write(text)
    return path


@dataclass(frozen=True)
class Installed:
    webhook_id: str
    created: bool
    tested: bool
    test_error: str | None = None


# MLflow without MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY makes a new key in every process: after a
# restart (or in another worker) it cannot decrypt the secrets it stored, and its webhooks API
# answers 500 with an empty message (its log says only "Error in _list_webhooks: .").
_KEY_HINT = (
    "start every MLflow server worker with the same MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY (a Fernet "
    "key, kept across restarts), then install the webhook again"
)


def _server_error(e: MlflowException) -> bool:
    """MLflow's server answered 500: its JSON error (RestException), or urllib3's retries spent on
    500s. Not a connection failure, nor a 200 that is not MLflow's JSON (a proxy's login page)."""
    return "500 error responses" in e.message or (isinstance(e, RestException) and e.error_code == "INTERNAL_ERROR")


def explain(error: str, url: str) -> str:
    text = error.lower()
    if "scheme" in text:
        return (
            f"MLflow refused the webhook URL {url}: its scheme is not allowed. Use https, or start "
            "the MLflow server with MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https (local use only)."
        )
    if "non-public ip" in text or "private" in text:
        return (
            f"MLflow refused the webhook URL {url}: it resolves to a private address. Use a public "
            "address, or start the MLflow server with MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true."
        )
    if "decrypt" in text or "invalidtoken" in text or "fernet" in text:
        return f"MLflow could not read the webhook's secret: {_KEY_HINT}."
    if "not supported" in text or "filestore" in text or "not implemented" in text:
        return (
            "This MLflow server cannot keep webhooks: run it with a SQL backend "
            "(--backend-store-uri sqlite:///... or postgresql://...), MLflow 3.3 or newer."
        )
    return f"MLflow refused the webhook: {first_line(error, 'no reason given')}"


def install(client, url: str, secret: str, name: str = DEFAULT_NAME, test: bool = True) -> Installed:
    """Create the webhook, or update the one of the same name; then send MLflow's test payload."""
    try:
        existing = next((w for w in pages(client.list_webhooks, page_size=100) if w.name == name), None)
        if existing is None:
            hook = client.create_webhook(name=name, url=url, events=EVENTS, secret=secret,
                                         description="Hokusai: decide new model versions")
            created = True
        else:
            hook = client.update_webhook(existing.webhook_id, url=url, events=EVENTS, secret=secret, status="ACTIVE")
            created = False
    except MlflowException as e:
        if e.error_code in _REFUSALS:
            raise WebhookInstallError(explain(e.message, url)) from None
        if _server_error(e):
            raise WebhookInstallError(
                f"MLflow's webhooks API failed with a server error ({first_line(e.message, e.error_code)}). "
                "The usual cause is a server started without MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY, which "
                f"can no longer read the secrets it stored; if its log says 'Error in _list_webhooks: .', "
                f"{_KEY_HINT}. MLflow's API cannot delete a webhook whose secret it cannot read: delete "
                "those rows from the webhooks table of its database first."
            ) from None
        raise MlflowUnavailable(f"MLflow did not answer: {first_line(e.message, e.error_code)}") from e
    if not test:
        return Installed(hook.webhook_id, created, tested=False)
    try:
        result = client.test_webhook(hook.webhook_id)
    except MlflowException as e:
        return Installed(hook.webhook_id, created, tested=False, test_error=explain(e.message, url))
    error = None
    if not result.success:
        error = result.error_message or f"HTTP {result.response_status}"
        if "invalidtoken" in error.lower():  # another worker made the secret with another key
            error = explain(error, url)
    return Installed(hook.webhook_id, created, tested=result.success, test_error=error)
