"""What the API tests share: a client of ``/api/v1`` with a key, and problem-details checks."""

from __future__ import annotations

import requests


class Api:
    def __init__(self, base_url: str, key: str | None = None):
        self.base = base_url.rstrip("/") + "/api/v1"
        self.session = requests.Session()
        if key:
            self.session.headers["Authorization"] = f"Bearer {key}"

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.session.get(self.base + path, timeout=60, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.session.post(self.base + path, timeout=120, **kwargs)

    def with_key(self, key: str | None) -> "Api":
        return Api(self.base[: -len("/api/v1")], key)


def assert_problem(response: requests.Response, status: int, *words: str) -> dict:
    """A problem-details answer with ``status`` whose detail holds ``words``."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["status"] == status and body["title"] and body["type"]
    for word in words:
        assert word in body["detail"], body
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    if status == 503:
        assert response.headers["Retry-After"]
    return body
