"""The outcome tags in one request (issue 23): the ``hokusai+`` store turns one ``set-tag`` of
``outcome_value(status, reason)`` into ``hokusai_status`` and ``hokusai_reason``, and one of
``outcomes_value`` into those of several versions of a model (a burst's, queued by
``PendingOutcomeTags``); on a server with MLflow's plain store the receiver finds out once and
writes the two tags as before. Counted in the real server's access log."""

from __future__ import annotations

import re
import time
import uuid

import pytest
from mlflow import MlflowClient

from hokusai_mlflow_plugin.mlflow_io import facts
from hokusai_mlflow_plugin.mlflow_io.outcome_tags import PendingOutcomeTags
from hokusai_mlflow_plugin.plugins.stamping_store import TAG_VALUE_LIMIT, outcome_tags, outcome_value, outcome_writes, outcomes_value
from hokusai_mlflow_plugin.stack.mlflow_server import server_command, server_env
from hokusai_mlflow_plugin.stack.process import ManagedProcess, free_port
from tests.harness import TEST_ENCRYPTION_KEY

SET_TAG = re.compile(r'"POST /api/2\.0/mlflow/model-versions/set-tag')
GET_VERSION = re.compile(r'"GET /api/2\.0/mlflow/model-versions/get')


def new_version(client: MlflowClient, name: str) -> str:
    """A version made as ``log_model(registered_model_name=...)`` makes it (no token: nobody decides it)."""
    exp = client.create_experiment(f"outcome-tags-{uuid.uuid4().hex[:8]}")
    run = client.create_run(exp)
    logged = client.create_logged_model(exp, source_run_id=run.info.run_id)
    client.finalize_logged_model(logged.model_id, "READY")
    try:
        client.create_registered_model(name)
    except Exception:
        pass
    return str(client.create_model_version(name, f"models:/{logged.model_id}", model_id=logged.model_id, await_creation_for=0).version)


class AccessLog:
    """The requests a server logged since the last ``since()``."""

    def __init__(self, path):
        self.path, self.mark = path, path.stat().st_size

    def since(self, pattern, expected: int | None = None, timeout: float = 5.0) -> int:
        deadline = time.monotonic() + timeout
        while True:  # the access line is written just after the answer
            with self.path.open(errors="replace") as f:
                f.seek(self.mark)
                count = len(pattern.findall(f.read()))
            if expected is None or count >= expected or time.monotonic() > deadline:
                return count
            time.sleep(0.05)

    def reset(self):
        self.mark = self.path.stat().st_size


@pytest.fixture
def fresh_servers(monkeypatch):
    """Forget which servers were found to take one write (another test may have checked ours)."""
    monkeypatch.setattr(facts, "ONE_WRITE", {})


def test_the_value_round_trips_and_nothing_else_is_taken_for_it():
    assert outcome_tags("hokusai_status", outcome_value("rejected", "auroc 0.7 is below 0.82")) == {
        "hokusai_status": "rejected", "hokusai_reason": "auroc 0.7 is below 0.82"}
    for key, value in [("hokusai_status", "registered"), ("hokusai_reason", outcome_value("registered", "ok")),
                       ("hokusai_status", "{not json"), ("hokusai_status", '{"hokusai_status": "registered"}'),
                       ("hokusai_status", '{"hokusai_status": "x", "hokusai_reason": "y", "extra": "z"}'),
                       ("hokusai_status", '{"hokusai_status": 1, "hokusai_reason": "y"}'), ("note", outcome_value("a", "b"))]:
        assert outcome_tags(key, value) is None, (key, value)
    long = outcome_value("rejected", "é" * 9000 + '"\\')
    assert len(long) <= TAG_VALUE_LIMIT and outcome_tags("hokusai_status", long)["hokusai_status"] == "rejected"


def test_one_request_sets_both_tags_on_the_hokusai_store(mlflow_sqlite, unique_name, fresh_servers):
    client = MlflowClient(tracking_uri=mlflow_sqlite.url, registry_uri=mlflow_sqlite.url)
    first, second = new_version(client, unique_name), new_version(client, unique_name)
    log = AccessLog(mlflow_sqlite.process.log_path)

    assert facts.tag_outcome(client, unique_name, first, "rejected", "auroc 0.70 is below the baseline 0.82") is True
    assert log.since(SET_TAG, 1) == 1 and log.since(GET_VERSION, 1) == 1  # the first write to a server is checked once
    log.reset()
    assert facts.tag_outcome(client, unique_name, second, "registered", "auroc 0.90 meets the baseline 0.82") is True
    assert log.since(SET_TAG, 1) == 1
    time.sleep(0.5)
    assert log.since(SET_TAG) == 1 and log.since(GET_VERSION) == 0  # and then never again

    for version, status, reason in [(first, "rejected", "auroc 0.70 is below the baseline 0.82"),
                                    (second, "registered", "auroc 0.90 meets the baseline 0.82")]:
        tags = client.get_model_version(unique_name, version).tags
        assert (tags["hokusai_status"], tags["hokusai_reason"]) == (status, reason)  # as the MLflow UI shows them


