"""``bdl_games``: BallDontLie's games of a day into ``nba_raw.bdl_games``.

One row per game, keyed by ``game_id`` within its ``game_date``. A day's file
lists every game of the day, so the load replaces the day (see ``base``).
"""

from __future__ import annotations

from outbox.rows import Row
from processors.raw.base import BallDontLieProcessor, Collector
from processors.raw.records import Node, as_bool, as_date, as_int, as_str
from processors.raw.tables import BDL_GAMES


class BdlGamesProcessor(BallDontLieProcessor):
    name = "bdl_games"
    raw = BDL_GAMES

    def build(self, record: Node, out: Collector) -> Row:
        row: Row = {
            "game_id": record.req("id", as_int),
            "game_date": record.req("date", as_date),
            "season": record.req("season", as_int),
            "status": record.opt("status", as_str),
            "period": record.opt("period", as_int),
            "time": record.opt("time", as_str),
            "postseason": record.opt("postseason", as_bool),
            "home_team_score": record.opt("home_team_score", as_int),
            "visitor_team_score": record.opt("visitor_team_score", as_int),
        }
        for side in ("home_team", "visitor_team"):
            team = record.obj(side)
            row[f"{side}_id"] = team.req("id", as_int)
            row[f"{side}_abbr"] = team.opt("abbreviation", as_str)
            row[f"{side}_name"] = team.opt("full_name", as_str)
        return row
