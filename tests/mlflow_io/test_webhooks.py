"""Webhook secrets: made with 256 random bits, kept in files only their owner reads."""

from __future__ import annotations

import stat

import pytest

from hokusai_mlflow_plugin.mlflow_io.webhooks import new_secret, save_secret


def test_a_new_secret_is_long_and_new_each_time():
    first, second = new_secret(), new_secret()
    assert first != second and len(first) >= 43  # 32 bytes, URL-safe base64


def test_a_saved_secret_is_readable_by_its_owner_only(tmp_path):
    path = save_secret(tmp_path / "home" / "webhook-secret-hokusai", "s3cret\n")
    assert path.read_text() == "s3cret\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    save_secret(path, "rotated\n")  # replace=True: the file is rewritten, still 0600
    assert path.read_text() == "rotated\n" and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_replace_false_never_overwrites_a_secret(tmp_path):
    path = save_secret(tmp_path / "secrets.json", "{}", replace=False)
    with pytest.raises(FileExistsError):
        save_secret(path, "other", replace=False)
    assert path.read_text() == "{}"
