"""Hokusai MLflow plugin: tags runs, logged models and model versions with their Hokusai token.

This module is imported by MLflow's plugin loading inside every ``import mlflow`` on a machine where
the package is installed, so it imports only the standard library.
"""

__version__ = "0.1.0"
