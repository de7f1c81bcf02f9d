"""The console's blueprint and CSRF guard, apart from ``__init__`` so that the view modules can
import them without a circle."""

from __future__ import annotations

from flask import Blueprint
from flask_wtf.csrf import CSRFProtect

bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates", static_folder="static")
csrf = CSRFProtect()
