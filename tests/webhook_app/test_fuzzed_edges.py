"""Fuzzed edges beyond the API, with hypothesis.

**The gateway's scope classifier.** For generated paths to MLflow's own routes, mangled as an
attacker would (percent-encoding once and twice, dot segments, doubled slashes, case, trailing
slashes, ``;`` parameters), the scope the gateway demands (``scopes.scope_of`` on the path as
``proxy.forward`` reads it: the raw path decoded once; dot segments refused) is never lower than
the scope of the route MLflow itself would execute for the same raw path. Ground truth is
MLflow's own route matching: its Flask ``url_map`` (``mlflow.server.app``) matches the path as
werkzeug decodes it, and the route it finds, built back into its canonical path, is what MLflow
runs. (MLflow's FastAPI routes are not matched here: the gateway's route table test covers them.)

**The webhook receiver.** For generated bodies and headers, ``POST /webhooks/mlflow`` answers
exactly what it owes them (401 unsigned; 400, 200 or, for a version that needs the unreachable
MLflow, 503 signed), never 500, and writes nothing unless the signature was valid.

Bounded in the suite; by hand, ``HOKUSAI_FUZZ_EXAMPLES=100000``, or ``bench/fuzz_classifier.py``
(which counts the examples as they run; RELIABILITY.md has the command and the result).
"""

from __future__ import annotations

import json
import os
import time
from urllib.parse import quote, unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from webhook_app.gateway.scopes import scope_of

EXAMPLES = int(os.environ.get("HOKUSAI_FUZZ_EXAMPLES", "300"))
RANK = {None: 0, "read": 1, "register": 2, "deploy": 3, "admin": 4}


@pytest.fixture(scope="module")
def mlflow_routes():
    from mlflow.server import app

    rules = [(r, m) for r in app.url_map.iter_rules() for m in sorted(r.methods - {"HEAD", "OPTIONS"})
             if not r.rule.startswith("/static")]
    return app.url_map.bind("mlflow.internal"), rules


def _filled(rule) -> str:
    path = rule.rule
    for name in rule.arguments:
        path = path.replace(f"<path:{name}>", "1/a").replace(f"<{name}>", "1")
        for kind in ("int", "string", "uuid"):
            path = path.replace(f"<{kind}:{name}>", "1")
    return path


@st.composite
def mangled(draw, rules):
    rule, method = draw(st.sampled_from(rules))
    segments = _filled(rule).strip("/").split("/")
    out = []
    for segment in segments:
        how = draw(st.sampled_from(["plain"] * 14 + ["once", "twice", "upper", "semicolon", "dot", "dotdot"]))
        if how == "once":
            segment = "".join(quote(c, safe="") if draw(st.booleans()) else c for c in segment) or segment
            segment = segment.replace("-", "%2D") if draw(st.booleans()) else segment
        elif how == "twice":
            segment = quote(quote(segment, safe=""), safe="").replace("-", "%252D")
        elif how == "upper":
            segment = segment.upper()
        elif how == "semicolon":
            segment += ";x=1"
        elif how == "dot":
            out.append(".")
        elif how == "dotdot":
            out += ["x", ".."]
        out.append(segment)
        if draw(st.integers(0, 12)) == 0:
            out.append("")  # a doubled slash
    if draw(st.booleans()):
        out[0:0] = [""] * draw(st.integers(0, 2))
    raw = "/" + "/".join(out) + ("/" if draw(st.booleans()) else "")
    if draw(st.integers(0, 8)) == 0:  # slashes themselves escaped
        raw = "/" + raw[1:].replace("/", draw(st.sampled_from(["%2F", "%2f", "%252F"])), 1)
    return method, raw


def classify(adapter, case: tuple[str, str]) -> bool:
    """One generated (method, raw path): the gateway's scope is never lower than that of the route
    MLflow runs for it (an ``AssertionError`` otherwise). True when MLflow would run a route."""
    method, raw = case
    path = unquote(raw)[1:]  # proxy.forward: the tail after /mlflow, decoded once
    if any(segment in (".", "..") for segment in path.split("/")):
        return False  # refused with a 400 before anything is forwarded
    demanded = scope_of(method, path)
    try:  # MLflow: werkzeug decodes the raw path once and matches it
        endpoint, args = adapter.match(unquote(raw), method)
    except RequestRedirect:
        return False  # MLflow answers a redirect and runs nothing
    except HTTPException:
        return False  # 404 or 405: MLflow runs nothing
    canonical = adapter.build(endpoint, args, method=method, force_external=False)
    executed = scope_of(method, canonical.split("?")[0].lstrip("/"))
    assert RANK[demanded] >= RANK[executed], (method, raw, path, canonical, demanded, executed)
    return True


