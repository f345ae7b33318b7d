"""Routes: which log table is relayed to which topic, with which encoder.

Declarative, read once at wiring time. Adding a route is adding an entry.
"""

from __future__ import annotations

from dataclasses import dataclass

from outbox.errors import ConfigError
from outbox.messages import (
    PHASE2_COLUMNS,
    V1_COLUMNS,
    Encoder,
    encode_phase2_complete,
    encode_scraper_complete_v1,
)
from outbox.schema import (
    PROCESSOR_EXECUTION_LOG,
    SCRAPER_EXECUTION_LOG,
    TableSpec,
    check_identifier,
)


@dataclass(frozen=True)
class Route:
    name: str
    table: TableSpec
    topic: str
    encoder: Encoder
    columns: tuple[str, ...] | None = None
    """Columns the encoder reads; None for all. The poll fetches only these."""

    def __post_init__(self) -> None:
        check_identifier(self.name, "route name")
        for col in self.columns or ():
            if self.table.column(col) is None:
                raise ConfigError(f"route {self.name}: no column {col!r} in {self.table.name}")


SCRAPER_COMPLETE = Route(
    name="scrapers",
    table=SCRAPER_EXECUTION_LOG,
    topic="nba-scraper-complete",
    encoder=encode_scraper_complete_v1,
    columns=V1_COLUMNS,
)

PHASE2_COMPLETE = Route(
    name="processors",
    table=PROCESSOR_EXECUTION_LOG,
    topic="nba-phase2-complete",
    encoder=encode_phase2_complete,
    columns=PHASE2_COLUMNS,
)

ROUTES: tuple[Route, ...] = (SCRAPER_COMPLETE, PHASE2_COMPLETE)
