"""Fixtures for the scraper tests: the fixture server and a run's dependencies.

(The folder is not called ``scrapers``: pytest puts ``tests/`` on ``sys.path``,
and a folder of that name would shadow the package under test.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from scraper_fixtures import BDL_KEY, ODDS_KEY, Rig

from outbox.blobs import LocalBlobs
from outbox.testing import InMemoryOutboxStore
from scrapers.fixture_server import Upstream


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def rig(upstream: Upstream, tmp_path: Path) -> Rig:
    env = {"BDL_BASE_URL": upstream.url, "ODDS_API_BASE_URL": upstream.url,
           "BDL_API_KEY": BDL_KEY, "ODDS_API_KEY": ODDS_KEY}
    return Rig(upstream, InMemoryOutboxStore(), LocalBlobs(tmp_path / "bucket"), env)
