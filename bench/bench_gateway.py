"""The MLflow gateway against MLflow direct, side by side in one run (issue 11).

* The run loop: ``start_run`` + 10 x ``log_metric`` + ``end_run`` with ``MlflowClient``, through the
  gateway (``hokusai gateway serve``'s gunicorn, 1 aiohttp worker, keys on PostgreSQL, teams inside
  MLflow on as by default: a team member's key in its team's experiment, made through the gateway)
  against the same loop direct to ``mlflow server --workers 1``. Loops alternate between the two.
  Goal: gateway / direct <= 1.15 (ratio of medians).
* Searches over 10,000 objects of 10 teams (issue 19): 10,000 runs (10 experiments of 100 runs per
  team) and 10,000 registered models (1,000 per team), their owners recorded (and the models tagged
  with theirs) as the gateway records them; one team's member searches through the gateway (narrowed
  before the query to its team's objects: the owner tag for registered models) against the same call
  direct (``search_runs`` of its experiments; ``search_registered_models`` as asked, and with the
  1,000-name filter the gateway added before the owner tag, MLflow's cost of parsing it). Goal:
  gateway / direct <= 1.2.
* Artifacts: upload and download of one file (``log_artifact``, ``download_artifacts``) through the
  gateway against direct, in MB/s. Goal: gateway / direct >= 0.8.
* The gateway's own CPU time per ``log-metric`` request (user + system, from /proc, its gunicorn
  master and worker), over 1,000 requests with one kept-alive ``requests`` session.
* Revocation: the gateway remembers good keys and hears revocations (``auth.revocation``). A read
  key is used, revoked with ``revoke_everywhere`` (as the CLI and the console revoke), and asked
  with again at once, 50 times: how many requests the gateway let through after the revocation
  returned (the promise: none), and how long the revocation took.

    .venv/bin/python bench/bench_gateway.py --loops 60 --mb 200 --rounds 3 --objects 10000 --searches 40
    (--mb 0 leaves out the artifacts; --objects 0 the searches)

* ``--against DIR``: one more gateway, run from the checkout DIR (``git worktree add DIR <commit>``;
  its code first on PYTHONPATH) and interleaved with the others in the same loops, with its CPU per
  request too: what a change costs, measured in one run on one machine's load.
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

    return benchlib.cpu_seconds([pid, *processes_where(ppid=pid)])


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


def populate(b, direct, objects: int, teams: int, threads: int = 8) -> dict:
    """``objects`` runs and ``objects`` registered models, split evenly over ``teams`` teams (10
    experiments per team), made on MLflow directly and recorded as the teams' (as the gateway
    records what a key makes); a member's key per team. Returns {team: (key, experiment ids, model names)}."""
    from concurrent.futures import ThreadPoolExecutor

    import sqlalchemy as sa

    from hokusai_mlflow_plugin.auth import keys, principals
    from hokusai_mlflow_plugin.core.tags import OWNER
    from hokusai_mlflow_plugin.db.models import EXPERIMENT, REGISTERED_MODEL, TEAM, USER, MlflowObject

    tag = os.urandom(3).hex()
    made = {}
    per_team = objects // teams
    with ThreadPoolExecutor(threads) as pool:
        for t in range(teams):
            team = f"team-{t}-{tag}"
            with b.sessions.begin() as s:
                principals.create(s, team, TEAM)
                principals.create(s, f"user-{team}", USER)
                principals.add_member(s, team, f"user-{team}")
                owner = principals.find(s, team).id
            experiments = [direct.create_experiment(f"bench-{team}-{e}") for e in range(10)]
            list(pool.map(lambda i: direct.create_run(experiments[i % 10]), range(per_team)))
            names = [f"model-{team}-{i:05d}" for i in range(per_team)]
            # with the owner's tag, as the gateway makes them (auth.mlflow_objects)
            list(pool.map(lambda n: direct.create_registered_model(n, tags={OWNER: str(owner)}), names))
            with b.sessions.begin() as s:
                rows = [{"kind": EXPERIMENT, "object_id": e, "owner_id": owner, "creator_id": owner, "key_id": "bench",
                         "is_default": False} for e in experiments]
                rows += [{"kind": REGISTERED_MODEL, "object_id": n, "owner_id": owner, "creator_id": owner, "key_id": "bench",
                          "is_default": False} for n in names]
                s.execute(sa.insert(MlflowObject), rows)
                key = keys.create(s, f"key-{team}", ("read", "register"), user=f"user-{team}").key
            made[team] = (key, experiments, names)
            print(f"  made team {t + 1}/{teams}: {per_team} runs, {per_team} registered models", file=sys.stderr)
    return made


