"""Install (or update) the MLflow webhook that calls the receiver, and explain MLflow's refusals
with the MLflow variable to set."""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.exceptions import MlflowException

from hokusai_mlflow_plugin.mlflow_facts import MlflowUnavailable

# MLflow's answers that mean "no" (rather than "could not ask")
_REFUSALS = {"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "NOT_IMPLEMENTED", "FEATURE_DISABLED", "PERMISSION_DENIED"}

EVENTS = ["model_version.created", "model_version_tag.set"]
DEFAULT_NAME = "hokusai"


class WebhookInstallError(Exception):
    """MLflow refused the webhook; the message names what to change."""


@dataclass(frozen=True)
class Installed:
    webhook_id: str
    created: bool
    tested: bool
    test_error: str | None = None


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
        return (
            "MLflow could not read the webhook's secret: start every MLflow server worker with the "
            "same MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY (a Fernet key), then install the webhook again."
        )
    if "not supported" in text or "filestore" in text or "not implemented" in text:
        return (
            "This MLflow server cannot keep webhooks: run it with a SQL backend "
            "(--backend-store-uri sqlite:///... or postgresql://...), MLflow 3.3 or newer."
        )
    return f"MLflow refused the webhook: {error.splitlines()[0][:300]}"


def install(client, url: str, secret: str, name: str = DEFAULT_NAME, test: bool = True) -> Installed:
    """Create the webhook, or update the one of the same name; then send MLflow's test payload."""
    try:
        existing = next((w for w in _all(client) if w.name == name), None)
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
        raise MlflowUnavailable(f"MLflow did not answer: {e.message.splitlines()[0][:200]}") from e
    if not test:
        return Installed(hook.webhook_id, created, tested=False)
    try:
        result = client.test_webhook(hook.webhook_id)
    except MlflowException as e:
        return Installed(hook.webhook_id, created, tested=False, test_error=explain(e.message, url))
    error = None if result.success else (result.error_message or f"HTTP {result.response_status}")
    return Installed(hook.webhook_id, created, tested=result.success, test_error=error)


def _all(client):
    token = None
    while True:
        page = client.list_webhooks(max_results=100, page_token=token)
        yield from page
        token = page.token
        if not token:
            return