def test_other_tags_are_set_as_mlflow_sets_them(mlflow_sqlite, unique_name):
    client = MlflowClient(tracking_uri=mlflow_sqlite.url, registry_uri=mlflow_sqlite.url)
    version = new_version(client, unique_name)
    client.set_model_version_tag(unique_name, version, "hokusai_status", "{hand-written")
    client.set_model_version_tag(unique_name, version, "note", outcome_value("a", "b"))
    tags = client.get_model_version(unique_name, version).tags
    assert tags["hokusai_status"] == "{hand-written" and tags["note"] == outcome_value("a", "b") and "hokusai_reason" not in tags


@pytest.fixture(scope="module")
def plain_mlflow(tmp_path_factory):
    """MLflow with its own registry store: the receiver pointed at a server without ``hokusai+``."""
    workdir = tmp_path_factory.mktemp("plain-mlflow")
    port = free_port()
    env = server_env(TEST_ENCRYPTION_KEY)
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = server_command(f"sqlite:///{workdir / 'mlflow.db'}", workdir / "artifacts", "127.0.0.1", port, hokusai_store=False)
    process = ManagedProcess("mlflow server (plain store)", cmd, env, workdir / "mlflow.log").start()
    try:
        process.wait_http(f"http://127.0.0.1:{port}/health", timeout=120)
        yield process, f"http://127.0.0.1:{port}"
    finally:
        process.stop()


def test_a_plain_store_gets_two_writes_after_one_check(plain_mlflow, unique_name, fresh_servers):
    process, url = plain_mlflow
    client = MlflowClient(tracking_uri=url, registry_uri=url)
    first, second = new_version(client, unique_name), new_version(client, unique_name)
    log = AccessLog(process.log_path)

    assert facts.tag_outcome(client, unique_name, first, "registered", "auroc 0.90 meets the baseline 0.82") is True
    assert log.since(SET_TAG, 3) == 3  # the one write, found kept as it is, then the two tags over it
    log.reset()
    assert facts.tag_outcome(client, unique_name, second, "rejected", "auroc 0.70 is below the baseline 0.82") is True
    assert log.since(SET_TAG, 2) == 2 and log.since(GET_VERSION) == 0
    assert facts.ONE_WRITE[url] is False
    for version, status in [(first, "registered"), (second, "rejected")]:
        tags = client.get_model_version(unique_name, version).tags
        assert tags["hokusai_status"] == status and tags["hokusai_reason"].startswith("auroc")


def test_a_batch_value_names_versions_of_one_model_and_the_one_it_is_written_on():
    value = outcomes_value({"3": ("registered", "ok"), "4": ("rejected", "auroc 0.7 is below 0.82")})
    assert outcome_writes("hokusai_status", value, "4") == {
        "3": {"hokusai_status": "registered", "hokusai_reason": "ok"},
        "4": {"hokusai_status": "rejected", "hokusai_reason": "auroc 0.7 is below 0.82"}}
    assert outcome_writes("hokusai_status", outcome_value("registered", "ok"), 7) == {"7": {"hokusai_status": "registered", "hokusai_reason": "ok"}}
    for key, value, version in [("hokusai_status", value, "5"),  # not written on one of its versions
                                ("note", value, "3"), ("hokusai_status", '{"hokusai_outcomes": []}', "3"),
                                ("hokusai_status", '{"hokusai_outcomes": {"3": {"hokusai_status": "x"}}}', "3"),
                                ("hokusai_status", '{"hokusai_outcomes": {"3": "registered"}}', "3"),
                                ("hokusai_status", '{"hokusai_outcomes": {}, "x": 1}', "3")]:
        assert outcome_writes(key, value, version) is None, (key, value, version)


def test_a_burst_s_outcomes_in_one_request(mlflow_sqlite, unique_name, fresh_servers):
    client = MlflowClient(tracking_uri=mlflow_sqlite.url, registry_uri=mlflow_sqlite.url)
    versions = [new_version(client, unique_name) for _ in range(6)]
    client.delete_model_version(unique_name, versions[4])  # deleted after its decision: nothing to show it on
    log = AccessLog(mlflow_sqlite.process.log_path)
    outcomes = {v: ("registered" if i % 2 else "rejected", f"reason {i}") for i, v in enumerate(versions)}

    first = dict(list(outcomes.items())[:3])
    assert facts.tag_outcomes(client, unique_name, first) is True
    assert log.since(SET_TAG, 2) == 2 and log.since(GET_VERSION) == 1  # the check on one version, then the other two together
    log.reset()
    assert facts.tag_outcomes(client, unique_name, dict(list(outcomes.items())[3:])) is True
    assert log.since(SET_TAG, 1) == 1 and log.since(GET_VERSION) == 0
    for i, v in enumerate(versions):
        if i != 4:
            tags = client.get_model_version(unique_name, v).tags
            assert (tags["hokusai_status"], tags["hokusai_reason"]) == outcomes[v], v

    # Decided again (a token id set by hand): the outcomes already shown are replaced, together.
    again = {versions[0]: ("registered", "re-decided 0"), versions[1]: ("rejected", "re-decided 1")}
    log.reset()
    assert facts.tag_outcomes(client, unique_name, again) is True
    assert log.since(SET_TAG, 1) == 1
    for v, outcome in again.items():
        tags = client.get_model_version(unique_name, v).tags
        assert (tags["hokusai_status"], tags["hokusai_reason"]) == outcome, v


