"""Per-call cost of the run-context provider (issue 2, target: in_context() + tags() < 20 us).

Run by hand, never in the test suite::

    .venv/bin/python bench/bench_tags.py --repeat 15 --number 20000

MLflow calls ``in_context()`` and then ``tags()`` on every provider for every run and LoggedModel.
With HOKUSAI_TOKEN_ID=xray HOKUSAI_METRIC=auroc HOKUSAI_BASELINE=0.82 (set here unless already in
the environment) this times, per call:

* ``in_context() + tags()`` on one ``HokusaiRunContextProvider`` (the steady state: the tags of an
  unchanged environment are cached, ``tags()`` returns a copy);
* ``context_tags(os.environ)``: the uncached path, i.e. what the first call (or the first call after
  the environment changed) computes;
* ``tags()`` after ``reset()`` on every call, the first-call path as MLflow sees it;
* an empty ``lambda: None`` loop, to show the timing floor.

Each figure is timeit's repeat: ``--repeat`` rounds of ``--number`` calls, reported as the median
and the minimum over the rounds, per call. Standard library only (plus mlflow and the package).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import timeit

ENV = {"HOKUSAI_TOKEN_ID": "xray", "HOKUSAI_METRIC": "auroc", "HOKUSAI_BASELINE": "0.82"}
EXPECTED = {"hokusai_token_id": "XRAY", "hokusai_metric": "auroc", "hokusai_baseline": "0.82"}
TARGET_US = 20.0


def per_call_us(func, repeat: int, number: int) -> tuple[float, float]:
    rounds = timeit.repeat(func, repeat=repeat, number=number)
    per = [r / number * 1e6 for r in rounds]
    return statistics.median(per), min(per)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=15, help="timeit rounds (15)")
    parser.add_argument("--number", type=int, default=20000, help="calls per round (20000)")
    args = parser.parse_args()

    for key, value in ENV.items():
        os.environ.setdefault(key, value)

    from importlib.metadata import version

    # mlflow first, as in a user's process: importing hokusai_mlflow_plugin.plugins.run_context before
    # mlflow makes MLflow load the entry point while run_context is half-initialised.
    import mlflow  # noqa: F401

    from hokusai_mlflow_plugin.plugins import run_context
    from hokusai_mlflow_plugin.plugins.run_context import HokusaiRunContextProvider, context_tags

    provider = HokusaiRunContextProvider()
    run_context.reset()
    tags = provider.tags()
    if not provider.in_context() or tags != EXPECTED:
        raise SystemExit(f"unexpected provider output: in_context={provider.in_context()} {tags}")

    def steady():
        provider.in_context()
        provider.tags()

    def uncached():
        context_tags(os.environ)

    def first_call():
        run_context.reset()
        provider.in_context()
        provider.tags()

    print(f"python {platform.python_version()}  mlflow {version('mlflow')}  nproc {os.cpu_count()}")
    print("environment: " + " ".join(f"{k}={os.environ[k]}" for k in ENV))
    print(f"{args.repeat} rounds of {args.number} calls; microseconds per call")
    print()
    rows = [
        ("in_context() + tags(), cached", steady),
        ("context_tags(os.environ), uncached", uncached),
        ("reset() + in_context() + tags()", first_call),
        ("empty call (floor)", lambda: None),
    ]
    results = {}
    print(f"{'call':<40}{'median':>10}{'min':>10}")
    for name, func in rows:
        func()  # warm up
        results[name] = per_call_us(func, args.repeat, args.number)
        median, low = results[name]
        print(f"{name:<40}{median:>10.3f}{low:>10.3f}", flush=True)
    run_context.reset()

    steady_median = results[rows[0][0]][0]
    first_median = results[rows[2][0]][0]
    print()
    print(f"target in_context() + tags() < {TARGET_US:g} us: "
          f"{'met' if steady_median < TARGET_US else 'MISSED'} ({steady_median:.3f} us median); "
          f"first call path {first_median:.3f} us: "
          f"{'also under' if first_median < TARGET_US else 'over'} the target")


if __name__ == "__main__":
    main()
