"""Cost of the plugin inside ``import mlflow`` (issue 2, target: ratio <= 1.01).

Run by hand, never in the test suite::

    .venv/bin/python bench/bench_import.py --runs 40

Every measurement is a fresh ``python -c`` child that runs the SAME wrapper code, then times
``import mlflow`` with ``time.perf_counter`` inside the child. The wrapper replaces
``importlib.metadata.entry_points`` by a filter that drops the entry points whose value starts with
a prefix given on its command line:

* variant ``plugin``: prefix that matches nothing, so MLflow sees and loads the Hokusai entry points;
* variant ``hidden``: prefix ``hokusai_mlflow_plugin``, so MLflow never sees them (the baseline).

The child reports both wall time (``perf_counter``, the target) and its own CPU time
(``process_time``), which other processes on a shared machine disturb less. Both variants pay for
the same wrapper and the same entry-point scan (the distribution stays on
disk), so the difference is what loading the plugin costs: importing ``hokusai_mlflow_plugin.*``
and constructing ``HokusaiRunContextProvider``. The two variants are interleaved (A B B A ...)
so drifts of a shared, noisy machine hit both alike; results are compared as a ratio only.

A second, quieter measurement times the plugin's own load directly in fresh children: MLflow is
imported with the entry points hidden, then the ``hokusai`` run-context entry point is loaded and
instantiated as MLflow does (``EntryPoint.load()()``). This is the cost the noisy ratio tries to
resolve (it leaves out what MLflow itself spends on the model-registry entry points, which it
only reads lazily, not during ``import mlflow``).

Standard library only (plus mlflow and the package, in the children).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time

PLUGIN_PREFIX = "hokusai_mlflow_plugin"
NEVER_PREFIX = "-no-entry-point-value-starts-with-this"  # not a module name

# Runs in the child. Identical for both variants except for argv[1] (the prefix to hide).
CHILD = r"""
import sys, time, json, importlib.metadata as _md
_prefix = sys.argv[1]
_orig = _md.entry_points
_hidden = []
def _filtered(**params):
    eps = _orig(**params)
    if isinstance(eps, _md.EntryPoints):
        kept = []
        for ep in eps:
            if ep.value.startswith(_prefix):
                _hidden.append(ep.group + ":" + ep.name)
            else:
                kept.append(ep)
        return _md.EntryPoints(kept)
    return eps
_md.entry_points = _filtered
c0 = time.process_time()
t0 = time.perf_counter()
import mlflow
t1 = time.perf_counter()
c1 = time.process_time()
print(json.dumps({
    "seconds": t1 - t0,
    "cpu": c1 - c0,
    "hidden": _hidden,
    "loaded": sorted(m for m in sys.modules if m.startswith("hokusai_mlflow_plugin")),
}))
"""

# Direct cost of loading the plugin the way MLflow does (EntryPoint.load() + constructor), in a
# child where mlflow is already imported with the Hokusai entry points hidden.
DIRECT = r"""
import sys, time, json, importlib.metadata as _md
_orig = _md.entry_points
_md.entry_points = lambda **p: _md.EntryPoints(
    [ep for ep in _orig(**p) if not ep.value.startswith("hokusai_mlflow_plugin")])
