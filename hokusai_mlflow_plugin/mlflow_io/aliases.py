"""Where a token's version serves, shown in MLflow as an alias of the version (the deployment's
target): MLflow keeps an alias on one version of a registered model at a time, so deploying a
newer version to the same target moves it."""

from __future__ import annotations

import logging

from hokusai_mlflow_plugin.mlflow_io.client import MlflowNotFound, call

_logger = logging.getLogger(__name__)


def show_deployment(client, model_name: str, version: str, target: str) -> bool:
    """Point alias ``target`` of ``model_name`` at ``version``. Failure is logged, not raised: the
    deployment is already committed; False tells the caller to say so."""
    try:
        call(client.set_registered_model_alias, model_name, target, str(version))
        return True
    except Exception as e:
        _logger.warning("Could not set alias %s on %s version %s: %s", target, model_name, version, e)
        return False


def end_deployment(client, model_name: str, version: str, target: str) -> bool:
    """Remove alias ``target``, if it still names ``version`` (a later deployment may have moved it)."""
    try:
        try:
            current = call(client.get_model_version_by_alias, model_name, target)
        except MlflowNotFound:
            return True
        if str(current.version) == str(version):
            call(client.delete_registered_model_alias, model_name, target)
        return True
    except Exception as e:
        _logger.warning("Could not remove alias %s of %s version %s: %s", target, model_name, version, e)
        return False
