"""The views of registrations the CLI and the API show, on SQLite and PostgreSQL: by token, outcome
and model, the newest version of each model, best first."""

from __future__ import annotations

from datetime import timedelta

from hokusai_mlflow_plugin.db.models import Registration, utcnow
from hokusai_mlflow_plugin.db.session import session_factory
from hokusai_mlflow_plugin.registration import tokens


def add(url, rows):
    start = utcnow()
    with session_factory(url).begin() as session:
        for i, (model, version, outcome, value) in enumerate(rows):
            session.add(Registration(
                model_name=model, model_version=version, token_id="TK", outcome=outcome, reason="r",
                metric_name="auroc", metric_value=value, baseline_value=0.8, created_at=start + timedelta(seconds=i),
            ))


def keys(found):
    return [(r.model_name, r.model_version) for r in found]


def test_filters_and_the_latest_version_of_each_model(db_url):
    # version 10 of "a" was decided before version 9: the latest is 10 all the same
    add(db_url, [("a", "10", "rejected", 0.7), ("a", "9", "registered", 0.9), ("b", "1", "registered", 0.85),
                 ("a", "2", "rejected", 0.6)])
    with session_factory(db_url)() as session:
        assert keys(tokens.registrations(session)) == [("a", "2"), ("b", "1"), ("a", "9"), ("a", "10")]
        assert keys(tokens.registrations(session, model_name="b")) == [("b", "1")]
        assert keys(tokens.registrations(session, outcome="rejected")) == [("a", "2"), ("a", "10")]
        assert sorted(keys(tokens.registrations(session, latest=True))) == [("a", "10"), ("b", "1")]
        # the newest of those the other filters select, as MLflow's latest version per stage
        assert keys(tokens.registrations(session, outcome="registered", latest=True, model_name="a")) == [("a", "9")]
        best = tokens.sort_best_first(tokens.registrations(session, "tk"))
    assert keys(best) == [("a", "9"), ("b", "1"), ("a", "10"), ("a", "2")]


def test_sort_puts_the_best_first_by_direction_and_missing_values_last():
    def reg(name, metric, value):
        return Registration(model_name=name, model_version="1", metric_name=metric, metric_value=value, outcome="x", reason="")

    rows = [reg("a", "auroc", 0.8), reg("b", "auroc", None), reg("c", "rmse", 0.3), reg("d", "auroc", 0.9),
            reg("e", "rmse", 0.1), reg("f", None, None)]
    assert [r.model_name for r in tokens.sort_best_first(rows)] == ["d", "a", "e", "c", "b", "f"]




def test_a_token_search_matches_a_part_of_the_id_whatever_its_case_and_takes_wildcards_literally(db_url):
    for token_id in ("XRAY-1", "XRAY-12", "XRAY_2", "XRAYA2", "OTHER"):
        with session_factory(db_url).begin() as session:
            tokens.create(session, token_id)
    with session_factory(db_url)() as session:
        assert [t.token_id for t in tokens.page_tokens(session, q="ray-1")[0]] == ["XRAY-1", "XRAY-12"]
        assert [t.token_id for t in tokens.page_tokens(session, q="y_2")[0]] == ["XRAY_2"]  # '_' is no wildcard
        assert tokens.page_tokens(session, q="%")[0] == []