import mlflow
assert not any(m.startswith("hokusai_mlflow_plugin") for m in sys.modules)
(ep,) = [e for e in _orig(group="mlflow.run_context_provider") if e.name == "hokusai"]
c0 = time.process_time()
t0 = time.perf_counter()
ep.load()()
t1 = time.perf_counter()
c1 = time.process_time()
print(json.dumps({"seconds": t1 - t0, "cpu": c1 - c0}))
"""


def child(code: str, *args: str) -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_import(variant: str) -> dict:
    prefix = PLUGIN_PREFIX if variant == "hidden" else NEVER_PREFIX
    result = child(CHILD, prefix)
    if variant == "hidden":
        if result["loaded"] or not result["hidden"]:
            raise SystemExit(f"baseline is not clean: {result}")
    elif "hokusai_mlflow_plugin.plugins.run_context" not in result["loaded"] or result["hidden"]:
        raise SystemExit(f"plugin variant did not load the plugin: {result}")
    return result


def bootstrap_ratio(a: list[float], b: list[float], n: int, seed: int) -> tuple[float, float]:
    """95% interval of median(a) / median(b), resampling the pairs (the runs are interleaved)."""
    rng = random.Random(seed)
    pairs = list(zip(a, b))
    ratios = []
    for _ in range(n):
        sample = [rng.choice(pairs) for _ in pairs]
        ratios.append(
            statistics.median(p[0] for p in sample) / statistics.median(p[1] for p in sample)
        )
    ratios.sort()
    return ratios[int(0.025 * n)], ratios[int(0.975 * n) - 1]


def mlflow_version() -> str:
    from importlib.metadata import version

    return version("mlflow")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="fresh children per variant (40)")
    parser.add_argument("--warmup", type=int, default=2, help="discarded pairs first (2)")
    parser.add_argument("--direct-runs", type=int, default=20, help="children for the direct cost (20)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (2000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--raw", metavar="FILE", help="also write the raw times (JSON) to FILE")
    args = parser.parse_args()

    print(f"python {platform.python_version()}  mlflow {mlflow_version()}  nproc {os.cpu_count()}")
    print(f"{args.runs} fresh children per variant, interleaved, "
          f"{args.warmup} warm-up pairs discarded", flush=True)

    for _ in range(args.warmup):
        run_import("plugin")
        run_import("hidden")

    times: dict[str, dict[str, list[float]]] = {
        v: {"seconds": [], "cpu": []} for v in ("plugin", "hidden")
    }
    started = time.perf_counter()
    for i in range(args.runs):
        order = ("plugin", "hidden") if i % 2 == 0 else ("hidden", "plugin")
        for variant in order:
            result = run_import(variant)
            for clock in ("seconds", "cpu"):
                times[variant][clock].append(result[clock])
    elapsed = time.perf_counter() - started
    if args.raw:
        with open(args.raw, "w", encoding="utf-8") as f:
            json.dump(times, f)

    ratios = {}
    for clock, title in (("seconds", "wall time, perf_counter"), ("cpu", "CPU time, process_time")):
        p, h = times["plugin"][clock], times["hidden"][clock]
        med_p, med_h = statistics.median(p), statistics.median(h)
        low, high = bootstrap_ratio(p, h, args.bootstrap, args.seed)
        paired = statistics.median(x / y for x, y in zip(p, h))
        ratios[clock] = (med_p / med_h, low, high, med_h)
        print()
        print(f"import mlflow, {title} in the child (seconds)")
        print(f"{'variant':<28}{'median':>10}{'min':>10}{'max':>10}")
        print(f"{'with plugin':<28}{med_p:>10.4f}{min(p):>10.4f}{max(p):>10.4f}")
        print(f"{'entry points hidden':<28}{med_h:>10.4f}{min(h):>10.4f}{max(h):>10.4f}")
        print(f"ratio of medians            {med_p / med_h:.4f}  "
              f"(bootstrap 95%: {low:.4f} .. {high:.4f})")
        print(f"ratio of minimums           {min(p) / min(h):.4f}")
        print(f"median of paired ratios     {paired:.4f}")
    print(f"({elapsed:.0f} s for the interleaved runs)")

    direct = [child(DIRECT) for _ in range(args.direct_runs)]
    med_d = statistics.median(d["seconds"] for d in direct)
    med_dc = statistics.median(d["cpu"] for d in direct)
    base_wall, base_cpu = ratios["seconds"][3], ratios["cpu"][3]
    print()
    print(f"direct plugin load, {args.direct_runs} fresh children "
          "(EntryPoint.load()() of the hokusai run-context entry point, after import mlflow):")
    print(f"wall median {med_d * 1e3:.2f} ms (min {min(d['seconds'] for d in direct) * 1e3:.2f}), "
          f"cpu median {med_dc * 1e3:.2f} ms")
    print(f"implied ratio 1 + direct / baseline median: wall {1 + med_d / base_wall:.4f}, "
          f"cpu {1 + med_dc / base_cpu:.4f}")

    ratio, low, high, _ = ratios["seconds"]
    if high <= 1.01:
        verdict = "met: the whole 95% interval is <= 1.01"
    elif low > 1.01:
        verdict = "MISSED: the whole 95% interval is > 1.01"
    else:
        verdict = (f"not resolved by the end-to-end runs (95% interval {low:.4f} .. {high:.4f} "
                   "straddles 1.01); see the direct load above")
    print()
    print(f"target ratio <= 1.01 (wall, ratio of medians {ratio:.4f}): {verdict}")
    print(f"direct estimate: {1 + med_d / base_wall:.4f} -> "
          f"{'met' if 1 + med_d / base_wall <= 1.01 else 'MISSED'}")

if __name__ == "__main__":
    main()
