"""``HokusaiClient``: one ``requests`` session with the key and urllib3's retries of ``503``."""

from __future__ import annotations

from typing import Iterator
from urllib.parse import quote, urljoin

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from hokusai_mlflow_plugin.core.metrics import normalize_metric_name
from hokusai_mlflow_plugin.client.errors import (
    ApiError,
    ApiUnavailable,
    EventNotFound,
    NotFound,
    TokenConflict,
    TokenNotDraft,
    TokenNotFound,
    error_for,
)


def _seg(value: str) -> str:
    """One path segment, escaped: a name never reaches another route."""
    return quote(str(value), safe="")


class HokusaiClient:
    def __init__(self, url: str, api_key: str, timeout: float = 60.0, retries: int = 3):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {api_key}"
        self._session.headers["User-Agent"] = "hokusai-client/1"
        # Reads only: a POST that failed with 503 may have done part of its work.
        retry = Retry(total=retries, connect=retries, read=0, status_forcelist=(503,), allowed_methods=("GET",),
                      backoff_factor=0.5, respect_retry_after_header=True, raise_on_status=False)
        adapter = HTTPAdapter(max_retries=retry)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def __repr__(self) -> str:
        return f"HokusaiClient({self.url!r})"  # never the key

    # -- the platform's calls ----------------------------------------------------------------------

    def register(self, token_id: str, model_uri: str, model_name: str | None = None,
                 metric: str | None = None, baseline: float | None = None) -> dict:
        """The decision on a new version of a logged model (``runs:/...`` or ``models:/m-...``).
        Metric names are sent as the API spells them (``AUROC`` as ``auroc``)."""
        metric = normalize_metric_name(metric) if metric else None
        body = {"token_id": token_id, "model_uri": model_uri, "model_name": model_name, "metric": metric, "baseline": baseline}
        return self._call("POST", "/models/register", json={k: v for k, v in body.items() if v is not None},
                          not_found=TokenNotFound)

    def token(self, token_id: str) -> dict:
        """A token, with ``registrations``: every model version seen for it, newest first."""
        return self._call("GET", f"/tokens/{_seg(token_id)}", not_found=TokenNotFound)

    def tokens(self, status: str | None = None, q: str | None = None, unowned: bool = False) -> Iterator[dict]:
        """The tokens this key may read (every token for an admin key)."""
        return self._pages("/tokens", {"status": status, "q": q, "unowned": "true" if unowned else None})

    def create_token(self, token_id: str, metric: str | None = None, baseline: float | None = None,
                     owner: str | None = None) -> dict:
        metric = normalize_metric_name(metric) if metric else None
        body = {"token_id": token_id, "metric": metric, "baseline": baseline, "owner": owner}
        return self._call("POST", "/tokens", json={k: v for k, v in body.items() if v is not None})

    # -- the token's life after its registration --------------------------------------------------

    def deploy(self, token_id: str, model_name: str, version: str | int, target: str) -> dict:
        """Say that the token's registered version serves at ``target`` (a ``deploy`` key): the
        token, ``deployed``, with ``alias_set`` (whether MLflow shows ``target`` as the version's
        alias). The same call again changes nothing and answers the same."""
        body = {"model_name": model_name, "version": str(version), "target": target}
        return self._call("POST", f"/tokens/{_seg(token_id)}/deployments", json=body, not_found=TokenNotFound,
                          conflict=TokenConflict)

    def undeploy(self, token_id: str) -> dict:
        """End the token's deployment (a ``deploy`` key): the token, back to ``registered``."""
        return self._call("DELETE", f"/tokens/{_seg(token_id)}/deployments", not_found=TokenNotFound,
                          conflict=TokenConflict)

    def archive(self, token_id: str, reason: str | None = None) -> dict:
        """Archive the token for good (its owner or an admin): the token, ``archived``."""
        return self._call("POST", f"/tokens/{_seg(token_id)}/archive", json={"reason": reason} if reason else {},
                          not_found=TokenNotFound, conflict=TokenConflict)

    def history(self, token_id: str) -> list[dict]:
        """Every status change of the token, oldest first: ``from``, ``to``, ``at``, ``actor``,
        ``reason``, ``model_name``, ``model_version``, ``target``."""
        return self._call("GET", f"/tokens/{_seg(token_id)}/history", not_found=TokenNotFound)["items"]

    # -- ownership (admin keys) ----------------------------------------------------------------------

    def set_owner(self, token_id: str, owner: str | None) -> dict:
        """Give the token to user or team ``owner`` (None: to nobody, admins only)."""
        return self._call("PUT", f"/tokens/{_seg(token_id)}/owner", json={"owner": owner}, not_found=TokenNotFound)

    def grant(self, token_id: str, name: str, permission: str) -> list[dict]:
        return self._call("PUT", f"/tokens/{_seg(token_id)}/grants/{_seg(name)}", json={"permission": permission})["items"]

    def revoke_grant(self, token_id: str, name: str) -> list[dict]:
        return self._call("DELETE", f"/tokens/{_seg(token_id)}/grants/{_seg(name)}")["items"]

    def grants(self, token_id: str) -> list[dict]:
        return self._call("GET", f"/tokens/{_seg(token_id)}/grants", not_found=TokenNotFound)["items"]

    def me(self) -> dict:
        """This key: its id, name, scopes, user and the user's teams."""
        return self._call("GET", "/me")

    def users(self) -> list[dict]:
        return self._call("GET", "/users")["items"]

    def create_user(self, name: str) -> dict:
        return self._call("POST", "/users", json={"name": name})

    def teams(self) -> list[dict]:
        return self._call("GET", "/teams")["items"]

    def create_team(self, name: str) -> dict:
        return self._call("POST", "/teams", json={"name": name})

    def add_member(self, team: str, user: str) -> dict:
        return self._call("PUT", f"/teams/{_seg(team)}/members/{_seg(user)}")

    def remove_member(self, team: str, user: str) -> dict:
        return self._call("DELETE", f"/teams/{_seg(team)}/members/{_seg(user)}")

    def api_keys(self) -> list[dict]:
        return self._call("GET", "/keys")["items"]

    def create_api_key(self, name: str, scopes: list[str], user: str | None = None, expires_in: str | None = None) -> dict:
        """A new key; its ``key`` is shown in this answer only."""
        body = {"name": name, "scopes": list(scopes), "user": user, "expires_in": expires_in}
        return self._call("POST", "/keys", json={k: v for k, v in body.items() if v is not None})

    def revoke_api_key(self, key_id: str) -> dict:
        return self._call("POST", f"/keys/{_seg(key_id)}/revoke")

    def registrations(self, token: str | None = None, status: str | None = None, model: str | None = None) -> Iterator[dict]:
        return self._pages("/registrations", {"token": token, "status": status, "model": model})

    def events(self, status: str | None = None, type: str | None = None, token: str | None = None) -> Iterator[dict]:
        return self._pages("/events", {"status": status, "type": type, "token": token})

    def event(self, event_id: str) -> dict:
        return self._call("GET", f"/events/{event_id}", not_found=EventNotFound)

    def redeliver(self, event_id: str) -> dict:
        return self._call("POST", f"/events/{event_id}/redeliver", not_found=EventNotFound)

    def redeliver_all(self, status: str = "dead", since: str | None = None) -> int:
        params = {"status": status, **({"since": since} if since else {})}
        return self._call("POST", "/events/redeliver", params=params)["redelivered"]

    def reconcile(self) -> list[dict]:
        return self._call("POST", "/reconcile")["decided"]

    # -- HTTP --------------------------------------------------------------------------------------

    def _pages(self, path: str, params: dict, limit: int = 100) -> Iterator[dict]:
        """Every item of a list, following its ``next`` links page by page."""
        page = self._call("GET", path, params={"limit": limit, **{k: v for k, v in params.items() if v is not None}})
        while True:
            yield from page["items"]
            if not page.get("next"):
                return
            page = self._call("GET", page["next"], absolute=True)

    def _call(self, method: str, path: str, *, absolute: bool = False, not_found: type[NotFound] = NotFound,
              conflict: type[TokenConflict] = TokenNotDraft, **kwargs):
        url = urljoin(self.url + "/", path.lstrip("/")) if absolute else f"{self.url}/api/v1{path}"
        try:
            response = self._session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as e:
            raise ApiUnavailable(f"The Hokusai API at {self.url} is unreachable ({type(e).__name__}): check HOKUSAI_API_URL.", 0) from None
        if response.ok:
            return response.json()
        try:
            problem = response.json()
        except ValueError:
            problem = {}
        if not isinstance(problem, dict) or "detail" not in problem:
            raise ApiError(f"The Hokusai API at {self.url} answered HTTP {response.status_code}, not the API's JSON: "
                           "check HOKUSAI_API_URL.", response.status_code)
        raise error_for(response.status_code, problem, not_found, conflict)

    def close(self) -> None:
        self._session.close()
