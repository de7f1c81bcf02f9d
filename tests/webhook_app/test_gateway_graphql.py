"""The gateway's reading of MLflow's GraphQL (webhook_app.gateway.graphql), against the installed
MLflow: its schema is the one the gateway validates with, every root field is judged by a REST
route's rule, and the MLflow UI's own queries are ones the gateway serves. What a key gets through
it, against a real MLflow with two teams, is in test_gateway_teams.py."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from graphql import parse, print_schema
from hypothesis import given, settings
from hypothesis import strategies as st

from webhook_app.gateway import graphql as gql
from webhook_app.gateway.scopes import READS, access_of


def _installed_schema():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlflow.server.graphql.graphql_schema_extensions import schema
    return schema.graphql_schema


def test_the_gateway_validates_with_the_installed_mlflow_s_schema():
    """An MLflow upgrade that changes its schema (a field, an argument, a nested object) fails here
    until the gateway's copy, FIELDS and NESTED are looked at again."""
    assert print_schema(gql.SCHEMA) == print_schema(_installed_schema())


def test_every_root_field_is_judged_by_a_rest_route_s_rule():
    schema = _installed_schema()
    served = {(root.name, name) for root in (schema.query_type, schema.mutation_type) for name in root.fields}
    assert served == set(gql.FIELDS), "a root field of MLflow's GraphQL is not classified in webhook_app/gateway/graphql.py"
    for (root, name), route in gql.FIELDS.items():
        if route is None:
            assert name in ("test", "testMutation")  # echoes: they name no object
            continue
        access, _ = access_of(*route)
        assert access.need == READS and (access.subjects or access.search), (root, name)
        # the field's input holds the REST route's fields, in camelCase
        given = {f for f in schema.get_type(f"{route_input(schema, root, name)}").fields}
        named = {field for _, fields in access.subjects for field in fields}
        assert {gql.camel_to_snake(f) for f in given} >= named, (root, name)


def route_input(schema, root: str, name: str) -> str:
    return schema.get_type(root).fields[name].args["input"].type.name


def test_only_root_fields_take_arguments():
    """What a query names sits in its root fields' input: no field below the root takes arguments."""
    for type_ in _installed_schema().type_map.values():
        if type_.name in ("Query", "Mutation") or type_.name.startswith("__") or not hasattr(type_, "fields"):
            continue
        for name, field in type_.fields.items():
            assert not getattr(field, "args", None), f"{type_.name}.{name} takes arguments"


def _ui_bundle() -> str:
    import mlflow

    found = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in sorted(found.glob("*.js")))


def ui_queries() -> dict[str, str]:
    """The GraphQL documents the installed MLflow UI sends, as written in its bundle."""
    bundle, found = _ui_bundle(), {}
    for field in ("mlflowGetRun", "mlflowSearchRuns", "mlflowGetExperiment", "mlflowGetMetricHistoryBulkInterval"):
        at = bundle.find(f"{field}(input:")
        assert at > 0, f"the MLflow UI no longer asks {field}"
        start = bundle.rfind("`", 0, at) + 1
        found[field] = bundle[start:bundle.find("`", at)]
    return found


def test_the_ui_s_queries_are_ones_the_gateway_serves():
    """What the MLflow UI sends validates against the gateway's schema, asks no introspection and
    only root fields that are judged; a run's modelVersions is one of them, and it asks their name."""
    for field, query in ui_queries().items():
        assert "__schema" not in query and "__type(" not in query
        variables = {d.variable.name.value: {} for d in parse(query).definitions[0].variable_definitions}  # its input
        plan = gql.planned(json.dumps({"query": query, "variables": variables}).encode())
        assert isinstance(plan, gql.Plan), (field, getattr(plan, "text", plan))
        names = {nodes[0].name.value for nodes in plan.fields.values()}
        assert names == {field}
        assert (plan.root.name, field) in gql.FIELDS
    assert "modelVersions {" in ui_queries()["mlflowGetRun"]


@pytest.mark.parametrize("raw, status", [
    (b"[]", 400),  # a batch: MLflow answers one request per call
    (b'{"query": 1}', 400),
    (b"not json", 400),
    (b'{"query": "query {"}', 400),  # does not parse
    (b'{"query": "{ test(inputString: \\"x\\") { output } }", "variables": []}', 400),
    (b'{"query": "query A { test { output } } query B { test { output } }"}', 400),  # which one?
    (b'{"query": "subscription { test { output } }"}', 400),  # MLflow's schema has none
])
def test_a_request_mlflow_could_not_read_is_a_400_saying_why(raw, status):
    answer = gql.planned(raw)
    assert answer.status == status and answer.content_type == "application/problem+json"


def test_a_query_that_does_not_validate_gets_mlflow_s_own_answer():
    answer = gql.planned(b'{"query": "{ mlflowGetRun(input: {runId: \\"x\\"}) { nothing } }"}')
    assert answer.status == 200
    assert answer.text == '{"data": null, "errors": ["Cannot query field \'nothing\' on type \'MlflowGetRunResponse\'."]}'


def test_root_fields_are_collected_as_mlflow_s_executor_collects_them():
    query = """query Q($id: String, $skip: Boolean!) {
      a: mlflowGetRun(input: {runId: $id}) { run { info { runId } } }
      ...Both
      b: mlflowGetExperiment(input: {experimentId: "1"}) @skip(if: $skip) { experiment { name } }
    }
    fragment Both on Query { ... on Query { c: mlflowGetRun(input: {runUuid: "r"}) { run { info { runId } } } } }"""
    plan = gql.planned(json.dumps({"query": query, "variables": {"id": "x", "skip": True}, "operationName": "Q"}).encode())
    assert list(plan.fields) == ["a", "c"]
    assert len(parse(query).definitions) == 2


def test_limits_bound_what_is_judged():
    many = "{ " + " ".join(f"a{i}: test(inputString: \"x\") {{ output }}" for i in range(gql.MAX_ROOT_FIELDS + 1)) + " }"
    assert gql.planned(json.dumps({"query": many}).encode()).status == 400
    huge = "{ " + "test { output } " * gql.MAX_TOKENS + "}"
    assert gql.planned(json.dumps({"query": huge}).encode()).status == 400


@settings(max_examples=300, deadline=None)
@given(query=st.one_of(st.text(max_size=200), st.sampled_from(["{", "{ test", "query($a: [[String]]) { test }", "{ ...F }",
                                                                "{ __typename }", "{ mlflowGetRun(input: 1) { run { info { runId } } } }"])),
       variables=st.one_of(st.none(), st.dictionaries(st.text(max_size=5), st.recursive(
           st.none() | st.booleans() | st.integers() | st.text(max_size=5), lambda kids: st.lists(kids, max_size=3), max_leaves=5),
           max_size=3)),
       operation=st.one_of(st.none(), st.text(max_size=5)))
def test_whatever_a_client_sends_is_read_or_refused_never_a_crash(query, variables, operation):
    answer = gql.planned(json.dumps({"query": query, "variables": variables, "operationName": operation}).encode())
    assert isinstance(answer, gql.Plan) or answer.status in (200, 400)
