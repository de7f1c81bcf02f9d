"""The token store: models, sessions and migrations."""
