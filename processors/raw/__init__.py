"""Raw processors: one scraper file into one ``nba_raw`` table, idempotently.

``build_processors(sink)`` gives the service its processors by name. The
tables are in :mod:`processors.raw.tables` (``RAW_TABLES`` for creating
them), the load port in :mod:`processors.raw.sink`.
"""

from __future__ import annotations

from processors.base import Processor
from processors.raw.base import RawProcessor
from processors.raw.bdl_games import BdlGamesProcessor
from processors.raw.bdl_player_box_scores import BdlPlayerBoxScoresProcessor
from processors.raw.oddsa_player_points_props import OddsaPlayerPointsPropsProcessor
from processors.raw.sink import RawTableSink
from processors.raw.tables import RAW_TABLES, RawTable

PROCESSOR_CLASSES: tuple[type[RawProcessor], ...] = (
    BdlGamesProcessor,
    BdlPlayerBoxScoresProcessor,
    OddsaPlayerPointsPropsProcessor,
)


def build_processors(sink: RawTableSink, *, dataset: str | None = None) -> dict[str, Processor]:
    """The raw processors by name, writing through ``sink``.

    ``dataset`` moves every table (tests, staging); the default is ``nba_raw``.
    """
    return {cls.name: cls(sink, dataset=dataset) for cls in PROCESSOR_CLASSES}


__all__ = ["RAW_TABLES", "RawTable", "RawTableSink", "build_processors"]
