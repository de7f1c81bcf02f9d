"""``decide()``: one model version against its token, from real VersionFacts and transient Tokens."""

from __future__ import annotations

import math

import pytest

from hokusai_mlflow_plugin.db.models import DEPLOYED, DRAFT, REGISTERED, Token
from hokusai_mlflow_plugin.registration.decision import decide
from hokusai_mlflow_plugin.mlflow_io.facts import VersionFacts

RUN_ID = "06dcb80c2b134b28a09e522e191b8f1c"


def facts(
    version_tags=None, model_tags=None, run_tags=None, run_metrics=None, model_metrics=None, run_id=RUN_ID
) -> VersionFacts:
    return VersionFacts(
        model_name="xray-model",
        version="3",
        source="models:/m-f438be436143448ba93fc9fce2e781f5",
        run_id=run_id,
        model_id="m-f438be436143448ba93fc9fce2e781f5",
        version_tags=version_tags or {},
        model_tags=model_tags or {},
        run_tags=run_tags or {},
        run_metrics=run_metrics or {},
        model_metrics=model_metrics or {},
    )


def token(token_id="XRAY", status=DRAFT, metric_name="auroc", baseline_value=0.82, **kwargs) -> Token:
    return Token(token_id=token_id, status=status, metric_name=metric_name, baseline_value=baseline_value, **kwargs)


def test_a_model_that_beats_the_baseline_is_registered():
    d = decide(facts(version_tags={"hokusai_token_id": "XRAY"}, run_metrics={"auroc": 0.85}), token())
    assert d.outcome == "registered"
    assert d.reason == "auroc 0.85 >= baseline 0.82."
    assert (d.token_id, d.metric_name, d.metric_value, d.baseline_value, d.run_id) == (
        "XRAY", "auroc", 0.85, 0.82, RUN_ID,
    )


@pytest.mark.parametrize(
    "where",
    [
        {"version_tags": {"hokusai_token_id": "XRAY"}},
        {"model_tags": {"hokusai_token_id": "XRAY"}},
        {"run_tags": {"hokusai_token_id": "XRAY"}},
    ],
    ids=["version", "logged-model", "run"],
)
def test_the_token_id_is_found_on_the_version_logged_model_or_run(where):
    d = decide(facts(run_metrics={"auroc": 0.9}, **where), token())
    assert d.outcome == "registered", d.reason
    assert d.token_id == "XRAY"


def test_version_tags_win_over_logged_model_tags_which_win_over_run_tags():
    # No token exists: the rejection reports the token id decide() read, so it shows which tag won.
    both = facts(
        version_tags={"hokusai_token_id": "VERSION"},
        model_tags={"hokusai_token_id": "MODEL"},
        run_tags={"hokusai_token_id": "RUN"},
    )
    assert decide(both, None).token_id == "VERSION"
    no_version = facts(model_tags={"hokusai_token_id": "MODEL"}, run_tags={"hokusai_token_id": "RUN"})
    assert decide(no_version, None).token_id == "MODEL"
    # An empty tag does not hide the next source.
    empty = facts(version_tags={"hokusai_token_id": ""}, run_tags={"hokusai_token_id": "RUN"})
    assert decide(empty, None).token_id == "RUN"


def test_the_token_id_is_stripped_and_upper_cased():
    d = decide(facts(run_tags={"hokusai_token_id": "  xray "}, run_metrics={"auroc": 0.9}), token())
    assert d.outcome == "registered", d.reason
    assert d.token_id == "XRAY"


@pytest.mark.parametrize("raw", ["has space", "x" * 65, "bad/slash", "   "])
def test_an_invalid_token_tag_is_rejected_and_quoted(raw):
    d = decide(facts(version_tags={"hokusai_token_id": raw}), token())
    assert d.outcome == "rejected"
    assert f"The hokusai_token_id tag {raw!r} is not a token id" in d.reason
    assert "1 to 64 characters" in d.reason
    assert d.token_id is None
    assert d.run_id == RUN_ID


