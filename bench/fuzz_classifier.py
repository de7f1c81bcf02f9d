"""The gateway's scope classifier, fuzzed by hand far past the suite's bound (issue 21): the
property of ``tests/webhook_app/test_fuzzed_edges.py`` (``classify``: the scope the gateway
demands for a mangled path is never lower than that of the route MLflow runs for it), run for
``--examples`` generated paths, counting them as they run so that a stopped run still says how many
passed.

    nice -n 19 .venv/bin/python bench/fuzz_classifier.py --examples 100000 --progress 5000

Prints a line per ``--progress`` examples, and at the end the count, how many reached one of
MLflow's routes, the time, and PASS (or the failing case, shrunk by hypothesis, and FAIL).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, given, settings  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--progress", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=None, help="hypothesis's seed (default: random)")
    args = parser.parse_args()

    from mlflow.server import app

    from tests.webhook_app.test_fuzzed_edges import classify, mangled

    rules = [(r, m) for r in app.url_map.iter_rules() for m in sorted(r.methods - {"HEAD", "OPTIONS"})
             if not r.rule.startswith("/static")]
    adapter = app.url_map.bind("mlflow.internal")
    counts = {"examples": 0, "routed": 0}
    started = time.monotonic()

    @settings(max_examples=args.examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(mangled(rules))
    def check(case):
        counts["examples"] += 1
        counts["routed"] += classify(adapter, case)
        if counts["examples"] % args.progress == 0:
            print(f"{counts['examples']} examples, {counts['routed']} reached a route of MLflow's, "
                  f"{time.monotonic() - started:.0f} s, none failed", flush=True)

    if args.seed is not None:
        from hypothesis import seed
        check = seed(args.seed)(check)
    print(f"{len(rules)} (route, method) pairs of MLflow's; {args.examples} examples asked", flush=True)
    try:
        check()
    except AssertionError as e:
        print(f"FAIL after {counts['examples']} examples (the last ones hypothesis's shrinking): {e}", flush=True)
        return 1
    print(f"PASS: {counts['examples']} examples ({counts['routed']} reached a route of MLflow's) in "
          f"{time.monotonic() - started:.0f} s, none failed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
