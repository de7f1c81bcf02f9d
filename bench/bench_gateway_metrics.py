"""The CPU and wall time of the metric updates one gateway request makes (issue 20): a request
counter, the upstream histogram, the upstream answers' counter and the key check's counter, in
prometheus-client's multiprocess mode (as under ``hokusai gateway serve``).

    .venv/bin/python bench/bench_gateway_metrics.py --requests 20000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="hokusai-bench-metrics-")  # before the import

    from hokusai_mlflow_plugin.monitoring import GATEWAY_KEY_CHECKS, GATEWAY_UPSTREAM_RESPONSES, GATEWAY_UPSTREAM_SECONDS
    from webhook_app.gateway import metrics

    hits, answered = GATEWAY_KEY_CHECKS.labels("hit"), GATEWAY_UPSTREAM_RESPONSES.labels("200")

    def one_request() -> None:
        metrics.count_answer("read", 200)
        GATEWAY_UPSTREAM_SECONDS.observe(0.004)
        answered.inc()
        hits.inc()

    print(benchlib.machine_facts())
    one_request()
    for _ in range(args.rounds):
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(args.requests):
            one_request()
        print(f"CPU {(time.process_time() - cpu) / args.requests * 1e6:.1f} us, wall "
              f"{(time.perf_counter() - wall) / args.requests * 1e6:.1f} us per request's four metric updates")
    print(benchlib.finished())


if __name__ == "__main__":
    main()
