"""Hub test fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _pg_probed(pg_admin_url: str) -> str:
    """Probe PostgreSQL once outside the event loop (the shared probe uses asyncio.run, which fails when
    first reached from an async fixture)."""
    return pg_admin_url
