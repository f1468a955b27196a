#!/usr/bin/env python3
"""The peer of `dropguard scan --all`: Django's own MigrationLoader reading every
migration file of the project in the current directory and replaying the whole
project state (what `manage.py makemigrations --check` does before it compares)."""

import os
import sys

sys.path.insert(0, os.getcwd())
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")
import django  # noqa: E402

django.setup()
from django.db.migrations.loader import MigrationLoader  # noqa: E402

loader = MigrationLoader(None, ignore_no_migrations=True)
state = loader.project_state()
print(len(loader.disk_migrations), "migrations,", len(state.models), "models")
