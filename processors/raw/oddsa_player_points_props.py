"""``oddsa_player_points_props``: The Odds API player points lines.

The file is an array of per-event odds responses. Each outcome (one side,
Over or Under, of one player's line at one bookmaker) becomes a row.

- ``price`` is american odds (INT64), ``point`` the line (FLOAT64).
- ``game_date`` is ``commence_time``'s date in America/New_York, the NBA
  game day: a 7:10 pm ET tip-off is stamped 00:10Z the next day.
- The snapshot is the market's ``last_update`` (the bookmaker's when the
  market has none). It is part of the key, so a re-run of the same file
  rewrites the same rows, while a later snapshot with moved lines adds rows
  and the history stays. Odds files never replace a day.
- Markets other than ``player_points`` are ignored; events without
  bookmakers yet yield no rows (a file of only those is ``no_data``).
"""

from __future__ import annotations

from outbox.rows import Row
from processors.raw.base import Collector, RawProcessor
from processors.raw.records import (
    BadRecord,
    Node,
    as_float,
    as_int,
    as_str,
    as_timestamp,
    nba_game_date,
)
from processors.raw.tables import ODDS_API_PLAYER_POINTS_PROPS

MARKET = "player_points"
SIDES = frozenset({"Over", "Under"})


class OddsaPlayerPointsPropsProcessor(RawProcessor):
    name = "oddsa_player_points_props"
    raw = ODDS_API_PLAYER_POINTS_PROPS

    def records(self, doc: Node) -> list[Node]:
        return doc.elements()

    def build(self, record: Node, out: Collector) -> None:
        commence = record.req("commence_time", as_timestamp)
        event: Row = {
            "event_id": record.req("id", as_str),
            "commence_time": commence,
            "game_date": nba_game_date(commence),
            "home_team": record.req("home_team", as_str),
            "away_team": record.req("away_team", as_str),
        }
        out.each(record.array("bookmakers"), lambda book: self._bookmaker(book, event, out))

    def _bookmaker(self, book: Node, event: Row, out: Collector) -> None:
        bookmaker: Row = {
            **event,
            "bookmaker": book.req("key", as_str),
            "bookmaker_title": book.opt("title", as_str),
            "last_update": book.opt("last_update", as_timestamp),
        }
        out.each(book.array("markets"), lambda market: self._market(market, bookmaker, out))

    def _market(self, market: Node, bookmaker: Row, out: Collector) -> None:
        if market.req("key", as_str) != MARKET:
            return
        line: Row = {**bookmaker}
        line["last_update"] = market.opt("last_update", as_timestamp) or bookmaker["last_update"]
        if line["last_update"] is None:
            raise BadRecord(market.path, "no last_update on the market or its bookmaker")
        out.each(market.array("outcomes"), lambda outcome: self._outcome(outcome, line))

    @staticmethod
    def _outcome(outcome: Node, line: Row) -> Row:
        side = outcome.req("name", as_str)
        if side not in SIDES:
            raise BadRecord(f"{outcome.path}.name", f"expected Over or Under, got {side!r:.40}")
        return {
            **line,
            "player_name": outcome.req("description", as_str),
            "side": side,
            "price": outcome.req("price", as_int),
            "point": outcome.req("point", as_float),
        }
