"""``mlflow.run_context_provider`` plugin: tag runs and LoggedModels with their Hokusai token.

MLflow loads this module inside every ``import mlflow``: it imports only the standard library (not
even mlflow: a module that imports mlflow while mlflow is loading its entry points is found half
initialised, so a user who imported this module first would get no provider), its constructor does
nothing, and ``tags()`` never raises. A bad value is left out, with one warning per variable and
value, so the user's run goes on and the receiver rejects with a reason.

The provider implements MLflow's ``RunContextProvider`` interface (``in_context()``, ``tags()``),
which MLflow's registry uses by duck typing.
"""

from __future__ import annotations

import logging
import os

from hokusai_mlflow_plugin.core.tags import (
    BASELINE,
    BASELINE_FORM,
    ENV_BASELINE,
    ENV_METRIC,
    ENV_TOKEN_ID,
    METRIC,
    METRIC_FORM,
    TOKEN_ID,
    TOKEN_ID_FORM,
    normalize_metric,
    normalize_token_id,
    parse_baseline,
)

_logger = logging.getLogger(__name__)

# (variable, value) pairs already warned about in this process: one warning each, not one per run.
_warned: set[tuple[str, str]] = set()
# The last environment seen and its tags: tags() runs for every run and LoggedModel.
_last: list = [None, {}]


def reset() -> None:
    """Forget the warnings given and the tags cached (for long-lived processes and tests)."""
    _warned.clear()
    _last[:] = [None, {}]


def _warn_once(variable: str, value: str, form: str) -> None:
    if (variable, value) in _warned:
        return
    _warned.add((variable, value))
    _logger.warning(
        "Hokusai: ignoring %s=%r: expected %s. The tag is left out of this run.",
        variable,
        value,
        form,
    )


def context_tags(environ=os.environ) -> dict[str, str]:
    """The ``hokusai_*`` tags that the environment asks for, bad values left out."""
    result: dict[str, str] = {}
    raw_token = environ.get(ENV_TOKEN_ID)
    if raw_token is None:
        return result
    token = normalize_token_id(raw_token)
    if token is None:
        _warn_once(ENV_TOKEN_ID, raw_token, TOKEN_ID_FORM)
    else:
        result[TOKEN_ID] = token

    raw_metric = environ.get(ENV_METRIC)
    if raw_metric is not None:
        metric = normalize_metric(raw_metric)
        if metric is None:
            _warn_once(ENV_METRIC, raw_metric, METRIC_FORM)
        else:
            result[METRIC] = metric

    raw_baseline = environ.get(ENV_BASELINE)
    if raw_baseline is not None:
        if parse_baseline(raw_baseline) is None:
            _warn_once(ENV_BASELINE, raw_baseline, BASELINE_FORM)
        else:
            result[BASELINE] = raw_baseline.strip()
    return result


class HokusaiRunContextProvider:
    """Adds ``hokusai_token_id`` (and ``hokusai_metric``, ``hokusai_baseline``) when
    ``HOKUSAI_TOKEN_ID`` is set."""

    def __init__(self):
        pass  # nothing that can fail: an exception here would break ``import mlflow``

    def in_context(self) -> bool:
        return ENV_TOKEN_ID in os.environ

    def tags(self) -> dict[str, str]:
        try:
            environ = os.environ
            key = (
                environ.get(ENV_TOKEN_ID),
                environ.get(ENV_METRIC),
                environ.get(ENV_BASELINE),
            )
            if key != _last[0]:
                _last[:] = [key, context_tags(environ)]
            return dict(_last[1])
        except Exception:  # never break the user's run
            _logger.warning("Hokusai: could not compute run tags", exc_info=True)
            return {}
