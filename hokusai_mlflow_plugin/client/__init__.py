"""The Python client of the Hokusai HTTP API (``/api/v1``)::

    from hokusai_mlflow_plugin.client import HokusaiClient

    hokusai = HokusaiClient("https://hokusai.example", api_key)  # hk_<key id>_<secret>
    decision = hokusai.register("XRAY", "models:/m-...")       # {"status": "registered", ...}

Failures are typed (``TokenNotFound``, ``TokenNotDraft`` and, for the token's later life, its base
``TokenConflict``, ``Unauthorized``, ``Forbidden``,
``ValidationFailed``, ``ApiUnavailable``), each a ``HokusaiError`` whose message is the API's
``detail``. Reads are retried on ``503`` as its ``Retry-After`` says (urllib3's ``Retry``); a
register is not, since a retry could create a second model version.
"""

from hokusai_mlflow_plugin.client.errors import (
    ApiError,
    ApiUnavailable,
    EventNotFound,
    Forbidden,
    NotFound,
    TokenConflict,
    TokenNotDraft,
    TokenNotFound,
    Unauthorized,
    ValidationFailed,
)
from hokusai_mlflow_plugin.client.http import HokusaiClient

__all__ = [
    "ApiError", "ApiUnavailable", "EventNotFound", "Forbidden", "HokusaiClient", "NotFound", "TokenConflict", "TokenNotDraft",
    "TokenNotFound", "Unauthorized", "ValidationFailed",
]
