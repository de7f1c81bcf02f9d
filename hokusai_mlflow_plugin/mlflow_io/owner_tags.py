"""The ``hokusai_owner`` tag of registered models, put right from the recorded owners.

The gateway and the API write a model's owner row and then its tag in MLflow (``auth.mlflow_objects``:
the tag narrows its owner's searches to one short filter). A model whose tag is missing (made before
the tags were written, or MLflow refused the tag, or the process ended between the two writes) is
missed by its owner's narrowed searches until it is tagged; no key may set the tag through the
gateway, so ``hokusai mlflow tag-owners`` does it here, on MLflow itself.

Prompts are registered models too (MLflow's client leaves them out of a plain search): both are
searched. Only the client's workspace is seen (MLflow's default, where workspaces are off).
"""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED, UNAUTHENTICATED, ErrorCode

from hokusai_mlflow_plugin.auth import mlflow_objects
from hokusai_mlflow_plugin.core import tags
from hokusai_mlflow_plugin.core.errors import CONFIG, HokusaiError
from hokusai_mlflow_plugin.mlflow_io.client import MlflowNotFound, call, pages, translated

PAGE = 1000  # registered models per search page (MLflow's largest)
IS_PROMPT = "mlflow.prompt.is_prompt"  # MLflow's tag of a prompt; naming it stops the client adding its own filter
_REFUSED = {ErrorCode.Name(PERMISSION_DENIED), ErrorCode.Name(UNAUTHENTICATED)}


def _tags_in_mlflow(client, page_size: int) -> tuple[dict[str, str | None], set[str]]:
    """Every registered model and prompt: its name -> its owner tag (None if it has none); and
    which of them are prompts (MLflow's client hides them from the registered models' calls)."""
    found, prompts = {}, set()
    for op in ("!=", "="):
        search = pages(call, client.search_registered_models, f"tags.`{IS_PROMPT}` {op} 'true'", page_size=page_size)
        for model in search:
            found[model.name] = (model.tags or {}).get(tags.OWNER)
            if op == "=":
                prompts.add(model.name)
    return found, prompts


def put_right(client, sessions, dry_run: bool = False, page_size: int = PAGE) -> dict:
    """Tag each registered model with a recorded owner whose tag in MLflow is missing or names
    another: one search of the registry (two: models, prompts), then each owner read again just
    before its write (a model renamed and its name taken by another team meanwhile is left as it
    is). ``tagged``: the models (to be) tagged; ``missing``: recorded owners of models not found
    (deleted in MLflow, or in another workspace), left alone; ``stray``: models tagged with no
    recorded owner (made on MLflow directly, tag included), listed in that owner's searches
    (gets still 404): said, left to the operator."""
    found, prompts = _tags_in_mlflow(client, page_size)
    with sessions() as session:
        owners = mlflow_objects.model_owners(session)
    wrong = sorted(name for name, owner in owners.items() if name in found and found[name] != str(owner))
    missing = {name for name in owners if name not in found}
    tagged = []
    for name in wrong:
        if dry_run:
            tagged.append(name)
            continue
        with sessions() as session:
            owner = mlflow_objects.model_owners(session, name).get(name)
        if owner is None or found[name] == str(owner):
            continue  # its owner row went, or moved to what the tag already says
        try:
            tag = client.set_prompt_tag if name in prompts else client.set_registered_model_tag
            tag(name, tags.OWNER, str(owner))
        except Exception as e:
            if isinstance(e, MlflowException) and e.error_code in _REFUSED:
                raise HokusaiError(
                    f"MLflow refused the tag of '{name}' ({e.error_code}): this is the gateway, which lets no key set "
                    "it. Point HOKUSAI_MLFLOW_INTERNAL_URI at MLflow itself (not the gateway) and run it again.", CONFIG
                ) from None
            error = translated(e)
            if not isinstance(error, MlflowNotFound):
                raise error from e
            missing.add(name)  # deleted since the search
            continue
        tagged.append(name)
    return {"checked": sum(name in found for name in owners), "tagged": tagged, "missing": sorted(missing),
            "stray": sorted(name for name, owner in found.items() if owner is not None and name not in owners),
            "dry_run": dry_run}
