"""The MLflow gateway against MLflow direct, side by side in one run (issue 11).

* The run loop: ``start_run`` + 10 x ``log_metric`` + ``end_run`` with ``MlflowClient``, through the
  gateway (``hokusai gateway serve``'s gunicorn, 1 aiohttp worker, keys on PostgreSQL) against the
  same loop direct to ``mlflow server --workers 1``. Loops alternate between the two. Goal:
  gateway / direct <= 1.15 (ratio of medians).
* Artifacts: upload and download of one file (``log_artifact``, ``download_artifacts``) through the
  gateway against direct, in MB/s. Goal: gateway / direct >= 0.8.
* The gateway's own CPU time per ``log-metric`` request (user + system, from /proc, its gunicorn
  master and worker), over 1,000 requests with one kept-alive ``requests`` session.
* Revocation: the gateway remembers good keys and hears revocations (``auth.revocation``). A read
  key is used, revoked with ``revoke_everywhere`` (as the CLI and the console revoke), and asked
  with again at once, 50 times: how many requests the gateway let through after the revocation
  returned (the promise: none), and how long the revocation took.

    .venv/bin/python bench/bench_gateway.py --loops 60 --mb 200 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402


def run_loop(client, experiment: str) -> float:
    started = time.perf_counter()
    run = client.create_run(experiment)
    for step in range(10):
        client.log_metric(run.info.run_id, "loss", 1.0 / (step + 1), step=step)
    client.set_terminated(run.info.run_id)
    return (time.perf_counter() - started) * 1000


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its children (gunicorn's master and worker)."""
    from hokusai_mlflow_plugin.stack.process import processes_where

    total = 0
    for p in [pid, *processes_where(ppid=pid)]:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def measure_cpu(url: str, key: str, run_id: str, n: int, pid: int) -> float:
    """The gateway's CPU microseconds per ``log-metric`` request."""
    import requests

    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {key}"
        post = url + "/api/2.0/mlflow/runs/log-metric"
        for step in range(50):  # warm: the connection, the key remembered
            http.post(post, json={"run_id": run_id, "key": "cpu", "value": 1.0, "timestamp": 1, "step": step}, timeout=30)
        before = cpu_seconds(pid)
        for step in range(n):
            http.post(post, json={"run_id": run_id, "key": "cpu", "value": 1.0, "timestamp": 1, "step": step}, timeout=30)
        return (cpu_seconds(pid) - before) / n * 1e6


