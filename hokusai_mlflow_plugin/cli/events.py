"""``hokusai events ...``: the outbox, its deliveries, the relay worker and the watcher."""

from __future__ import annotations

import sys

import click

from hokusai_mlflow_plugin.cli.common import domain_errors, emit, pass_ctx, stop_on_signals


@click.group()
def events():
    """The event outbox, its deliveries and the relay."""


def _relay(obj, console: bool = False):
    """The relay the settings configure; a misconfigured sink is a ConfigError naming the setting."""
    from hokusai_mlflow_plugin.events import relay

    settings = obj.settings.with_overrides(event_console=True) if console else obj.settings
    return relay.from_settings(settings, obj.sessions())


@events.command("list")
@click.option("--status", type=click.Choice(["pending", "failed", "dead", "delivered"]), help="Only deliveries in this state.")
@click.option("--limit", default=100, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON, with every attempt.")
@pass_ctx
@domain_errors
def events_list(obj, status, limit, as_json):
    """Show event deliveries per sink, newest first, with their attempts, and every sink that is
    disabled (its consumer answered 410 Gone) with the command that enables it again."""
    from hokusai_mlflow_plugin.events import outbox, sink_states

    disabled = {}
    if (api := obj.api()) is not None:
        rows = _api_rows(api, status, limit)
    else:
        with obj.sessions()() as session:
            rows = outbox.deliveries_or_events(session, status, limit)
            disabled = sink_states.disabled_sinks(session)
    lines = [
        f"DISABLED {d['sink']} since {d['disabled_at']}: {d['reason']}. It holds {d['held']} deliveries, "
        f"kept, not sent; once the consumer is back, send them with: {d['enable']}"
        for d in disabled.values()
    ]
    for r in rows:
        if r.get("sink") in disabled:
            r.update(sink_disabled=True, enable=disabled[r["sink"]]["enable"])
        held = "  (sink disabled)" if r.get("sink_disabled") else ""
        err = f"  last error: {r['last_error']}" if r.get("last_error") else ""
        lines.append(f"{r['event_id']}  {r['event_type']:<24} {r['sink'] or '-':<40} {r['status']:<9} attempts={r['attempts']}{held}{err}")
    emit(rows, as_json, "\n".join(lines) or "No events.")


@events.command("enable")
@click.argument("sink")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def events_enable(obj, sink, as_json):
    """Enable SINK again after its consumer answered 410 Gone: its held deliveries are sent at
    once, oldest first, by any running relay. SINK is the name 'hokusai events list' shows."""
    from hokusai_mlflow_plugin.events import sink_states

    if obj.api() is not None:
        raise click.ClickException(
            "Enabling a sink needs the token database: unset HOKUSAI_API_URL and HOKUSAI_API_KEY, "
            "and set HOKUSAI_DATABASE_URL (or --database-url)."
        )
    with obj.sessions().begin() as session:
        done = sink_states.enable(session, sink)
    if done["was_disabled"]:
        text = f"Enabled {sink}: {done['resumed']} held deliveries are due now; a running relay sends them."
    else:
        text = f"{sink} is enabled already: nothing to do."
    emit(done, as_json, text)


@events.command("redeliver")
@click.argument("event_id")
@pass_ctx
@domain_errors
def events_redeliver(obj, event_id):
    """Send EVENT_ID out again to every sink (same webhook-id), now."""
    from hokusai_mlflow_plugin.events import outbox

    if (api := obj.api()) is not None:
        rows = _redeliver_over_api(api, event_id)
        for r in rows:
            click.echo(f"{r['sink']}: {r['status']}" + (f" ({r['last_error']})" if r["last_error"] else ""))
        if not rows or any(r["status"] != "delivered" for r in rows):
            sys.exit(1)
        return
    relay = _relay(obj)
    if not relay.sinks:
        raise click.ClickException("No sink is configured: set HOKUSAI_EVENT_WEBHOOK_URL or HOKUSAI_REDIS_URL.")
    with obj.sessions().begin() as session:
        outbox.reset_for_redelivery(session, event_id)
    relay.deliver_event(event_id)  # sinks configured since the event was first sent get it too
    with obj.sessions()() as session:
        rows = outbox.list_deliveries(session, event_id=event_id)
    for r in rows:
        click.echo(f"{r['sink']}: {r['status']}" + (f" ({r['last_error']})" if r["last_error"] else ""))
    if any(r["status"] != "delivered" for r in rows):
        sys.exit(1)


def _serve_metrics(port: int, relay) -> None:
    """/metrics of this worker: its attempts and latencies, and the outbox's gauges."""
    from prometheus_client import REGISTRY, start_http_server

    from hokusai_mlflow_plugin.events.gauges import OutboxCollector

    REGISTRY.register(OutboxCollector(relay.deliveries.sessions))
    start_http_server(port)
    click.echo(f"Metrics at http://0.0.0.0:{port}/metrics", err=True)


def _api_rows(api, status, limit) -> list[dict]:
    """The API's events as the rows ``events list`` prints: one per (event, sink); an event no
    sink has seen yet is one row of status ``stored``. With a status, only those deliveries."""
    rows = []
    for event in api.events(status=status):
        deliveries = [d for d in event["deliveries"] if not status or d["status"] == status]
        if not event["deliveries"] and not status:
            deliveries = [{"sink": None, "status": "stored", "attempts": 0, "last_error": None}]
        rows += [{"event_id": event["event_id"], "event_type": event["event_type"], **d} for d in deliveries]
        if len(rows) >= limit:
            return rows[:limit]
    return rows


def _redeliver_over_api(api, event_id: str, wait: float = 30.0) -> list[dict]:
    """Redeliver through the API, then wait (up to ``wait`` seconds) for the server's relay."""
    import time

    deliveries = api.redeliver(event_id)["deliveries"]
    deadline = time.monotonic() + wait
    while deliveries and any(d["status"] in ("pending", "failed") for d in deliveries) and time.monotonic() < deadline:
        time.sleep(0.5)
        deliveries = api.event(event_id)["deliveries"]
    return deliveries


@events.command("relay")
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit.")
@click.option("--console", is_flag=True, envvar="HOKUSAI_EVENT_CONSOLE", help="Also print each event (development).")
@click.option("--metrics-port", type=click.IntRange(1, 65535), envvar="HOKUSAI_RELAY_METRICS_PORT", help="Serve Prometheus metrics on this port (all interfaces).")
@pass_ctx
@domain_errors
def events_relay(obj, once, console, metrics_port):
    """Deliver outbox events to the configured sinks (a worker; several may run together)."""
    from hokusai_mlflow_plugin.events import listen

    relay = _relay(obj, console)
    if not relay.sinks:
        raise click.ClickException(
            "No sink is configured: set HOKUSAI_EVENT_WEBHOOK_URL (and its secret), HOKUSAI_REDIS_URL, "
            "or pass --console. Until then the outbox keeps the events."
        )
    if once:
        click.echo(f"Delivered or tried {relay.run_once()} deliveries.")
        return
    stop = stop_on_signals()
    if metrics_port:
        _serve_metrics(metrics_port, relay)
    relay.start()
    listener_stop = None
    if listen.is_postgresql(obj.settings.database_url):
        _, listener_stop = listen.start_listener(obj.settings.database_url, lambda event_id: relay.kick([event_id]))
    click.echo(f"Relaying to {', '.join(relay.sinks)}; Ctrl-C to stop.", err=True)
    stop.wait()
    if listener_stop:
        listener_stop.set()
    relay.stop()


@events.command("watch")
@click.option("--poll", default=1.0, show_default=True, help="Seconds between looks where there is no LISTEN/NOTIFY.")
@pass_ctx
@domain_errors
def events_watch(obj, poll):
    """Print each new outbox event as one JSON line (woken by LISTEN/NOTIFY on PostgreSQL)."""
    from hokusai_mlflow_plugin.events.envelope import envelope_json
    from hokusai_mlflow_plugin.events.listen import EventWatch

    watch = EventWatch(obj.sessions(), obj.settings.database_url, poll)
    click.echo("Watching for events; Ctrl-C to stop.", err=True)
    try:
        for event in watch:
            click.echo(envelope_json(event))
    except KeyboardInterrupt:
        return
    finally:
        watch.close()
