"""The scraper tests' rig: a run's dependencies around the fixture server.

The server and the sample payloads live in :mod:`scrapers.fixture_server`,
because ``outbox dev`` runs the scrapers against the same server; this module
keeps only what is test-specific (keys, fast retries, the in-memory rig).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from outbox.blobs import LocalBlobs
from outbox.testing import InMemoryOutboxStore
from scrapers.base import RunReport, ScraperDeps
from scrapers.fixture_server import SAMPLE_DATE, Upstream
from scrapers.http import RetryPolicy
from scrapers.registry import REGISTRY

BDL_KEY = "bdl-secret-key-123"
ODDS_KEY = "odds-secret-key-456"
DATE = SAMPLE_DATE

FAST_RETRIES = RetryPolicy(base_wait=0.0, max_wait=0.0, max_retry_after=0.05,
                           timeout=(2.0, 5.0))


@dataclass
class Rig:
    """One test's world: the upstream, the log store and the output directory."""

    upstream: Upstream
    store: InMemoryOutboxStore
    blobs: LocalBlobs
    env: dict[str, str]
    sleeps: list[float] = field(default_factory=list)

    @property
    def deps(self) -> ScraperDeps:
        return ScraperDeps(self.store, self.blobs, env=self.env, retry=FAST_RETRIES,
                           sleep=self.sleeps.append, triggered_by="pytest")

    def run(self, name: str, **opts: Any) -> RunReport:
        return REGISTRY.run(name, self.deps, opts)

    def only_row(self) -> dict[str, Any]:
        assert len(self.store.rows) == 1, self.store.rows
        return self.store.rows[0]

    def file_at(self, row: dict[str, Any]) -> Any:
        return json.loads(self.blobs.read(row["gcs_path"]))
