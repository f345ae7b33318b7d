"""The ``nba_raw`` tables, as data: columns, partitioning and natural keys.

Every table is partitioned by ``game_date`` (the NBA game day), never expires
(raw data is the record of what the sources said) and requires a partition
filter, so no analyst query and no load statement scans the whole history.
The natural key is unique *within* a game date: the load MERGE matches on
``game_date`` plus the key, which is what lets it touch only the partitions a
file covers.

Lineage columns say which file and which scraper run wrote a row, and when.
``scraped_at`` (the time in the file's name) orders files of the same day, so
an older file that arrives late cannot overwrite a newer one (see ``sink``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from outbox.errors import ConfigError
from outbox.schema import Column, TableSpec

GAME_DATE = "game_date"
SCRAPED_AT = "scraped_at"
PROCESSED_AT = "processed_at"

LINEAGE_COLUMNS: tuple[Column, ...] = (
    Column("source_execution_id", "STRING", required=True, max_length=128,
           description="execution_id of the scraper run whose file this row came from"),
    Column("source_file", "STRING", max_length=1024, description="the file's gcs_path"),
    Column(SCRAPED_AT, "TIMESTAMP", required=True,
           description="when the file was written (from its name; else processing time)"),
    Column(PROCESSED_AT, "TIMESTAMP", required=True, description="when this row was last loaded"),
)


@dataclass(frozen=True)
class RawTable:
    """A table spec plus what loading it needs: the natural key and the file rule.

    ``full_day``: one complete file holds every row of its game dates, so a
    re-scrape that no longer lists a row (a player removed from a box score)
    deletes it. Odds files are snapshots, never the whole truth of a day.
    """

    spec: TableSpec
    keys: tuple[str, ...]
    full_day: bool

    def __post_init__(self) -> None:
        if self.spec.partition_field != GAME_DATE:
            raise ConfigError(f"{self.spec.name}: raw tables are partitioned by {GAME_DATE}")
        for name in (*self.keys, GAME_DATE, SCRAPED_AT):
            col = self.spec.column(name)
            if col is None or not col.required or col.repeated:
                raise ConfigError(f"{self.spec.name}: key column {name!r} must be required")
        if any(c.repeated or c.type == "JSON" for c in self.spec.columns):
            raise ConfigError(f"{self.spec.name}: raw tables hold scalar columns only")

    @property
    def match_columns(self) -> tuple[str, ...]:
        """What identifies a row: the game date and the natural key."""
        return (GAME_DATE, *self.keys)

    def key(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(row[c] for c in self.match_columns)

    def in_dataset(self, dataset: str) -> RawTable:
        """The same table in another dataset (a test's, or a staging environment's)."""
        return RawTable(self.spec.with_location(dataset), self.keys, self.full_day)


def _raw_spec(name: str, description: str, clustering: tuple[str, ...],
              columns: tuple[Column, ...]) -> TableSpec:
    return TableSpec(
        dataset="nba_raw",
        name=name,
        columns=(*columns, *LINEAGE_COLUMNS),
        partition_field=GAME_DATE,
        clustering=clustering,
        expiration_days=None,
        require_partition_filter=True,
        description=description,
    )


def _ints(*names: str) -> tuple[Column, ...]:
    return tuple(Column(n, "INT64") for n in names)


BDL_GAMES = RawTable(
    _raw_spec(
        "bdl_games",
        "BallDontLie games, one row per game; a day's file replaces the day.",
        ("home_team_id", "visitor_team_id"),
        (
            Column("game_id", "INT64", required=True),
            Column(GAME_DATE, "DATE", required=True),
            Column("season", "INT64", required=True),
            Column("status", "STRING", max_length=64),
            Column("period", "INT64"),
            Column("time", "STRING", max_length=64),
            Column("postseason", "BOOL"),
            Column("home_team_id", "INT64", required=True),
            Column("home_team_abbr", "STRING", max_length=8),
            Column("home_team_name", "STRING", max_length=128),
            Column("home_team_score", "INT64"),
            Column("visitor_team_id", "INT64", required=True),
            Column("visitor_team_abbr", "STRING", max_length=8),
            Column("visitor_team_name", "STRING", max_length=128),
            Column("visitor_team_score", "INT64"),
        ),
    ),
    keys=("game_id",),
    full_day=True,
)

BOX_SCORE_STATS = ("pts", "reb", "ast", "stl", "blk", "turnover",
                   "fgm", "fga", "fg3m", "fg3a", "ftm", "fta")

BDL_PLAYER_BOX_SCORES = RawTable(
    _raw_spec(
        "bdl_player_box_scores",
        "BallDontLie player box scores, one row per player and game.",
        ("player_id", "team_id", "game_id"),
        (
            Column("game_id", "INT64", required=True),
            Column("player_id", "INT64", required=True),
            Column(GAME_DATE, "DATE", required=True),
            Column("season", "INT64"),
            Column("stat_id", "INT64", description="BallDontLie's id of the stat line"),
            Column("team_id", "INT64", required=True),
            Column("team_abbr", "STRING", max_length=8),
            Column("player_first_name", "STRING", max_length=128),
            Column("player_last_name", "STRING", max_length=128),
            Column("player_position", "STRING", max_length=16),
            Column("minutes", "FLOAT64", description="NULL when the player did not play"),
            *_ints(*BOX_SCORE_STATS),
        ),
    ),
    keys=("game_id", "player_id"),
    full_day=True,
)

ODDS_API_PLAYER_POINTS_PROPS = RawTable(
    _raw_spec(
        "odds_api_player_points_props",
        "The Odds API player points lines, one row per outcome and snapshot.",
        ("player_name", "bookmaker", "event_id"),
        (
            Column("event_id", "STRING", required=True, max_length=64),
            Column(GAME_DATE, "DATE", required=True,
                   description="commence_time's date in America/New_York (the NBA game day)"),
            Column("commence_time", "TIMESTAMP", required=True),
            Column("home_team", "STRING", required=True, max_length=128),
            Column("away_team", "STRING", required=True, max_length=128),
            Column("bookmaker", "STRING", required=True, max_length=64),
            Column("bookmaker_title", "STRING", max_length=128),
            Column("player_name", "STRING", required=True, max_length=128),
            Column("side", "STRING", required=True, max_length=8, description="Over or Under"),
            Column("price", "INT64", required=True, description="american odds"),
            Column("point", "FLOAT64", required=True, description="the points line"),
            Column("last_update", "TIMESTAMP", required=True,
                   description="the bookmaker's update time: the snapshot this line belongs to"),
        ),
    ),
    keys=("event_id", "bookmaker", "player_name", "side", "last_update"),
    full_day=False,
)

RAW_TABLES: tuple[RawTable, ...] = (BDL_GAMES, BDL_PLAYER_BOX_SCORES, ODDS_API_PLAYER_POINTS_PROPS)
