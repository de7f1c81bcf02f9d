"""``hokusai token ...``: create and inspect tokens; give them an owner and grants (database only:
that is an operator's work)."""

from __future__ import annotations

import click

from hokusai_mlflow_plugin.cli.common import NUMBER, domain_errors, emit, pass_ctx, record, table, token_line


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


# -- the token's life after its registration: deployed, archived, and its history ---------------------
# Over the API the server moves the alias in MLflow and wakes its relay. On the database the command
# is an operator's (admin, named by the OS user in the history); it moves the alias itself after the
# commit, and kicks no relay: the relay workers find the events (NOTIFY on PostgreSQL, polling otherwise).


def os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # a container's uid with no passwd entry and no LOGNAME/USER
        return "unknown user"


def changed(before: dict, after: dict) -> bool:
    """Whether a lifecycle call moved the token (the same call again leaves status and target)."""
    return (before["status"], before.get("deployment_target")) != (after["status"], after.get("deployment_target"))


def without_registrations(data: dict) -> dict:
    return {k: v for k, v in data.items() if k != "registrations"}


def on_database(obj, token_id: str, act, needs_mlflow):
    """One lifecycle change on the database, as the operator: ``act(session, caller)`` in one
    transaction. Returns the token before and after it (JSON), and an MLflow client when
    ``needs_mlflow(before)``: it is made before any write, so a missing MLFLOW_TRACKING_URI
    changes nothing."""
    from hokusai_mlflow_plugin.auth import ownership
    from hokusai_mlflow_plugin.registration import lifecycle

    caller = lifecycle.operator(os_user())
    with obj.sessions().begin() as session:
        before = ownership.token_for(session, caller, token_id).to_dict()
        mlflow = obj.service().client if needs_mlflow(before) else None
        after = act(session, caller).token.to_dict()
    return before, after, mlflow


def was_deployed(before: dict) -> bool:
    return before["status"] == "deployed"


def end_alias(mlflow, before: dict, after: dict) -> bool | None:
    """Take the target's alias off the version that no longer serves there (unless a later
    deployment moved it); None when nothing was to be done."""
    from hokusai_mlflow_plugin.mlflow_io import aliases
    from hokusai_mlflow_plugin.mlflow_io.client import failing_fast

    if mlflow is None or not changed(before, after):
        return None
    with failing_fast():
        return aliases.end_deployment(mlflow, before["model_name"], before["model_version"], before["deployment_target"])


def alias_note(data: dict, alias_set: bool | None, setting: bool) -> str:
    if alias_set is None or alias_set:
        return ""
    name, version, target = data["model_name"], data["model_version"], data.get("deployment_target")
    if setting:
        return f" MLflow did not take alias '{target}' on {name} v{version}: run the same command again to set it."
    return " MLflow did not answer: remove the version's alias by hand if it still shows."


@token.command("deploy")
@click.argument("token_id")
@click.option("--model", "model_name", required=True, help="The token's registered model.")
@click.option("--version", required=True, help="The token's registered version.")
@click.option("--target", required=True, help="Where it serves, such as production; MLflow shows it as the version's alias.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def token_deploy(obj, token_id, model_name, version, target, as_json):
    """Say that TOKEN_ID's registered version is deployed at TARGET (the same call again changes nothing)."""
    from hokusai_mlflow_plugin.mlflow_io import aliases
    from hokusai_mlflow_plugin.mlflow_io.client import failing_fast
    from hokusai_mlflow_plugin.registration import lifecycle

    if (api := obj.api()) is not None:
        before = without_registrations(api.token(token_id))
        data = api.deploy(token_id, model_name, version, target)
    else:
        before, data, mlflow = on_database(
            obj, token_id, lambda s, caller: lifecycle.deploy(s, caller, token_id, model_name, version, target),
            needs_mlflow=lambda before: before["status"] in ("registered", "deployed"))  # others: the domain says why not
        with failing_fast():  # also when nothing changed, as the API: a second call sets an alias MLflow missed
            alias_set = aliases.show_deployment(mlflow, data["model_name"], data["model_version"], data["deployment_target"])
        data = {**data, "alias_set": alias_set}
    if changed(before, data):
        text = f"Token {data['token_id']} is deployed: {data['model_name']} v{data['model_version']} serves at {data['deployment_target']}."
    else:
        text = f"{data['token_id']} is deployed to {data['deployment_target']} already: nothing changed."
    emit(data, as_json, text + alias_note(data, data["alias_set"], setting=True))


@token.command("undeploy")
@click.argument("token_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def token_undeploy(obj, token_id, as_json):
    """End TOKEN_ID's deployment: it is registered again, and its version loses the target's alias."""
    from hokusai_mlflow_plugin.registration import lifecycle

    alias_ended = None
    if (api := obj.api()) is not None:
        before = without_registrations(api.token(token_id))
        data = api.undeploy(token_id)
    else:
        before, data, mlflow = on_database(obj, token_id, lambda s, caller: lifecycle.undeploy(s, caller, token_id),
                                           needs_mlflow=was_deployed)
        alias_ended = end_alias(mlflow, before, data)
    if changed(before, data):
        text = (f"Token {data['token_id']} is registered again: {data['model_name']} v{data['model_version']} "
                f"no longer serves at {before['deployment_target']}.")
    else:
        text = f"{data['token_id']} is not deployed: nothing changed."
    emit(data, as_json, text + alias_note(before, alias_ended, setting=False))


@token.command("archive")
@click.argument("token_id")
@click.option("--reason", metavar="TEXT", help="Why, for the token's history.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def token_archive(obj, token_id, reason, as_json):
    """Archive TOKEN_ID for good: it takes no model and is never un-archived (make a new token instead)."""
    from hokusai_mlflow_plugin.registration import lifecycle

    alias_ended = None
    if (api := obj.api()) is not None:
        before = without_registrations(api.token(token_id))
        data = api.archive(token_id, reason)
    else:
        before, data, mlflow = on_database(obj, token_id, lambda s, caller: lifecycle.archive(s, caller, token_id, reason),
                                           needs_mlflow=was_deployed)
        alias_ended = end_alias(mlflow, before, data)
    if changed(before, data):
        text = (f"Token {data['token_id']} is archived (it was {before['status']}): it takes no model from now on; "
                "make a new token for a new model.")
    else:
        text = f"{data['token_id']} is archived already: nothing changed."
    emit(data, as_json, text + alias_note(before, alias_ended, setting=False))


def history_text(token_id: str, entries: list[dict]) -> str:
    if not entries:
        return f"Token {token_id} has not changed status yet: it is a draft."
    rows = [(f"{e['at'][:19].replace('T', ' ')} UTC" if e["at"] else "-", f"{e['from']} -> {e['to']}", e["actor"],
             f"{e['model_name']} v{e['model_version']}" if e.get("model_name") else "-",
             e.get("target") or "-", e.get("reason") or "-") for e in entries]
    return table(("WHEN", "CHANGE", "WHO", "VERSION", "TARGET", "WHY"), rows)


@token.command("history")
@click.argument("token_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def token_history(obj, token_id, as_json):
    """Every status change of TOKEN_ID, oldest first: when, who, why, the version and the target."""
    from hokusai_mlflow_plugin.registration import lifecycle

    if (api := obj.api()) is not None:
        entries = api.history(token_id)
    else:
        with obj.sessions()() as session:
            entries = lifecycle.history(session, lifecycle.operator(os_user()), token_id)
    emit(entries, as_json, history_text(token_id.strip().upper(), entries))