def test_no_token_id_anywhere_is_rejected_with_how_to_set_one():
    d = decide(facts(run_metrics={"auroc": 0.9}), token())
    assert d.outcome == "rejected"
    assert "Model 'xray-model' version 3 has no hokusai_token_id tag" in d.reason
    assert "HOKUSAI_TOKEN_ID" in d.reason
    assert d.token_id is None
    assert d.run_id == RUN_ID


def test_an_unknown_token_is_rejected_with_how_to_create_it():
    d = decide(facts(version_tags={"hokusai_token_id": "nope"}, run_metrics={"auroc": 0.9}), None)
    assert d.outcome == "rejected"
    assert "Unknown token 'NOPE'" in d.reason
    assert "hokusai token create NOPE" in d.reason
    assert d.token_id == "NOPE"
    assert d.run_id == RUN_ID


def test_a_token_not_in_draft_cannot_take_a_model():
    d = decide(facts(version_tags={"hokusai_token_id": "XRAY"}, run_metrics={"auroc": 0.9}), token(status=DEPLOYED))
    assert d.outcome == "rejected"
    assert "Token 'XRAY' is in status 'deployed', not 'draft'" in d.reason


def test_a_token_registered_to_another_version_names_that_version():
    t = token(status=REGISTERED, model_name="xray-model", model_version="1", metric_value=0.9)
    d = decide(facts(version_tags={"hokusai_token_id": "XRAY"}, run_metrics={"auroc": 0.95}), t)
    assert d.outcome == "rejected"
    assert "Token 'XRAY' is already registered to model 'xray-model' version 1" in d.reason
    assert "a token takes one model" in d.reason


def test_a_metric_tag_other_than_the_tokens_metric_is_rejected():
    f = facts(
        version_tags={"hokusai_token_id": "XRAY", "hokusai_metric": "accuracy"},
        run_metrics={"auroc": 0.9, "accuracy": 0.99},
    )
    d = decide(f, token())
    assert d.outcome == "rejected"
    assert "hokusai_metric tag 'accuracy' differs from token 'XRAY''s metric 'auroc'" in d.reason
    assert "log auroc" in d.reason


def test_a_metric_tag_differing_only_in_case_is_the_same_metric():
    f = facts(version_tags={"hokusai_token_id": "XRAY", "hokusai_metric": "AUROC"}, run_metrics={"auroc": 0.9})
    assert decide(f, token()).outcome == "registered"


def test_a_baseline_tag_may_not_lower_the_tokens_bar():
    f = facts(
        version_tags={"hokusai_token_id": "XRAY", "hokusai_baseline": "0.5"},
        run_metrics={"auroc": 0.7},
    )
    d = decide(f, token(baseline_value=0.82))
    assert d.outcome == "rejected"
    assert "hokusai_baseline tag '0.5' differs from token 'XRAY''s baseline 0.82" in d.reason
    assert "authoritative" in d.reason


@pytest.mark.parametrize("tag", ["0.9", "not-a-number"])
def test_any_other_differing_baseline_tag_is_rejected_too(tag):
    f = facts(version_tags={"hokusai_token_id": "XRAY", "hokusai_baseline": tag}, run_metrics={"auroc": 0.95})
    d = decide(f, token(baseline_value=0.82))
    assert d.outcome == "rejected"
    assert f"hokusai_baseline tag '{tag}' differs" in d.reason


def test_a_baseline_tag_equal_to_the_tokens_is_fine():
    f = facts(
        run_tags={"hokusai_token_id": "XRAY", "hokusai_baseline": "0.820", "hokusai_metric": "auroc"},
        run_metrics={"auroc": 0.83},
    )
    d = decide(f, token(baseline_value=0.82))
    assert d.outcome == "registered", d.reason
    assert d.baseline_value == 0.82


def test_a_token_without_metric_or_baseline_takes_them_from_the_tags():
    f = facts(
        run_tags={"hokusai_token_id": "XRAY", "hokusai_metric": "RMSE", "hokusai_baseline": "2.5"},
        run_metrics={"rmse": 2.0},
    )
    d = decide(f, token(metric_name=None, baseline_value=None))
    assert d.outcome == "registered", d.reason
    assert (d.metric_name, d.metric_value, d.baseline_value) == ("rmse", 2.0, 2.5)
    assert d.reason == "rmse 2 <= baseline 2.5."


