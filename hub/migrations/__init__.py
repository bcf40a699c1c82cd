"""The hub's migration history (Alembic); applied at start by :func:`mycarenet_core.migrations.upgrade`."""
