"""A processors service on in-memory doubles, with two fake processors."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask.testing import FlaskClient

from outbox.blobs import InMemoryBlobs
from outbox.oidc import OidcVerifier
from outbox.routes import PHASE2_COMPLETE
from outbox.rows import Row
from outbox.schema import Column, TableSpec
from outbox.testing import InMemoryOutboxStore
from processors.base import Processor
from processors.registry import Registry, Rule
from processors.service import Handler, create_app
from processors.testing import FakeProcessor, InMemoryLedger, InMemoryQuarantine

GAMES = "ball-dont-lie/games/2026-11-28/20261128_100000.json"
BOXES = "ball-dont-lie/player-box-scores/2026-11-28/20261128_100000.json"
NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)

RULES = (
    Rule("ball-dont-lie/player-box-scores", "boxes", ("bdl_player_box_scores_scraper",)),
    Rule("ball-dont-lie/games", "games", ("bdl_games_scraper",)),
)


def _table(name: str) -> TableSpec:
    return TableSpec("nba_raw", name, (Column("game_date", "DATE", required=True),), "game_date")


@dataclass
class Rig:
    client: FlaskClient
    handler: Handler
    ledger: InMemoryLedger
    quarantine: InMemoryQuarantine
    log: InMemoryOutboxStore
    blobs: InMemoryBlobs
    games: FakeProcessor
    boxes: FakeProcessor
    uris: dict[str, str] = field(default_factory=dict)

    def post(self, body: bytes, **kwargs: Any) -> Any:
        return self.client.post("/process", data=body, content_type="application/json",
                                **kwargs)

    @property
    def log_rows(self) -> list[Row]:
        return self.log.rows

    def calls(self) -> int:
        return len(self.games.calls) + len(self.boxes.calls)

    def written(self) -> tuple[int, int, int]:
        """(log rows, ledger rows, quarantine records)."""
        return len(self.log.rows), len(self.ledger.rows), len(self.quarantine.records)


RigFactory = Callable[..., Rig]


def build_rig(auth: OidcVerifier | None = None, ledger: InMemoryLedger | None = None,
              blobs: Any = None, processors: dict[str, Processor] | None = None) -> Rig:
    games = FakeProcessor("games", _table("games"))
    boxes = FakeProcessor("boxes", _table("boxes"))
    memory = InMemoryBlobs()
    uris = {"games": memory.write(GAMES, b'{"data": []}'),
            "boxes": memory.write(BOXES, b'{"data": [1]}')}
    ledger = ledger or InMemoryLedger()
    quarantine = InMemoryQuarantine()
    log = InMemoryOutboxStore(PHASE2_COMPLETE.table, PHASE2_COMPLETE.name, clock=lambda: NOW)
    app = create_app(processors or {"games": games, "boxes": boxes}, Registry(RULES), ledger,
                     blobs or memory, log, quarantine, auth=auth)
    handler = app.extensions["processors.handler"]
    return Rig(app.test_client(), handler, ledger, quarantine, log, memory, games, boxes, uris)


@pytest.fixture
def rig() -> Rig:
    return build_rig()


@pytest.fixture
def make_rig() -> RigFactory:
    """``build_rig`` itself, for tests that need OIDC, shared ledgers or other blobs."""
    return build_rig


@pytest.fixture(scope="session")
def bq_wiring(bq_emulator: Any) -> Any:
    """The project's wiring on the session's bqemulator (query-mode reads)."""
    from outbox.wiring import Settings, Wiring

    return Wiring.build(Settings(
        project=bq_emulator.project,
        bigquery_emulator=bq_emulator.rest_url.removeprefix("http://"),
        bigquery_emulator_grpc=bq_emulator.grpc_endpoint, read_mode="query"))


@pytest.fixture
def fresh_tables(bq_wiring: Any) -> Callable[..., list[TableSpec]]:
    """``fresh_tables(*specs)``: the specs moved to a new dataset, created there."""
    from outbox.bigquery_tables import ensure_tables

    def make(*specs: TableSpec) -> list[TableSpec]:
        dataset = f"processors_{uuid.uuid4().hex[:10]}"
        moved = [s.with_location(dataset) for s in specs]
        ensure_tables(bq_wiring.bigquery, bq_wiring.settings.project, moved)
        return moved

    return make
