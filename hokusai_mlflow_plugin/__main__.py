"""``python -m hokusai_mlflow_plugin`` is the ``hokusai`` command."""

from hokusai_mlflow_plugin.cli import main

main(prog_name="hokusai")
