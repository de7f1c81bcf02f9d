"""Shared pieces of the registration and events benchmarks (issues 3 and 4). Not a benchmark.

Run the scripts from the repository root (``.venv/bin/python bench/<script>.py``); importing this
module puts the repository root on ``sys.path`` so that ``tests.harness`` and ``tests.live_stack`` import.

* ``machine_facts()``: nproc, Python, mlflow, UTC date and load average, printed by every script.
* ``pct()`` / ``summary()`` / ``table()``: percentiles (linear interpolation between order statistics,
  as numpy's default) and plain-text tables.
* ``Backend``: a real ``mlflow server`` (harness ``MlflowServer``, ``hokusai+`` registry store,
  webhook cache TTL 1 s) and a migrated token database of one kind, ``sqlite`` or ``postgresql``
  (both MLflow's backend and the token database of that kind, as ``tests.live_stack`` does); cleaned up on
  exit (PostgreSQL databases dropped).
* ``prepare()``: what a training run leaves behind before its model version is created, done the way
  ``log_model(registered_model_name=...)`` does it but without artifacts: a draft token, a run with
  the ``hokusai_*`` tags and its ``auroc`` metric, a finalised LoggedModel with the same tags (the
  run-context plugin's work). ``create_version()`` then makes the version exactly as ``log_model``
  does: ``source="models:/m-..."``, no run id, the model id; the ``hokusai+`` store stamps it.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

METRIC, BASELINE, VALUE = "auroc", 0.82, 0.9


def package_commit() -> str:
    """The commit of the measured package: the git HEAD of the tree it is imported from (a
    ``git archive`` snapshot has no .git: its directory name says which commit it is)."""
    import subprocess

    import hokusai_mlflow_plugin

    root = Path(hokusai_mlflow_plugin.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "hokusai_mlflow_plugin", "webhook_app"],
                               capture_output=True, text=True, timeout=5, check=False).stdout.strip()
        if out.returncode == 0:
            return out.stdout.strip() + (" + uncommitted changes" if dirty else "") + f" ({root})"
    except OSError:
        pass
    return str(root)


def machine_facts() -> str:
    from importlib.metadata import version

    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return (
        f"nproc {os.cpu_count()}  python {platform.python_version()}  mlflow {version('mlflow')}  "
        f"sqlalchemy {version('sqlalchemy')}  psycopg {version('psycopg')}  "
        f"date {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC  load average {load}\n"
        f"package: {package_commit()}"
    )


def finished() -> str:
    return f"finished {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC  load average {loadavg()}"


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_seconds(pids) -> float:
    """User + system CPU seconds of the processes among ``pids`` that are alive (Linux ``/proc``)."""
    ticks = 0
    for pid in pids:
        try:
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")"
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def pct(values, q: float) -> float:
    """The q-th percentile (0..100), linear between order statistics (numpy's default)."""
    data = sorted(values)
    if not data:
        return float("nan")
    k = (len(data) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def summary(values) -> dict:
    values = list(values)
    return {
        "n": len(values),
        "median": statistics.median(values) if values else float("nan"),
        "p90": pct(values, 90),
        "p95": pct(values, 95),
        "p99": pct(values, 99),
        "mean": statistics.fmean(values) if values else float("nan"),
        "min": min(values) if values else float("nan"),
        "max": max(values) if values else float("nan"),
    }


def table(rows: list[tuple[str, dict]], unit: str = "ms", digits: int = 3, cols=("median", "p99", "mean", "min", "max")) -> str:
    width = max(len(name) for name, _ in rows) + 2
    out = [f"{'(' + unit + ')':<{width}}" + "".join(f"{c:>10}" for c in cols)]
    for name, s in rows:
        out.append(f"{name:<{width}}" + "".join(f"{s[c]:>10.{digits}f}" for c in cols))
    return "\n".join(out)


# -- a real MLflow server and a token database of one kind ---------------------------------------


class Backend:
    """``with Backend("postgresql") as b:`` -> ``b.mlflow`` (harness ``MlflowServer``), ``b.client``,
    ``b.db_url`` (migrated token database), ``b.sessions``."""

    def __init__(self, kind: str, start_mlflow: bool = True, keep: bool = False):
        assert kind in ("sqlite", "postgresql"), kind
        self.kind = kind
        self.start_mlflow = start_mlflow
        self.keep = keep
        self.workdir = Path(tempfile.mkdtemp(prefix=f"hokusai-bench-{kind}-"))
        self.mlflow = None
        self.client = None
        self._pg: list[str] = []

    def __enter__(self) -> Backend:
        from mlflow import MlflowClient

        from hokusai_mlflow_plugin.db.migrate import upgrade
        from hokusai_mlflow_plugin.db.session import session_factory
        from tests.harness import MlflowServer, create_pg_database

        try:
            if self.kind == "postgresql":
                self.db_url = create_pg_database("hokusai_bench_tokens")
                self._pg.append(self.db_url)
            else:
                self.db_url = f"sqlite:///{self.workdir / 'hokusai.db'}"
            upgrade(self.db_url)
            self.sessions = session_factory(self.db_url)
            if self.start_mlflow:
                if self.kind == "postgresql":
                    backend = create_pg_database("hokusai_bench_mlflow")
                    self._pg.append(backend)
                else:
                    backend = f"sqlite:///{self.workdir / 'mlflow.db'}"
                self.mlflow = MlflowServer(backend_uri=backend, workdir=self.workdir, kind=self.kind).start()
                self.client = MlflowClient(tracking_uri=self.mlflow.url, registry_uri=self.mlflow.url)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        from hokusai_mlflow_plugin.db.session import dispose
        from tests.harness import drop_pg_database

        if self.mlflow is not None:
            self.mlflow.stop()
        for url in self._pg:
            dispose(url)
            try:
                drop_pg_database(url)
            except Exception as e:  # pragma: no cover - report, do not mask the real error
                print(f"warning: could not drop {url.rsplit('/', 1)[1]}: {e}", file=sys.stderr)
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


# -- what a training run leaves behind, and the version it creates -------------------------------


@dataclass
class Prepared:
    token_id: str
    run_id: str
    model_id: str


def hokusai_tags(token_id: str) -> dict[str, str]:
    return {"hokusai_token_id": token_id, "hokusai_metric": METRIC, "hokusai_baseline": str(BASELINE)}


def prepare(client, sessions, n: int, experiment: str, tag: str = "BN", threads: int = 1) -> list[Prepared]:
    """``n`` draft tokens (one transaction) and, per token, a run with its tags and metric and a
    finalised LoggedModel with the same tags, as a training run with HOKUSAI_TOKEN_ID leaves them;
    ``threads`` make them side by side."""
    from concurrent.futures import ThreadPoolExecutor

    from mlflow.entities import Metric

    from hokusai_mlflow_plugin.db.models import Token

    exp_id = client.create_experiment(f"{experiment}-{uuid.uuid4().hex[:8]}")
    token_ids = [f"{tag}-{uuid.uuid4().hex[:12].upper()}" for _ in range(n)]
    with sessions.begin() as s:
        s.add_all(Token(token_id=t, status="draft", metric_name=METRIC, baseline_value=BASELINE) for t in token_ids)

    def one(token_id: str) -> Prepared:
        tags = hokusai_tags(token_id)
        run = client.create_run(exp_id, tags=tags)
        run_id = run.info.run_id
        client.log_batch(run_id, metrics=[Metric(METRIC, VALUE, int(time.time() * 1000), 0)])
        logged = client.create_logged_model(exp_id, source_run_id=run_id, tags=tags)
        client.finalize_logged_model(logged.model_id, "READY")
        return Prepared(token_id, run_id, logged.model_id)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, token_ids))


