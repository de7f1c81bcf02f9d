"""``hokusai demo``: one real registration end to end, then one real rejection.

A scikit-learn model is trained on scikit-learn's bundled breast-cancer data set; its auroc on a
held-out split is computed, logged with plain MLflow and judged against the token's baseline.
Nothing is faked: the value the gate reads is the one this training logged.
"""

from __future__ import annotations

import json
import uuid
from typing import Callable



def train_and_log(tracking_uri: str, token_id: str, model_name: str) -> tuple[str, str, float]:
    """Train, log auroc and the model with plain MLflow, with HOKUSAI_TOKEN_ID set, as a user's
    training script does. Returns (run id, version, auroc)."""
    import mlflow
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from hokusai_mlflow_plugin.mlflow_io.client import mlflow_env
    from hokusai_mlflow_plugin.plugins import run_context

    run_context.reset()
    try:
        with mlflow_env(HOKUSAI_TOKEN_ID=token_id, MLFLOW_TRACKING_URI=tracking_uri):
            mlflow.set_tracking_uri(tracking_uri)
            mlflow.set_experiment("hokusai-demo")
            X, y = load_breast_cancer(return_X_y=True)
            X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=7, stratify=y)
            model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X_train, y_train)
            auroc = float(roc_auc_score(y_test, model.predict_proba(X_test)[:, 1]))
            with mlflow.start_run(run_name=f"demo-{token_id.lower()}") as run:
                mlflow.log_param("model", "logistic_regression")
                mlflow.log_metric("auroc", auroc)
                info = mlflow.sklearn.log_model(
                    model, name="model", registered_model_name=model_name, pip_requirements=["scikit-learn"]
                )
            return run.info.run_id, str(info.registered_model_version), auroc
    finally:
        run_context.reset()


def run(sessions, tracking_uri: str, say: Callable[[str], None]) -> bool:
    """The demo's story; True when every step happened as it should."""
    from hokusai_mlflow_plugin.events import outbox
    from hokusai_mlflow_plugin.events.envelope import TOKEN_READY, envelope
    from hokusai_mlflow_plugin.registration import tokens
    from hokusai_mlflow_plugin.registration.records import wait_for_decision

    suffix = uuid.uuid4().hex[:6].upper()
    good, strict = f"DEMO-{suffix}", f"DEMO-{suffix}-STRICT"
    with sessions.begin() as session:
        tokens.create(session, good, "auroc", 0.90)
        tokens.create(session, strict, "auroc", 0.9999)
    say(f"Created token {good} (auroc >= 0.90) and token {strict} (auroc >= 0.9999), both in draft.")

    model_name = f"hokusai-demo-{suffix.lower()}"
    say(f"Training a logistic regression with HOKUSAI_TOKEN_ID={good} and logging it to MLflow ...")
    run_id, version, auroc = train_and_log(tracking_uri, good, model_name)
    say(f"Logged auroc {auroc:.4f} on run {run_id}; MLflow created {model_name} version {version}.")
    reg = wait_for_decision(sessions, model_name, version, timeout=90)
    if reg is None or reg.outcome != "registered":
        say(f"FAILED: expected {good} to be registered; got {reg.outcome if reg else 'no decision'}: {reg.reason if reg else ''}")
        return False
    with sessions() as session:
        token = tokens.get(session, good)
        events = outbox.list_events(session, event_type=TOKEN_READY, token_id=good)
    say(f"Token {good} is {token.status}: {reg.reason}")
    if token.status != "registered" or len(events) != 1:
        say("FAILED: the token is not registered with exactly one token_ready_for_deploy event.")
        return False
    say("Event emitted:")
    say(json.dumps(envelope(events[0]), indent=2))

    say(f"Now the same kind of model for token {strict}, whose baseline it cannot reach ...")
    _, version2, auroc2 = train_and_log(tracking_uri, strict, model_name)
    reg2 = wait_for_decision(sessions, model_name, version2, timeout=90)
    with sessions() as session:
        strict_status = tokens.get(session, strict).status
    if reg2 is None or reg2.outcome != "rejected" or strict_status != "draft":
        say(f"FAILED: expected a rejection; got {reg2.outcome if reg2 else 'no decision'}.")
        return False
    say(f"Version {version2} was rejected and {strict} stays in draft: {reg2.reason}")
    say("The reason is also on the model version in the MLflow UI (tag hokusai_reason).")
    return True
