"""``hokusai mlflow ...``: who besides the owning team reaches an MLflow experiment or registered
model through the gateway (issue 19). On the database, as ``apikey`` and ``team``: the operator
acts as an admin. Over HTTP the same is ``/api/v1/mlflow/.../shares``, where the owner shares.
``tag-owners`` puts the registered models' owner tags in MLflow right from the recorded owners."""

from __future__ import annotations

import click

from hokusai_mlflow_plugin.cli.common import domain_errors, emit, pass_ctx, table

KINDS = {"experiment": "experiment", "model": "registered_model"}
OBJECT_HELP = ("KIND is 'experiment' or 'model'; OBJECT is the experiment's id (the number MLflow shows, not its "
               "name) or the registered model's name.")


@click.group()
def mlflow():
    """Share MLflow experiments and registered models with other teams."""


def _operator():
    import getpass

    from hokusai_mlflow_plugin.registration.lifecycle import operator

    try:
        return operator(getpass.getuser())
    except (KeyError, OSError):  # no name for the OS user (a container's uid)
        return operator("")


def _text(view: dict, said: str) -> str:
    what = f"experiment {view['object_id']}" if view["kind"] == "experiment" else f"registered model '{view['object_id']}'"
    rows = [(s["name"], s["kind"], s["permission"]) for s in view["shares"]]
    shares = table(("SHARED WITH", "KIND", "PERMISSION"), rows) if rows else "Shared with nobody."
    return f"{said}{what}, owned by {view['owner'] or 'nobody (admins only)'}.\n{shares}"


@mlflow.command("share", help="Share OBJECT with TEAM (a team, or a user) through the MLflow gateway. " + OBJECT_HELP)
@click.argument("kind", type=click.Choice(sorted(KINDS)))
@click.argument("object_id", metavar="OBJECT")
@click.argument("name", metavar="TEAM")
@click.option("--permission", type=click.Choice(["read", "edit"]), default="read", show_default=True,
              help="read: see it (gets, searches, downloads); edit: also write it. Only its owner shares it on.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def mlflow_share(obj, kind, object_id, name, permission, as_json):
    from hokusai_mlflow_plugin.auth import mlflow_objects

    with obj.sessions().begin() as session:
        view = mlflow_objects.share_named(session, _operator(), KINDS[kind], object_id, name, permission)
    emit(view, as_json, _text(view, f"Shared with '{name}' ({permission}): "))


@mlflow.command("unshare", help="Take TEAM's share of OBJECT away. " + OBJECT_HELP)
@click.argument("kind", type=click.Choice(sorted(KINDS)))
@click.argument("object_id", metavar="OBJECT")
@click.argument("name", metavar="TEAM")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def mlflow_unshare(obj, kind, object_id, name, as_json):
    from hokusai_mlflow_plugin.auth import mlflow_objects

    with obj.sessions().begin() as session:
        view = mlflow_objects.share_named(session, _operator(), KINDS[kind], object_id, name, None)
    emit(view, as_json, _text(view, f"No share for '{name}' now: "))


@mlflow.command("shares", help="Show OBJECT's owner and shares. " + OBJECT_HELP)
@click.argument("kind", type=click.Choice(sorted(KINDS)))
@click.argument("object_id", metavar="OBJECT")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def mlflow_shares(obj, kind, object_id, as_json):
    from hokusai_mlflow_plugin.auth import mlflow_objects

    with obj.sessions()() as session:
        view = mlflow_objects.share_view(session, _operator(), KINDS[kind], object_id)
    emit(view, as_json, _text(view, ""))


@mlflow.command("tag-owners")
@click.option("--dry-run", is_flag=True, help="Say which models would be tagged; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def mlflow_tag_owners(obj, dry_run, as_json):
    """Tag each registered model with its recorded owner (hokusai_owner) where MLflow lacks the tag.

    Its owner's searches through the gateway are narrowed by that tag: a model made before the tags
    were written, or whose tag MLflow refused, is missed by them until it is tagged. Prompts too.
    Talks to MLflow itself, not the gateway, which lets no key set the tag and shows a key only its
    own models: HOKUSAI_MLFLOW_INTERNAL_URI, else MLFLOW_TRACKING_URI. One workspace (MLflow's default).
    """
    from hokusai_mlflow_plugin.mlflow_io import owner_tags

    done = owner_tags.put_right(obj.system_client(), obj.sessions(), dry_run=dry_run)
    verb = "would tag" if dry_run else "tagged"
    lines = [f"{done['checked']} registered model(s) with a recorded owner in MLflow; {verb} {len(done['tagged'])}"
             + (f": {', '.join(done['tagged'])}." if done["tagged"] else ".")]
    if done["missing"]:
        lines.append(f"Not found in MLflow (deleted there, or in another workspace; their owner rows left alone): "
                     f"{', '.join(done['missing'])}.")
    if done["stray"]:
        lines.append(f"Tagged in MLflow with no recorded owner (made there directly; the tag's owner sees them "
                     f"listed in its searches, not opened): {', '.join(done['stray'])}. Delete the tag in MLflow "
                     "if they are not that owner's.")
    emit(done, as_json, "\n".join(lines))
