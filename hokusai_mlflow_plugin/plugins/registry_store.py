"""The ``mlflow.model_registry_store`` entry point.

MLflow loads every registry-store entry point the first time any registry client is built, for an
``http://`` URI too, so this module imports only the standard library: the store (MLflow's SQL
store, with SQLAlchemy and Alembic behind it) is imported only when a ``hokusai+`` URI is used.
MLflow calls the builder with ``store_uri`` and ``tracking_uri`` (it reads the parameter names).
"""


def build_registry_store(store_uri=None, tracking_uri=None):
    from hokusai_mlflow_plugin.plugins.stamping_store import HokusaiRegistryStore

    return HokusaiRegistryStore(store_uri=store_uri, tracking_uri=tracking_uri)
