"""The run and the LoggedModel a model version's source names, read as MLflow reads them: what
provenance checks beside the version's declared run id and model id."""

from __future__ import annotations

import pytest

from hokusai_mlflow_plugin.core import tags

RUN = "0123456789abcdef0123456789abcdef"
OTHER = "fedcba9876543210fedcba9876543210"
MODEL = "m-" + "a1b2c3d4" * 4


@pytest.mark.parametrize("source, run_id, model_id", [
    # what log_model and register_model write
    (f"runs:/{RUN}/model", RUN, None),
    (f"runs:/{RUN}", RUN, None),
    (f"runs:/{RUN}/", RUN, None),
    (f"runs:/{RUN}/deep/path/model", RUN, None),
    (f"mlflow-artifacts:/1/{RUN}/artifacts/model", RUN, None),
    (f"mlflow-artifacts:/{RUN}/artifacts", RUN, None),
    (f"file:///tmp/mlruns/1/{RUN}/artifacts/m", RUN, None),
    (f"/tmp/mlruns/1/{RUN}/artifacts/m", RUN, None),
    (f"s3://b/1/{RUN}/artifacts/model", RUN, None),
    (f"dbfs:/databricks/mlflow-tracking/1/{RUN}/artifacts/model", RUN, None),
    (f"http://host:5000/api/2.0/mlflow-artifacts/artifacts/1/{RUN}/artifacts/model", RUN, None),
    (f"s3://b/1/models/{MODEL}/artifacts", None, MODEL),
    (f"s3://b/1/models/{MODEL}/artifacts/", None, MODEL),
    (f"mlflow-artifacts:/1/models/{MODEL}/artifacts/model", None, MODEL),
    (f"file:///tmp/mlruns/1/models/{MODEL}/artifacts", None, MODEL),
    (f"models:/{MODEL}", None, MODEL),
    (f"models:/{MODEL}/", None, MODEL),
    # names neither: a registered model's version, an alias, a plain path, nothing
    ("models:/name/1", None, None),
    ("models:/name@champion", None, None),
    ("/home/me/model", None, None),
    ("s3://bucket/models/model.pkl", None, None),
    ("", None, None),
    (None, None, None),
    # looks like an id but is not one: too short, too long, upper case (MLflow's ids are lower-case hex)
    (f"runs:/{RUN[:-1]}/model", None, None),
    (f"runs:/{RUN}0/model", None, None),
    (f"s3://b/1/{RUN}0/artifacts/model", None, None),
    (f"s3://b/1/models/{MODEL}0/artifacts", None, None),
    (f"s3://b/1/{RUN}/artifactsX/model", None, None),
    # a runs:/ source names its own run, whatever run directory its artifact path holds
    (f"runs:/{RUN}/artifacts/1/{OTHER}/artifacts/model", RUN, None),
    # MLflow parses the scheme as a URL: any case, and an empty authority, are the same runs:/ URI
    (f"RUNS:/{RUN}/model", RUN, None),
    (f"Runs:/{RUN}/model", RUN, None),
    (f"runs:///{RUN}/model", RUN, None),
    (f" runs:/{RUN}/model", RUN, None),  # urllib drops leading blanks
    (f"MODELS:/{MODEL}", None, MODEL),
])
def test_the_run_and_logged_model_a_source_names(source, run_id, model_id):
    assert (tags.source_run_id(source), tags.source_logged_model_id(source)) == (run_id, model_id)


@pytest.mark.parametrize("source, expected", [
    (f"models:/{MODEL}", MODEL),
    (f"models:/{MODEL}/", MODEL),
    ("models:/name/1", None),
    (f"models:/{MODEL}/extra", None),
    (f"runs:/{RUN}/model", None),
    (None, None),
])
def test_a_logged_model_source_is_models_m_and_nothing_else(source, expected):
    assert tags.logged_model_id(source) == expected
