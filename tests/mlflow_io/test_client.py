"""The one way to MLflow's client: the pager, the fail-fast environment and the translation of
MLflow's failures into the domain's errors (units; the integration tests use a real server)."""

from __future__ import annotations

import os

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, RESOURCE_DOES_NOT_EXIST

from hokusai_mlflow_plugin.core.errors import MlflowUnavailable
from hokusai_mlflow_plugin.mlflow_io.client import (
    FAIL_FAST,
    MlflowNotFound,
    call,
    client,
    fail_fast_by_default,
    failing_fast,
    mlflow_env,
    pages,
)


class Page(list):
    def __init__(self, items, token):
        super().__init__(items)
        self.token = token


def test_pages_follows_the_tokens_to_the_end():
    book = {None: Page([1, 2], "p2"), "p2": Page([3], "p3"), "p3": Page([], None)}
    asked = []

    def search(filter_string, max_results, page_token):
        asked.append((filter_string, max_results, page_token))
        return book[page_token]

    assert list(pages(search, "name = 'm'", page_size=2)) == [1, 2, 3]
    assert asked == [("name = 'm'", 2, None), ("name = 'm'", 2, "p2"), ("name = 'm'", 2, "p3")]


def test_pages_asks_for_the_next_page_only_when_it_is_needed():
    asked = []

    def search(max_results, page_token):
        asked.append(page_token)
        return Page(["a"], "more")

    assert next(iter(pages(search))) == "a" and asked == [None]


def test_failing_fast_keeps_what_the_operator_set_and_puts_everything_back(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    with failing_fast():
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == FAIL_FAST["MLFLOW_HTTP_REQUEST_TIMEOUT"]
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ


def test_fail_fast_by_default_sets_only_what_is_unset():
    environ = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
    fail_fast_by_default(environ)
    assert environ == {"MLFLOW_HTTP_REQUEST_TIMEOUT": "30", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}


def test_mlflow_env_restores_the_variables_the_block_set(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with mlflow_env("MLFLOW_TRACKING_URI", HOKUSAI_TOKEN_ID="XRAY"):
        os.environ["MLFLOW_TRACKING_URI"] = "http://elsewhere"
        assert os.environ["HOKUSAI_TOKEN_ID"] == "XRAY"
    assert "MLFLOW_TRACKING_URI" not in os.environ and "HOKUSAI_TOKEN_ID" not in os.environ


def test_call_translates_mlflow_failures_by_their_code():
    def fails(error):
        raise error

    with pytest.raises(MlflowNotFound):
        call(fails, MlflowException("no such version", error_code=RESOURCE_DOES_NOT_EXIST))
    with pytest.raises(MlflowUnavailable, match="MLflow did not answer"):
        call(fails, MlflowException("boom", error_code=INTERNAL_ERROR))
    with pytest.raises(MlflowUnavailable, match="MLflow is unreachable: ConnectionError"):
        call(fails, requests.ConnectionError("refused"))
    assert call(lambda x: x + 1, 1) == 2


def test_client_reads_and_registers_on_one_server(monkeypatch):
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "http://127.0.0.1:8")  # ignored: the client's URI is both
    made = client("http://127.0.0.1:9")
    assert made.tracking_uri == "http://127.0.0.1:9"
    with pytest.raises(MlflowUnavailable, match="unreachable|did not answer"):  # asks port 9, not 8
        with failing_fast():
            call(made.get_registered_model, "m")