def measure_revocations(b, url: str, n: int) -> list[tuple[int, float]]:
    """(requests answered 200 after the revocation returned, ms the revocation took)."""
    import requests

    from hokusai_mlflow_plugin.auth import keys
    from hokusai_mlflow_plugin.auth.revocation import revoke_everywhere

    search = url + "/api/2.0/mlflow/experiments/search"
    out = []
    with requests.Session() as http:
        for _ in range(n):
            with b.sessions.begin() as s:
                probe = keys.create(s, "probe", ("read",)).key
            auth = {"Authorization": f"Bearer {probe}"}
            for _ in range(2):  # checked, then answered from memory
                assert http.get(search, params={"max_results": 1}, headers=auth, timeout=30).status_code == 200
            started = time.perf_counter()
            assert revoke_everywhere(b.sessions, probe[3:11]).unconfirmed == 0
            took, through = (time.perf_counter() - started) * 1000, 0
            while http.get(search, params={"max_results": 1}, headers=auth, timeout=30).status_code == 200:
                through += 1
            out.append((through, took))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loops", type=int, default=60)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from mlflow import MlflowClient

    from hokusai_mlflow_plugin.auth import keys
    from hokusai_mlflow_plugin.stack.local import gateway_command
    from hokusai_mlflow_plugin.stack.process import ManagedProcess, free_port

    print(benchlib.machine_facts())
    scratch = Path(tempfile.mkdtemp(prefix="hokusai-bench-gateway-"))
    with benchlib.Backend("postgresql") as b:
        with b.sessions.begin() as s:
            key = keys.create(s, "bench", ("register",)).key
        port = free_port()
        env = {**os.environ, "HOKUSAI_DATABASE_URL": b.db_url, "HOKUSAI_MLFLOW_INTERNAL_URI": b.mlflow.url, "HOKUSAI_GATEWAY_RATE_LIMIT": "100000/minute", "HOKUSAI_LOG_LEVEL": "WARNING"}
        gateway = ManagedProcess("gateway", gateway_command("127.0.0.1", port, 1), env, b.workdir / "gateway.log").start()
        try:
            gateway.wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
            os.environ["MLFLOW_TRACKING_TOKEN"] = key  # sent to both: MLflow direct ignores it
            through = MlflowClient(tracking_uri=f"http://127.0.0.1:{port}/mlflow")
            direct = MlflowClient(tracking_uri=b.mlflow.url)
            experiment = direct.create_experiment("bench-gateway")
            times = {"gateway": [], "direct": []}
            for i in range(args.loops + 5):
                order = [("gateway", through), ("direct", direct)]
                for name, client in (order if i % 2 == 0 else order[::-1]):
                    elapsed = run_loop(client, experiment)
                    if i >= 5:
                        times[name].append(elapsed)

            source = scratch / "weights.bin"
            with source.open("wb") as f:
                for _ in range(args.mb):
                    f.write(os.urandom(1024 * 1024))
            rates = {("gateway", "up"): [], ("direct", "up"): [], ("gateway", "down"): [], ("direct", "down"): []}
            for r in range(args.rounds):
                order = [("gateway", through), ("direct", direct)]
                for name, client in (order if r % 2 == 0 else order[::-1]):
                    run = client.create_run(experiment)
                    started = time.perf_counter()
                    client.log_artifact(run.info.run_id, str(source))
                    rates[(name, "up")].append(args.mb / (time.perf_counter() - started))
                    target = scratch / f"back-{name}-{r}"
                    started = time.perf_counter()
                    client.download_artifacts(run.info.run_id, "weights.bin", str(target))
                    rates[(name, "down")].append(args.mb / (time.perf_counter() - started))
                    shutil.rmtree(target)
            cpu = measure_cpu(f"http://127.0.0.1:{port}/mlflow", key, direct.create_run(experiment).info.run_id, 1000, gateway.pid)
            revocations = measure_revocations(b, f"http://127.0.0.1:{port}/mlflow", 50)
        finally:
            gateway.stop()
            shutil.rmtree(scratch, ignore_errors=True)
    g, d = benchlib.summary(times["gateway"]), benchlib.summary(times["direct"])
    print(f"\n[run loop] create_run + 10 x log_metric + set_terminated, {args.loops} loops each, interleaved (ms)")
    print(benchlib.table([("through the gateway", g), ("direct to MLflow", d)]))
    print(f"ratio gateway / direct, medians: {g['median'] / d['median']:.3f}")
    print(f"\n[artifacts] one {args.mb} MB file, {args.rounds} rounds each (MB/s, median)")
    for way in ("up", "down"):
        gw, dr = statistics.median(rates[("gateway", way)]), statistics.median(rates[("direct", way)])
        print(f"  {way:<5} gateway {gw:7.1f}   direct {dr:7.1f}   ratio {gw / dr:.3f}")
    print(f"\n[gateway CPU] {cpu:.0f} us per log-metric request (gunicorn master and worker, 1,000 requests)")
    late = [r[0] for r in revocations]
    print(f"\n[revocation] {len(revocations)} keys used, revoked (revoke_everywhere), and used again at once")
    print(f"  requests let through after the revocation returned: {sum(late)} in all, at most {max(late)} for one key")
    times = benchlib.summary([r[1] for r in revocations])
    print(f"  the revocation took (ms): median {times['median']:.2f}  p95 {times['p95']:.2f}  max {times['max']:.2f}")
    print(benchlib.finished())


if __name__ == "__main__":
    main()
