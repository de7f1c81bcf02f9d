"""``hokusai token ...``: create and inspect tokens; give them an owner and grants (database only:
that is an operator's work)."""

from __future__ import annotations

import click

from hokusai_mlflow_plugin.cli.common import NUMBER, domain_errors, emit, pass_ctx, record, token_line


@click.group()
def token():
    """Create and inspect tokens (they normally come from the Hokusai site), and say who reaches them."""


def owner_text(data: dict, short: bool = False) -> str:
    """Who owns a token, from its JSON (the database's or the API's)."""
    if not data.get("owner"):
        return "no owner" if short else "owner: none (only admin keys reach it)"
    return f"owner{'' if short else ':'} {data.get('owner_kind') or 'user or team'} '{data['owner']}'"


def grants_text(grants: list[dict]) -> str:
    if not grants:
        return "grants: none"
    return "grants: " + ", ".join(f"{g['kind']} '{g['name']}' {g['permission']}" for g in grants)


def detail(session, token_id: str) -> dict:
    """A token's JSON with its grants, as ``token show --json`` prints it."""
    from hokusai_mlflow_plugin.registration import tokens

    t = tokens.get(session, token_id)
    return {**t.to_dict(), "grants": tokens.grants(session, t.token_id)}


@token.command("create")
@click.argument("token_id")
@click.option("--metric", help="The metric the model is judged on, such as auroc.")
@click.option("--baseline", type=NUMBER, help="The value the metric must reach, such as 0.82.")
@click.option("--owner", metavar="NAME", help="The user or team that owns it (default: none, only admin keys reach it).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def token_create(obj, token_id, metric, baseline, owner, as_json):
    """Create token TOKEN_ID in draft status."""
    from hokusai_mlflow_plugin.registration import tokens

    with obj.sessions().begin() as session:
        t = tokens.create(session, token_id, metric, baseline, owner=owner)
        data = t.to_dict()
    owned = f", owned by {data['owner_kind']} '{data['owner']}'" if data["owner"] else ""
    emit(data, as_json, f"Created token {data['token_id']} (draft){owned}")


@token.command("show")
@click.argument("token_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def token_show(obj, token_id, as_json):
    """Show one token, its owner and its grants."""
    if (api := obj.api()) is not None:
        data = {k: v for k, v in api.token(token_id).items() if k != "registrations"}
    else:
        with obj.sessions()() as session:
            data = detail(session, token_id)
    lines = [token_line(record(data)), owner_text(data)]
    if "grants" in data:
        lines.append(grants_text(data["grants"]))
    emit(data, as_json, "\n".join(lines))


@token.command("list")
@click.option("--status", help="Only tokens in this status (draft, registered, deployed, archived).")
@click.option("--unowned", is_flag=True, help="Only tokens with no owner (reached by admin keys alone).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def token_list(obj, status, unowned, as_json):
    """List tokens, each with its owner."""
    from hokusai_mlflow_plugin.registration import tokens

    if (api := obj.api()) is not None:
        tokens.check_status(status)
        data = list(api.tokens(status=status, unowned=True) if unowned else api.tokens(status=status))
    else:
        with obj.sessions()() as session:
            data = [t.to_dict() for t in tokens.list_tokens(session, status, unowned=unowned)]
    lines = "\n".join(f"{token_line(record(t))}  {owner_text(t, short=True)}" for t in data)
    emit(data, as_json, lines or ("No tokens without an owner." if unowned else "No tokens."))


@token.command("set-owner")
@click.argument("token_id")
@click.argument("name", required=False)
@click.option("--none", "no_owner", is_flag=True, help="Take the owner away instead: only admin keys reach the token then.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def token_set_owner(obj, token_id, name, no_owner, as_json):
    """Give TOKEN_ID to the user or team NAME (its members then reach it), or to nobody with --none."""
    from hokusai_mlflow_plugin.registration import tokens

    if bool(name) == no_owner:
        raise click.UsageError("Give either the new owner's NAME or --none, not both and not neither.")
    with obj.sessions().begin() as session:
        tokens.set_owner(session, token_id, None if no_owner else name)
        data = detail(session, token_id)
    if data["owner"]:
        text = f"Token {data['token_id']} is owned by {data['owner_kind']} '{data['owner']}' now."
    else:
        text = f"Token {data['token_id']} has no owner now: only admin keys reach it."
    emit(data, as_json, text)


@token.command("grant")
@click.argument("token_id")
@click.argument("name")
@click.option("--permission", type=click.Choice(["read", "register"]), required=True,
              help="read: see the token and its registrations; register: also register models for it.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def token_grant(obj, token_id, name, permission, as_json):
    """Give the user or team NAME a permission on TOKEN_ID (replacing any it had)."""
    from hokusai_mlflow_plugin.registration import tokens

    with obj.sessions().begin() as session:
        tokens.grant(session, token_id, name, permission)
        data = detail(session, token_id)
    [given] = [g for g in data["grants"] if g["name"] == name.strip()]
    emit(data, as_json, f"Granted {permission} on token {data['token_id']} to {given['kind']} '{given['name']}'.")


@token.command("revoke-grant")
@click.argument("token_id")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def token_revoke_grant(obj, token_id, name, as_json):
    """Take back the grant of the user or team NAME on TOKEN_ID (an owner keeps its rights)."""
    from hokusai_mlflow_plugin.registration import tokens

    with obj.sessions().begin() as session:
        tokens.revoke_grant(session, token_id, name)
        data = detail(session, token_id)
    emit(data, as_json, f"Revoked the grant of '{name.strip()}' on token {data['token_id']}.")
