"""The domain's errors: their kinds, and ``first_line``, what the one-sentence messages quote of
an underlying error."""

import pytest

from hokusai_mlflow_plugin.core.errors import (
    CONFIG,
    CONFLICT,
    INVALID,
    KINDS,
    NOT_FOUND,
    UNAVAILABLE,
    BadOption,
    ConfigError,
    DatabaseUnavailable,
    HokusaiError,
    MlflowUnavailable,
    Unavailable,
    first_line,
)


def test_first_line_of_an_exception_or_its_text():
    assert first_line(ValueError("\n  bad value\nsecond line")) == "bad value"
    assert first_line("x" * 500, limit=200) == "x" * 200
    assert first_line(ValueError("")) == "ValueError"  # nothing said: its type
    assert first_line(ValueError(""), default="") == ""
    assert first_line("", "no reason given") == "no reason given"
    assert first_line(None) == ""


# -- kinds: what adapters map, instead of reading messages -------------------------------------------


def test_an_error_carries_its_kind():
    assert HokusaiError("bad").kind == INVALID
    assert HokusaiError("gone", NOT_FOUND).kind == NOT_FOUND
    assert ConfigError("set X").kind == CONFIG
    assert BadOption("--baseline", "give a number").option == "--baseline"


def test_unavailable_names_what_is_down():
    assert DatabaseUnavailable("x").kind == MlflowUnavailable("x").kind == UNAVAILABLE
    assert (DatabaseUnavailable.service, MlflowUnavailable.service) == ("database", "mlflow")
    assert isinstance(MlflowUnavailable("x"), Unavailable)


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown error kind"):
        HokusaiError("x", "teapot")
    assert set(KINDS) == {INVALID, NOT_FOUND, CONFLICT, UNAVAILABLE, CONFIG, "unauthorized", "forbidden"}