def test_queued_outcomes_are_written_together_per_model(mlflow_sqlite, unique_name, fresh_servers):
    client = MlflowClient(tracking_uri=mlflow_sqlite.url, registry_uri=mlflow_sqlite.url)
    other = unique_name + "-other"
    mine = [new_version(client, unique_name) for _ in range(4)]
    theirs = new_version(client, other)
    assert facts.tag_outcome(client, unique_name, mine[0], "rejected", "first") is True  # the server is known
    log = AccessLog(mlflow_sqlite.process.log_path)
    pending = PendingOutcomeTags(client, linger=0)
    for v in mine[1:]:
        pending.put(unique_name, v, "registered", f"auroc meets ({v})")
    pending.put(other, theirs, "rejected", "below")
    pending.put(unique_name, mine[1], "rejected", "decided again")  # a later decision of a version wins
    assert pending.flush() is True and pending.flush() is True  # the second has nothing left
    assert log.since(SET_TAG, 2) == 2
    assert client.get_model_version(unique_name, mine[1]).tags["hokusai_status"] == "rejected"
    assert client.get_model_version(unique_name, mine[3]).tags["hokusai_reason"] == f"auroc meets ({mine[3]})"
    assert client.get_model_version(other, theirs).tags["hokusai_status"] == "rejected"


class Clock:
    """A clock that a flush's sleep moves on; ``during_sleep`` runs at each sleep (outcomes queued
    meanwhile)."""

    def __init__(self, during_sleep=lambda: None):
        self.now, self.slept, self.during_sleep = 100.0, [], during_sleep

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds
        self.during_sleep()


@pytest.fixture
def written(monkeypatch):
    """What the flushes wrote, per call: (model, {version: outcome})."""
    calls = []
    monkeypatch.setattr(facts, "tag_outcomes", lambda client, name, outcomes: calls.append((name, dict(outcomes))) or True)
    return calls


class NoServer:
    tracking_uri = "file:///nowhere"


def test_a_flush_waits_for_a_pause_after_the_newest_outcome(written):
    clock = Clock()
    pending = PendingOutcomeTags(NoServer(), linger=0.25, most=10, clock=clock, sleep=clock.sleep)
    pending.put("m", "1", "registered", "ok")
    clock.now += 0.1
    pending.put("m", "2", "registered", "ok")
    assert pending.flush() is True
    assert clock.slept == [0.25] and clock.now == pytest.approx(100.35)  # 0.25 s after the newest, not the oldest
    assert written == [("m", {"1": ("registered", "ok"), "2": ("registered", "ok")})]
    assert pending.flush() is True and len(written) == 1  # nothing left for the next


def test_outcomes_queued_while_a_flush_waits_put_it_off_and_go_with_it(written):
    queued = iter(["3", "4"])
    clock = Clock()
    pending = PendingOutcomeTags(NoServer(), linger=0.25, most=10, clock=clock, sleep=clock.sleep)
    clock.during_sleep = lambda: [pending.put("m", v, "rejected", "below") for v in [next(queued, None)] if v]
    pending.put("m", "1", "registered", "ok")
    assert pending.flush() is True
    assert clock.slept == [0.25, 0.25, 0.25]  # each outcome queued during a wait starts the pause again
    assert len(written) == 1 and sorted(written[0][1]) == ["1", "3", "4"]


def test_a_burst_that_never_pauses_is_written_most_seconds_after_its_oldest(written):
    versions = iter(range(2, 1000))
    clock = Clock()
    pending = PendingOutcomeTags(NoServer(), linger=0.25, most=1.0, clock=clock, sleep=clock.sleep)
    clock.during_sleep = lambda: pending.put("m", str(next(versions)), "registered", "ok")  # one every wait
    pending.put("m", "1", "registered", "ok")
    assert pending.flush() is True
    assert clock.now == pytest.approx(101.0)  # not later than `most` after the first
    assert len(written) == 1 and len(written[0][1]) == len(clock.slept) + 1  # all queued by then, in one write


def test_a_linger_longer_than_most_is_waited_whole(written):
    clock = Clock()
    pending = PendingOutcomeTags(NoServer(), linger=30, most=10, clock=clock, sleep=clock.sleep)
    pending.put("m", "1", "registered", "ok")
    assert pending.flush() is True
    assert clock.slept == [30] and len(written) == 1  # the operator's linger, not cut to `most`


def test_by_default_a_bursts_tags_wait_at_most_most():
    """A burst's tags wait at most ``MOST`` after its oldest decision (the default linger is
    shorter). The reconcile sweep waits ``most`` plus a margin before it writes them itself:
    ``tests/registration/test_reconcile.py`` checks that on a real sweep, at the default and at a
    longer linger."""
    from hokusai_mlflow_plugin.mlflow_io import outcome_tags

    pending = PendingOutcomeTags(NoServer())
    assert pending.linger <= pending.most == outcome_tags.MOST
