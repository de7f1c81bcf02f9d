"""``hokusai token ...``: create and inspect tokens."""

from __future__ import annotations

import click

from hokusai_mlflow_plugin.cli.common import NUMBER, domain_errors, emit, pass_ctx, record, token_line


@click.group()
def token():
    """Create and inspect tokens (they normally come from the Hokusai site)."""


@token.command("create")
@click.argument("token_id")
@click.option("--metric", help="The metric the model is judged on, such as auroc.")
@click.option("--baseline", type=NUMBER, help="The value the metric must reach, such as 0.82.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def token_create(obj, token_id, metric, baseline, as_json):
    """Create token TOKEN_ID in draft status."""
    from hokusai_mlflow_plugin.registration import tokens

    with obj.sessions().begin() as session:
        t = tokens.create(session, token_id, metric, baseline)
        data = t.to_dict()
    emit(data, as_json, f"Created token {data['token_id']} (draft)")


@token.command("show")
@click.argument("token_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def token_show(obj, token_id, as_json):
    """Show one token."""
    from hokusai_mlflow_plugin.registration import tokens

    if (api := obj.api()) is not None:
        data = {k: v for k, v in api.token(token_id).items() if k != "registrations"}
        emit(data, as_json, token_line(record(data)))
        return
    with obj.sessions()() as session:
        t = tokens.get(session, token_id)
        data = t.to_dict()
        line = token_line(t)
    emit(data, as_json, line)


@token.command("list")
@click.option("--status", help="Only tokens in this status (draft, registered, deployed, archived).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def token_list(obj, status, as_json):
    """List tokens."""
    from hokusai_mlflow_plugin.registration import tokens

    if (api := obj.api()) is not None:
        tokens.check_status(status)
        data = list(api.tokens(status=status))
        emit(data, as_json, "\n".join(token_line(record(t)) for t in data) or "No tokens.")
        return
    with obj.sessions()() as session:
        found = tokens.list_tokens(session, status)
        data = [t.to_dict() for t in found]
        lines = "\n".join(token_line(t) for t in found) or "No tokens."
    emit(data, as_json, lines)