def test_scope_is_never_lower_than_what_mlflow_runs(mlflow_routes):
    adapter, rules = mlflow_routes

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(mangled(rules))
    def check(case):
        classify(adapter, case)

    check()


# -- the webhook receiver ------------------------------------------------------------------------------

SECRET = "fuzz-secret"


@pytest.fixture(scope="module")
def receiver(tmp_path_factory):
    from hokusai_mlflow_plugin.db.migrate import upgrade
    from webhook_app import create_app

    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'tokens.db'}"
    upgrade(url)
    app = create_app({"HOKUSAI_DATABASE_URL": url, "HOKUSAI_WEBHOOK_SECRETS": (SECRET,),
                      "MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "HOKUSAI_RELAY": False, "TESTING": True})
    return app, url


def _rows(url: str) -> dict:
    import sqlalchemy as sa

    from hokusai_mlflow_plugin.db.models import Base

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar()
                    for t in Base.metadata.sorted_tables if t.name != "api_keys"}
    finally:
        engine.dispose()


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"entity": st.sampled_from(["model_version", "model_version_tag", "x"]),
                           "action": st.sampled_from(["created", "set", "deleted"]),
                           "data": st.dictionaries(st.sampled_from(["name", "version", "source", "run_id", "tags", "key", "value"]),
                                                   json_values, max_size=6)}).map(lambda v: json.dumps(v).encode()),
)
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)


def test_the_receiver_never_answers_500_and_writes_nothing_unsigned(receiver):
    from webhook_app.signature import sign

    app, url = receiver
    client = app.test_client()
    before = _rows(url)

    @settings(max_examples=min(EXAMPLES, 200), deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(body=bodies, delivery=header_text, stamp=st.one_of(header_text, st.just("now")),
           signature=st.one_of(header_text, st.just("v1,"), st.just("forged")),
           content_type=st.sampled_from(["application/json", "text/plain", "", "application/json; charset=latin-1"]))
    def check(body, delivery, stamp, signature, content_type):
        ts = str(int(time.time())) if stamp == "now" else stamp
        if signature == "forged":  # signed with another secret
            signature = sign("not-the-secret", delivery, int(time.time()), body)
        headers = {"X-MLflow-Delivery-Id": delivery, "X-MLflow-Timestamp": ts, "X-MLflow-Signature": signature}
        if content_type:
            headers["Content-Type"] = content_type
        answer = client.post("/webhooks/mlflow", data=body, headers=headers)
        assert answer.status_code == 401, (answer.status_code, answer.get_data()[:300])  # before the body is read
        assert _rows(url) == before, "an unsigned delivery wrote to the database"

    check()


def _answer_to(body: bytes) -> int:
    """What the receiver owes a signed ``body`` when MLflow is unreachable: 400 for a body that is
    no event, or an event to decide that names no version; 200 for an event it ignores; 503 (MLflow
    will retry) for a version to decide, which needs MLflow."""
    try:
        event = json.loads(body)
    except (ValueError, RecursionError):
        return 400
    if not (isinstance(event, dict) and isinstance(event.get("entity"), str) and isinstance(event.get("action"), str)
            and isinstance(event.get("data"), dict)):
        return 400
    data, kind = event["data"], (event["entity"], event["action"])
    if kind != ("model_version", "created") and not (kind == ("model_version_tag", "set") and data.get("key") == "hokusai_token_id"):
        return 200
    name, version = data.get("name"), data.get("version")
    if not isinstance(name, str) or not name.strip():
        return 400
    if isinstance(version, bool) or not isinstance(version, (str, int)) or not str(version).strip():
        return 400
    return 503


def test_a_signed_body_of_any_shape_is_never_a_500(receiver):
    """Signed (valid signature), the body may be anything: each gets the one answer it is owed
    (``_answer_to``), 503 only for a version that needs the unreachable MLflow."""
    from webhook_app.signature import sign

    app, _ = receiver
    client = app.test_client()

    @settings(max_examples=min(EXAMPLES, 100), deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(body=bodies, delivery=st.uuids().map(str))
    def check(body, delivery):
        ts = int(time.time())
        headers = {"X-MLflow-Delivery-Id": delivery, "X-MLflow-Timestamp": str(ts),
                   "X-MLflow-Signature": sign(SECRET, delivery, ts, body), "Content-Type": "application/json"}
        answer = client.post("/webhooks/mlflow", data=body, headers=headers)
        assert answer.status_code == _answer_to(body), (answer.status_code, body[:300], answer.get_data()[:300])
        if answer.status_code == 503:
            assert answer.json["error"] == "temporarily unavailable" and answer.headers["Retry-After"]

    check()
