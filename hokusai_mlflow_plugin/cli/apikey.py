"""``hokusai apikey ...``: API keys for the HTTP API and the MLflow gateway."""

from __future__ import annotations

import click

from hokusai_mlflow_plugin.cli.common import domain_errors, emit, pass_ctx, table


@click.group()
def apikey():
    """Create, list and revoke API keys (hk_<key id>_<secret>)."""


@apikey.command("create")
@click.argument("name")
@click.option("--scope", "scope", default="read", show_default=True, help="Comma-separated: read, register, deploy, admin (each includes the ones before it).")
@click.option("--expires-in", help="A lifetime such as 90d, 12h or 30m (default: no expiry).")
@click.option("--user", "user_name", metavar="USER",
              help="The user the key acts for (see 'hokusai user create'). Default: a read or register key acts "
                   "for a user of the key's own name, made if missing; an admin key acts for no user.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def apikey_create(obj, name, scope, expires_in, user_name, as_json):
    """Create key NAME and print it once: it is not stored, and cannot be shown again. The key may do
    what its scopes allow, and only on what its user may reach."""
    from hokusai_mlflow_plugin.auth import keys

    scopes = keys.parse_scopes(scope)
    lifetime = keys.parse_duration(expires_in) if expires_in else None
    with obj.sessions().begin() as session:
        made = keys.create(session, name, scopes, lifetime, user=user_name)
    acts_for = f"user '{made.record['user']}'" if made.record["user"] else "no user (an operator's admin key)"
    text = (
        f"Created API key {made.record['key_id']} '{made.record['name']}' ({', '.join(scopes)}"
        f"{', expires ' + made.record['expires_at'] if made.record['expires_at'] else ''}), acting for {acts_for}.\n"
        f"{made.key}\n"
        "Store it now, in a secret manager or as HOKUSAI_API_KEY / MLFLOW_TRACKING_TOKEN: it is shown only once."
    )
    emit({**made.record, "key": made.key}, as_json, text)


@apikey.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def apikey_list(obj, as_json):
    """List the keys: ids, names, the user each acts for, scopes and last use, never a secret."""
    from hokusai_mlflow_plugin.auth import keys

    with obj.sessions()() as session:
        data = [k.to_dict() for k in keys.list_keys(session)]
    rows = [
        (k["key_id"], k["name"], k["user"] or "-", ",".join(k["scopes"]), k["last_used_at"] or "never",
         "revoked" if k["revoked_at"] else (f"expires {k['expires_at']}" if k["expires_at"] else "active"))
        for k in data
    ]
    emit(data, as_json, table(("KEY ID", "NAME", "USER", "SCOPES", "LAST USED", "STATE"), rows) if rows else "No API keys.")


@apikey.command("revoke")
@click.argument("key_id")
@pass_ctx
@domain_errors
def apikey_revoke(obj, key_id):
    """Revoke KEY_ID: its next request is refused, by the API and by every MLflow gateway."""
    from hokusai_mlflow_plugin.auth.revocation import revoke_everywhere

    revoked = revoke_everywhere(obj.sessions(), key_id)
    click.echo(f"Revoked API key {revoked.key_id} '{revoked.name}'.")
    if revoked.unconfirmed:
        click.echo(f"Warning: {revoked.unconfirmed} of {revoked.gateways} MLflow gateways did not confirm (cut off from the "
                   f"database?); waited {revoked.waited_for_lease:.1f} s for their key lease to run out: they refuse the "
                   "key now, and answer 503 while they cannot read keys.", err=True)
