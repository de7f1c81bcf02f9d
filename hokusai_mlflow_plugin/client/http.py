"""``HokusaiClient``: one ``requests`` session with the key and urllib3's retries of ``503``."""

from __future__ import annotations

from typing import Iterator
from urllib.parse import urljoin

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from hokusai_mlflow_plugin.client.errors import ApiError, ApiUnavailable, EventNotFound, NotFound, TokenNotFound, error_for


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
        """The decision on a new version of a logged model (``runs:/...`` or ``models:/m-...``)."""
        body = {"token_id": token_id, "model_uri": model_uri, "model_name": model_name, "metric": metric, "baseline": baseline}
        return self._call("POST", "/models/register", json={k: v for k, v in body.items() if v is not None},
                          not_found=TokenNotFound)

    def token(self, token_id: str) -> dict:
        """A token, with ``registrations``: every model version seen for it, newest first."""
        return self._call("GET", f"/tokens/{token_id}", not_found=TokenNotFound)

    def tokens(self, status: str | None = None, q: str | None = None) -> Iterator[dict]:
        return self._pages("/tokens", {"status": status, "q": q})

    def create_token(self, token_id: str, metric: str | None = None, baseline: float | None = None) -> dict:
        body = {"token_id": token_id, "metric": metric, "baseline": baseline}
        return self._call("POST", "/tokens", json={k: v for k, v in body.items() if v is not None})

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

    def _call(self, method: str, path: str, *, absolute: bool = False, not_found: type[NotFound] = NotFound, **kwargs):
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
        raise error_for(response.status_code, problem, not_found)

    def close(self) -> None:
        self._session.close()
