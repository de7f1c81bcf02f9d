"""The console's actions (admin scope): redeliver an event or every dead delivery, and create
(for a user), list and revoke API keys. Each is a POST with a CSRF token, in one transaction."""

from __future__ import annotations

from flask import current_app, flash, g, redirect, render_template, request, url_for

from hokusai_mlflow_plugin.auth import keys, principals
from hokusai_mlflow_plugin.auth.revocation import revoke_everywhere
from hokusai_mlflow_plugin.db.models import DEAD, utcnow
from hokusai_mlflow_plugin.events import outbox
from webhook_app.console.blueprint import bp
from webhook_app.console.formats import parse_time
from webhook_app.console.pages import sessions
from webhook_app.access import OPERATOR
from webhook_app.console.signin import needs


def kick(event_ids=None) -> None:
    """Wake this process's relay, if it runs one; otherwise the relay workers find the rows due."""
    relay = current_app.extensions.get("hokusai_relay")
    if relay is not None:
        relay.ensure_started()
        relay.kick(event_ids)


@bp.post("/events/<event_id>/redeliver")
@needs(keys.ADMIN, OPERATOR)
def redeliver(event_id: str):
    with sessions().begin() as s:
        count = outbox.reset_for_redelivery(s, event_id)
    kick([event_id])
    flash(f"Event {event_id} is queued for redelivery to {count} sink{'' if count == 1 else 's'}." if count
          else f"Event {event_id} has no delivery yet: the relay sends it when it next runs.", "ok")
    return redirect(url_for("console.event_detail", event_id=event_id))


@bp.route("/events/redeliver-dead", methods=["GET", "POST"])
@needs(keys.ADMIN, OPERATOR)
def redeliver_dead():
    error, status = None, 200
    if request.method == "POST":
        if request.form.get("confirm") == "yes":
            with sessions().begin() as s:
                count = outbox.reset_all_for_redelivery(s, DEAD)
            if count:
                kick()
            flash(f"{count} dead deliver{'y is' if count == 1 else 'ies are'} queued for redelivery.", "ok")
            return redirect(url_for("console.event_list", status="pending"))
        error, status = "Tick the box to confirm, then press the button again.", 400
    with sessions()() as s:
        dead = outbox.outbox_health(s)["dead"]
    return render_template("console/redeliver_dead.html", dead=dead, error=error), status


@bp.get("/keys")
@needs(keys.ADMIN, OPERATOR)
def key_list():
    return _keys_page()


@bp.post("/keys")
@needs(keys.ADMIN, OPERATOR)
def key_create():
    form = request.form
    try:
        scopes = keys.parse_scopes(",".join(form.getlist("scope")))
        lifetime = keys.parse_duration(form["expires"]) if form.get("expires", "").strip() else None
        with sessions().begin() as s:
            # Without a user, as 'hokusai apikey create': a read or register key acts for a user
            # of its own name, an admin key for none.
            made = keys.create(s, form.get("name", ""), scopes, lifetime, user=form.get("user", "").strip() or None)
    except (keys.ApiKeyError, principals.PrincipalError) as e:
        return _keys_page(error=str(e), form=form, status=400)
    # Shown in this answer only: the key is never put in the session, a flash or a log.
    return _keys_page(new_key=made.key, new_record=made.record, status=201)


@bp.post("/keys/<key_id>/revoke")
@needs(keys.ADMIN, OPERATOR)
def key_revoke(key_id: str):
    name = revoke_everywhere(sessions(), key_id).name  # when it returns, every gateway refuses the key
    own = key_id.strip().lower() == g.caller.key_id
    flash(f"Key {key_id} ({name}) is revoked" + (": it signed this session in, so sign in with another key." if own else "."), "ok")
    return redirect(url_for("console.key_list"))


def _keys_page(error=None, form=None, new_key=None, new_record=None, status=200):
    now = utcnow()
    with sessions()() as s:
        rows = [k.to_dict() for k in keys.list_keys(s, limit=500)]
        users = [u["name"] for u in principals.list_users(s, limit=500)]
    for row in rows:
        expired = row["expires_at"] is not None and parse_time(row["expires_at"]) <= now
        row["state"] = "revoked" if row["revoked_at"] else "expired" if expired else "active"
    return render_template("console/keys.html", keys=rows, error=error, form=form or {}, new_key=new_key,
                           new_record=new_record, scopes=keys.SCOPES, users=users), status
