from setuptools import find_packages, setup

setup(
    name="hokusai-mlflow-plugin",
    version="0.1.0",
    description="MLflow plugins and registry webhook receiver that register Hokusai tokens",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["hokusai_mlflow_plugin", "hokusai_mlflow_plugin.*", "webhook_app", "webhook_app.*"]),
    package_data={
        "hokusai_mlflow_plugin.db.migrations": ["script.py.mako"],
        "webhook_app.console": ["templates/console/*.html", "static/*.css", "static/*.js"],
        "webhook_app.gateway": ["mlflow_schema.graphql"],  # MLflow's GraphQL schema, which the gateway validates with
    },
    install_requires=[
        # 3.18.0 is published but its own dependencies do not install yet; tested on 3.17.2.
        "mlflow>=3.4,<3.18",
        "sqlalchemy>=2.0,<3",  # 2.1 needs Python 3.11; Python 3.10 gets 2.0
        # The token store uses psycopg 3 (postgresql+psycopg, LISTEN/NOTIFY). MLflow's own
        # postgresql:// URLs use SQLAlchemy's default driver: psycopg 3 on 2.1, psycopg2 on 2.0.
        "psycopg[binary]>=3.2",
        "psycopg2-binary>=2.9",
        "flask>=3.0",
        "requests>=2.31",
        "click>=8.1",
        "scikit-learn>=1.3",  # hokusai demo, and model register --eval-data
        "alembic>=1.13",  # the token store's migrations
        "gunicorn>=22",  # production serving of the receiver
        "pyyaml>=6",  # YAML config files, as the original platform read them
        "standardwebhooks>=1.0",  # signing downstream webhooks as the spec says
        "redis>=5",  # the Redis Streams sink
        # The HTTP API: pydantic models validate requests and are the OpenAPI 3.1 document's schemas
        # (one source of truth); pydantic itself comes with mlflow.
        "flask-openapi3>=4.0,<5",
        "urllib3>=2",  # the API client's retries of 503 with Retry-After
        # The MLflow gateway: asyncio under gunicorn (a threaded WSGI hop cost too much, BENCHMARKS.md).
        "aiohttp>=3.10,<4",  # its server and its pool of connections to MLflow (mlflow itself needs aiohttp)
        "uvloop>=0.19",  # gunicorn's aiohttp worker on uvloop: a quarter less time per hop than asyncio's loop
        "limits>=4.0,<6",  # its per-key rate limit (Flask-Limiter's engine; Redis storage when configured)
        "prometheus-client>=0.20",  # /metrics, multiprocess mode under gunicorn
        "flask-wtf>=1.2",  # the console's CSRF tokens on every form that changes state
    ],
    extras_require={
        "test": [
            "pytest>=8",
            # `make test` runs the suite on several workers (Makefile): most of a test's time is spent
            # waiting on servers, subprocesses and timeouts, and the suite took 12-18 min in one process
            "pytest-xdist>=3.5",
            "hypothesis>=6",
            # the API's contract, checked by tools nobody here wrote (tests/webhook_app/test_api_contract.py)
            "schemathesis>=4.32,<5",
            "openapi-python-client>=0.29,<0.30",  # a client generated from the served document
            "openapi-spec-validator>=0.7",  # the API's OpenAPI document, checked by a kept validator
            "playwright>=1.40",  # the console's browser tests, driving Debian's chromium (.ci/run installs it)
        ],
    },
    entry_points={
        "mlflow.run_context_provider": [
            "hokusai=hokusai_mlflow_plugin.plugins.run_context:HokusaiRunContextProvider",
        ],
        "mlflow.model_registry_store": [
            "hokusai+sqlite=hokusai_mlflow_plugin.plugins.registry_store:build_registry_store",
            "hokusai+postgresql=hokusai_mlflow_plugin.plugins.registry_store:build_registry_store",
            "hokusai+mysql=hokusai_mlflow_plugin.plugins.registry_store:build_registry_store",
        ],
        "console_scripts": [
            "hokusai=hokusai_mlflow_plugin.cli:main",
            "hokusai-ml-platform=hokusai_mlflow_plugin.cli:main",
        ],
    },
)