def measure_searches(gateway_url: str, mlflow_url: str, team: tuple, n: int) -> dict:
    """Interleaved, ``n`` each (ms): one team's member searches through the gateway and the same
    call direct to MLflow."""
    from mlflow import MlflowClient

    key, experiments, names = team
    os.environ["MLFLOW_TRACKING_TOKEN"] = key
    through = MlflowClient(tracking_uri=gateway_url, registry_uri=gateway_url)
    direct = MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url)
    own = "name IN (" + ", ".join(f"'{m}'" for m in sorted(names)) + ")"

    def timed(call) -> float:
        started = time.perf_counter()
        found = call()
        assert len(found) == 100, len(found)
        return (time.perf_counter() - started) * 1000

    cases = {
        "search_runs, gateway": lambda: through.search_runs(experiments, max_results=100),
        "search_runs, direct": lambda: direct.search_runs(experiments, max_results=100),
        "search_registered_models, gateway": lambda: through.search_registered_models(max_results=100),
        "search_registered_models, direct as asked": lambda: direct.search_registered_models(max_results=100),
        "search_registered_models, direct with a 1,000-name filter": lambda: direct.search_registered_models(own, max_results=100),
    }
    # what the gateway answers holds only the team's own
    assert {m.name for m in through.search_registered_models(max_results=100)} <= set(names)
    assert {r.info.experiment_id for r in through.search_runs(experiments, max_results=100)} <= set(experiments)
    times = {name: [] for name in cases}
    for i in range(n + 3):
        for name, call in (list(cases.items()) if i % 2 == 0 else list(cases.items())[::-1]):
            elapsed = timed(call)
            if i >= 3:
                times[name].append(elapsed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loops", type=int, default=60)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--objects", type=int, default=10000, help="runs, and registered models, of all teams (0: no searches)")
    parser.add_argument("--teams", type=int, default=10)
    parser.add_argument("--searches", type=int, default=40)
    parser.add_argument("--against", type=Path, help="a checkout whose gateway runs beside this one's (before/after)")
    args = parser.parse_args()

    from mlflow import MlflowClient

    from hokusai_mlflow_plugin.auth import keys, principals
    from hokusai_mlflow_plugin.db.models import TEAM, USER
    from hokusai_mlflow_plugin.stack.local import gateway_command
    from hokusai_mlflow_plugin.stack.process import ManagedProcess, free_port

    print(benchlib.machine_facts())
    scratch = Path(tempfile.mkdtemp(prefix="hokusai-bench-gateway-"))
    with benchlib.Backend("postgresql") as b:
        with b.sessions.begin() as s:  # a member of a team, as a platform's user is
            principals.create(s, "bench-team", TEAM)
            principals.create(s, "bench-user", USER)
            principals.add_member(s, "bench-team", "bench-user")
            key = keys.create(s, "bench", ("register",), user="bench-user").key
        port = free_port()
        env = {**os.environ, "HOKUSAI_DATABASE_URL": b.db_url, "HOKUSAI_MLFLOW_INTERNAL_URI": b.mlflow.url, "HOKUSAI_GATEWAY_RATE_LIMIT": "100000/minute", "HOKUSAI_LOG_LEVEL": "WARNING"}
        gateway = ManagedProcess("gateway", gateway_command("127.0.0.1", port, 1), env, b.workdir / "gateway.log").start()
        # the same gateway with teams inside MLflow off: what isolation itself costs the run loop
        port_off = free_port()
        gateway_off = ManagedProcess("gateway-off", gateway_command("127.0.0.1", port_off, 1),
                                     {**env, "HOKUSAI_GATEWAY_MLFLOW_OWNERSHIP": "off"}, b.workdir / "gateway-off.log").start()
        port_against, against = free_port(), None
        if args.against:
            against = ManagedProcess("gateway-against", gateway_command("127.0.0.1", port_against, 1),
                                     {**env, "PYTHONPATH": str(args.against.resolve())}, b.workdir / "gateway-against.log").start()
        try:
            gateway.wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
            gateway_off.wait_http(f"http://127.0.0.1:{port_off}/health", timeout=60)
            if against:
                against.wait_http(f"http://127.0.0.1:{port_against}/health", timeout=60)
            os.environ["MLFLOW_TRACKING_TOKEN"] = key  # sent to both: MLflow direct ignores it
            through = MlflowClient(tracking_uri=f"http://127.0.0.1:{port}/mlflow")
            through_off = MlflowClient(tracking_uri=f"http://127.0.0.1:{port_off}/mlflow")
            direct = MlflowClient(tracking_uri=b.mlflow.url)
            experiment = through.create_experiment("bench-gateway")  # the team's, as the gateway records it
            times = {"gateway": [], "gateway, isolation off": [], "direct": []}
            order = [("gateway", through), ("gateway, isolation off", through_off), ("direct", direct)]
            if against:
                times[f"gateway of {args.against}"] = []
                order.append((f"gateway of {args.against}", MlflowClient(tracking_uri=f"http://127.0.0.1:{port_against}/mlflow")))
            for i in range(args.loops + 5):
                for name, client in (order if i % 2 == 0 else order[::-1]):
                    elapsed = run_loop(client, experiment)
                    if i >= 5:
                        times[name].append(elapsed)

            source = scratch / "weights.bin"
            with source.open("wb") as f:
                for _ in range(args.mb):
                    f.write(os.urandom(1024 * 1024))
            rates = {("gateway", "up"): [], ("direct", "up"): [], ("gateway", "down"): [], ("direct", "down"): []}
            for r in range(args.rounds if args.mb else 0):
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
            cpu_against = None
            if against:  # twice, in turn: the machine's load moves between them
                cpu_against = measure_cpu(f"http://127.0.0.1:{port_against}/mlflow", key, direct.create_run(experiment).info.run_id,
                                          1000, against.pid)
                cpu = (cpu + measure_cpu(f"http://127.0.0.1:{port}/mlflow", key, direct.create_run(experiment).info.run_id,
                                         1000, gateway.pid)) / 2
                cpu_against = (cpu_against + measure_cpu(f"http://127.0.0.1:{port_against}/mlflow", key,
                                                         direct.create_run(experiment).info.run_id, 1000, against.pid)) / 2
            revocations = measure_revocations(b, f"http://127.0.0.1:{port}/mlflow", 50)
            searches = None
            if args.objects:
                teams = populate(b, direct, args.objects, args.teams)
                searches = measure_searches(f"http://127.0.0.1:{port}/mlflow", b.mlflow.url, list(teams.values())[3 % args.teams],
                                            args.searches)
        finally:
            gateway.stop()
            gateway_off.stop()
            if against:
                against.stop()
            shutil.rmtree(scratch, ignore_errors=True)
    g, d = benchlib.summary(times["gateway"]), benchlib.summary(times["direct"])
    off = benchlib.summary(times["gateway, isolation off"])
    print(f"\n[run loop] create_run + 10 x log_metric + set_terminated, {args.loops} loops each, interleaved (ms)")
    rows = [("through the gateway", g), ("gateway, isolation off", off), ("direct to MLflow", d)]
    if args.against:
        a = benchlib.summary(times[f"gateway of {args.against}"])
        rows.append((f"gateway of {args.against}", a))
    print(benchlib.table(rows))
    print(f"ratio gateway / direct, medians: {g['median'] / d['median']:.3f}")
    print(f"ratio gateway with isolation off / direct, medians: {off['median'] / d['median']:.3f}")
    if args.against:
        print(f"ratio gateway of {args.against} / direct, medians: {a['median'] / d['median']:.3f}")
        print(f"ratio gateway / gateway of {args.against}, medians: {g['median'] / a['median']:.3f}")
    print(f"\n[artifacts] one {args.mb} MB file, {args.rounds} rounds each (MB/s, median)")
    for way in ("up", "down") if args.mb else ():
        gw, dr = statistics.median(rates[("gateway", way)]), statistics.median(rates[("direct", way)])
        print(f"  {way:<5} gateway {gw:7.1f}   direct {dr:7.1f}   ratio {gw / dr:.3f}")
    print(f"\n[gateway CPU] {cpu:.0f} us per log-metric request (gunicorn master and worker, 1,000 requests"
          f"{', twice' if cpu_against is not None else ''})")
    if cpu_against is not None:
        print(f"  gateway of {args.against}: {cpu_against:.0f} us per log-metric request")
    late = [r[0] for r in revocations]
    print(f"\n[revocation] {len(revocations)} keys used, revoked (revoke_everywhere), and used again at once")
    print(f"  requests let through after the revocation returned: {sum(late)} in all, at most {max(late)} for one key")
    times = benchlib.summary([r[1] for r in revocations])
    print(f"  the revocation took (ms): median {times['median']:.2f}  p95 {times['p95']:.2f}  max {times['max']:.2f}")
    if searches is not None:
        print(f"\n[searches] {args.objects:,} runs and {args.objects:,} registered models of {args.teams} teams; one team's "
              f"member, pages of 100, {args.searches} each, interleaved (ms)")
        print(benchlib.table([(name, benchlib.summary(v)) for name, v in searches.items()]))
        med = {name: statistics.median(v) for name, v in searches.items()}
        print(f"ratio search_runs gateway / direct, medians: {med['search_runs, gateway'] / med['search_runs, direct']:.3f}")
        print("ratio search_registered_models gateway / direct as asked, medians: "
              f"{med['search_registered_models, gateway'] / med['search_registered_models, direct as asked']:.3f}")
        print("ratio search_registered_models direct with a 1,000-name filter (the gateway's narrowing before the "
              "owner tag) / direct as asked, medians: "
              f"{med['search_registered_models, direct with a 1,000-name filter'] / med['search_registered_models, direct as asked']:.3f}")
    print(benchlib.finished())


if __name__ == "__main__":
    main()