def create_version(client, name: str, p: Prepared) -> str:
    """What ``log_model(registered_model_name=name)`` sends: source ``models:/<model id>``, no run
    id, the model id. Returns the new version number."""
    mv = client.create_model_version(name, f"models:/{p.model_id}", run_id=None, model_id=p.model_id, await_creation_for=0)
    return str(mv.version)


def ensure_registered_model(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as e:
        if "RESOURCE_ALREADY_EXISTS" not in str(e.error_code):
            raise


def created_body(name: str, version: str, source: str, run_id: str | None = None) -> bytes:
    """A ``model_version.created`` body byte for byte as MLflow 3.17/3.18 sends it (see
    tests/fixtures/mlflow_webhook_deliveries.json): ``json.dumps`` with default separators."""
    import json

    return json.dumps(
        {
            "entity": "model_version",
            "action": "created",
            "timestamp": datetime.now(UTC).isoformat(),
            "data": {"name": name, "version": version, "source": source, "run_id": run_id, "tags": {}, "description": None},
        }
    ).encode()


def mlflow_headers(body: bytes, secret: str, host: str = "127.0.0.1:8787") -> dict[str, str]:
    """The headers MLflow's webhook delivery sends (requests' defaults plus MLflow's three)."""
    from webhook_app.signature import sign

    delivery_id = str(uuid.uuid4())
    ts = int(time.time())
    return {
        "Host": host,
        "User-Agent": "python-requests/2.32.5",
        "Accept-Encoding": "gzip, deflate",
        "Accept": "*/*",
        "Connection": "keep-alive",
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": str(ts),
        "X-MLflow-Signature": sign(secret, delivery_id, ts, body),
        "Content-Length": str(len(body)),
    }
