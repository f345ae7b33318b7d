"""``bdl_player_box_scores``: BallDontLie's stat lines of a day.

One row per player and game (key ``game_id`` + ``player_id`` within the
game date). ``min`` becomes ``minutes`` as a number: ``"34:12"`` is 34.2,
``"34"`` is 34.0, and ``""`` or null (did not play) is NULL. A day's file
lists every line of the day, so the load replaces the day (see ``base``).
"""

from __future__ import annotations

from outbox.rows import Row
from processors.raw.base import BallDontLieProcessor, Collector
from processors.raw.records import Node, as_date, as_int, as_minutes, as_str
from processors.raw.tables import BDL_PLAYER_BOX_SCORES, BOX_SCORE_STATS


class BdlPlayerBoxScoresProcessor(BallDontLieProcessor):
    name = "bdl_player_box_scores"
    raw = BDL_PLAYER_BOX_SCORES

    def build(self, record: Node, out: Collector) -> Row:
        game, player, team = record.obj("game"), record.obj("player"), record.obj("team")
        row: Row = {
            "game_id": game.req("id", as_int),
            "game_date": game.req("date", as_date),
            "season": game.opt("season", as_int),
            "player_id": player.req("id", as_int),
            "player_first_name": player.opt("first_name", as_str),
            "player_last_name": player.opt("last_name", as_str),
            "player_position": player.opt("position", as_str),
            "team_id": team.req("id", as_int),
            "team_abbr": team.opt("abbreviation", as_str),
            "stat_id": record.opt("id", as_int),
            "minutes": record.opt("min", as_minutes),
        }
        for stat in BOX_SCORE_STATS:
            row[stat] = record.opt(stat, as_int)
        return row
