"""gunicorn settings for the receiver and the MLflow gateway: ``gunicorn -c python:webhook_app.gunicorn_config ...``.

A worker that exits leaves its Prometheus counters in PROMETHEUS_MULTIPROC_DIR; this tells
prometheus-client to stop counting its live gauges (its counters stay in the sums, as they should).
"""


def child_exit(server, worker):
    import os

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
