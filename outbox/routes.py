"""Routes: which log table is relayed to which topic, with which encoder.

Declarative, read once at wiring time. Adding a route is adding an entry.
"""

from __future__ import annotations

from dataclasses import dataclass

from outbox.messages import Encoder, encode_scraper_complete_v1
from outbox.schema import SCRAPER_EXECUTION_LOG, TableSpec, check_identifier


@dataclass(frozen=True)
class Route:
    name: str
    table: TableSpec
    topic: str
    encoder: Encoder

    def __post_init__(self) -> None:
        check_identifier(self.name, "route name")


SCRAPER_COMPLETE = Route(
    name="scrapers",
    table=SCRAPER_EXECUTION_LOG,
    topic="nba-scraper-complete",
    encoder=encode_scraper_complete_v1,
)

ROUTES: tuple[Route, ...] = (SCRAPER_COMPLETE,)