def test_a_token_and_tags_without_a_metric_are_rejected():
    d = decide(facts(run_tags={"hokusai_token_id": "XRAY"}), token(metric_name=None, baseline_value=None))
    assert d.outcome == "rejected"
    assert "No metric is named" in d.reason


def test_an_unparseable_baseline_tag_is_rejected_when_the_token_has_none():
    f = facts(run_tags={"hokusai_token_id": "XRAY", "hokusai_baseline": "high"}, run_metrics={"auroc": 0.9})
    d = decide(f, token(baseline_value=None))
    assert d.outcome == "rejected"
    assert "The hokusai_baseline tag 'high' is not a finite number" in d.reason


def test_the_run_metric_wins_over_the_logged_model_metric():
    f = facts(version_tags={"hokusai_token_id": "XRAY"}, run_metrics={"auroc": 0.7}, model_metrics={"auroc": 0.95})
    d = decide(f, token())
    assert d.outcome == "rejected"
    assert d.metric_value == 0.7
    assert "auroc 0.7 is below the baseline 0.82" in d.reason


def test_the_logged_model_metric_is_used_when_the_run_has_none():
    f = facts(version_tags={"hokusai_token_id": "XRAY"}, run_metrics={"loss": 0.1}, model_metrics={"auroc": 0.95}, run_id=None)
    d = decide(f, token())
    assert d.outcome == "registered", d.reason
    assert d.metric_value == 0.95
    assert d.run_id is None


def test_a_metric_never_logged_is_rejected_with_how_to_log_it():
    f = facts(version_tags={"hokusai_token_id": "XRAY"}, run_metrics={"accuracy": 0.99})
    d = decide(f, token())
    assert d.outcome == "rejected"
    assert "The metric 'auroc' was not logged" in d.reason
    assert "mlflow.log_metric('auroc', value)" in d.reason
    assert (d.metric_name, d.metric_value, d.baseline_value, d.run_id) == ("auroc", None, 0.82, RUN_ID)


def test_a_nan_metric_is_rejected_and_not_recorded_as_a_value():
    f = facts(version_tags={"hokusai_token_id": "XRAY"}, run_metrics={"auroc": math.nan})
    d = decide(f, token())
    assert d.outcome == "rejected"
    assert "The logged auroc is nan, not a finite number." == d.reason
    assert d.metric_value is None
    assert d.metric_name == "auroc"


def test_a_model_below_the_baseline_is_rejected_with_both_numbers():
    f = facts(version_tags={"hokusai_token_id": "XRAY"}, run_metrics={"auroc": 0.8})
    d = decide(f, token())
    assert d.outcome == "rejected"
    assert d.reason == "auroc 0.8 is below the baseline 0.82 (auroc must be at least 0.82)."
    assert (d.token_id, d.metric_name, d.metric_value, d.baseline_value, d.run_id) == (
        "XRAY", "auroc", 0.8, 0.82, RUN_ID,
    )


@pytest.mark.parametrize(
    "value, outcome, reason",
    [
        (0.29, "registered", "rmse 0.29 <= baseline 0.3."),
        (0.3, "registered", "rmse 0.3 <= baseline 0.3."),
        (0.31, "rejected", "rmse 0.31 is above the baseline 0.3 (rmse must be at most 0.3)."),
    ],
)
def test_rmse_lower_is_better_on_both_sides_of_its_baseline(value, outcome, reason):
    f = facts(model_tags={"hokusai_token_id": "DEPTH"}, run_metrics={"rmse": value})
    d = decide(f, token("DEPTH", metric_name="rmse", baseline_value=0.3))
    assert (d.outcome, d.reason) == (outcome, reason)
    assert (d.metric_name, d.metric_value, d.baseline_value) == ("rmse", value, 0.3)
