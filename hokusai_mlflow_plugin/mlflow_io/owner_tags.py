"""The ``hokusai_owner`` tag of registered models, put right from the recorded owners.

The gateway and the API write a model's owner row and then its tag in MLflow (``auth.mlflow_objects``:
the tag narrows its owner's searches to one short filter). A model whose tag is missing (made before
the tags were written, or MLflow refused the tag, or the process ended between the two writes) is
missed by its owner's narrowed searches until it is tagged; no key may set the tag through the
gateway, so ``hokusai mlflow tag-owners`` does it here, on MLflow directly.
"""

from __future__ import annotations

from hokusai_mlflow_plugin.core import tags
from hokusai_mlflow_plugin.mlflow_io.client import call, pages

PAGE = 1000  # registered models per search page (MLflow's largest)


def put_right(client, owners: dict[str, int], dry_run: bool = False) -> dict:
    """Tag each model of ``owners`` (name -> the owner's principal id) whose tag in MLflow is missing
    or names another owner; one search of the registry, one write per model to put right.
    ``tagged``: the models (to be) tagged; ``missing``: recorded owners of models MLflow no longer
    has (deleted there), left alone; ``stray``: models tagged with no recorded owner (made on MLflow
    directly, tag included), which the tag's owner sees listed in its searches (gets still 404):
    said, left to the operator."""
    found = {model.name: (model.tags or {}).get(tags.OWNER)
             for model in pages(lambda **kw: call(client.search_registered_models, **kw), page_size=PAGE)}
    wrong = sorted(name for name, owner in owners.items() if name in found and found[name] != str(owner))
    if not dry_run:
        for name in wrong:
            call(client.set_registered_model_tag, name, tags.OWNER, str(owners[name]))
    return {"checked": sum(name in found for name in owners), "tagged": wrong,
            "missing": sorted(name for name in owners if name not in found),
            "stray": sorted(name for name, owner in found.items() if owner is not None and name not in owners),
            "dry_run": dry_run}
