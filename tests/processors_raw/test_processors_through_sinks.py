"""Each processor end to end through each sink: the in-memory double and BigQuery (bqemulator)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from outbox.rows import Row
from processors.base import Processor
from processors.raw import build_processors
from processors.raw.tables import (
    BDL_GAMES,
    BDL_PLAYER_BOX_SCORES,
    ODDS_API_PLAYER_POINTS_PROPS,
    RawTable,
)
from processors_raw.harness import Harness
from processors_raw.samples import (
    box_scores_file,
    encode,
    event,
    games_file,
    odds_event,
    odds_file,
    stat_line,
)


def twice(harness: Harness, name: str, raw: RawTable, path: str,
          doc: Any) -> tuple[Processor, list[Row]]:
    """Process ``doc`` twice; the second run must leave the rows as the first did."""
    processor = build_processors(harness.sink, dataset=harness.dataset)[name]
    processor.process(event(path), encode(doc))
    first = harness.loaded(raw)
    assert processor.process(event(path), encode(doc)).record_count == len(first)
    assert harness.loaded(raw) == first
    return processor, first


def test_bdl_games_twice_then_a_rescrape(harness: Harness) -> None:
    path = "ball-dont-lie/games/2026-11-28/20261128_100000.json"
    bdl_games, first = twice(harness, "bdl_games", BDL_GAMES, path, games_file())
    assert len(first) == 2
    assert first[0]["home_team_score"] == 112 and first[0]["game_date"] == dt.date(2026, 11, 28)
    later = games_file(games_file()["data"][0])
    bdl_games.process(event(path.replace("100000", "230000")), encode(later))
    assert [r["game_id"] for r in harness.loaded(BDL_GAMES)] == [18444564]


def test_bdl_player_box_scores_twice_then_a_rescrape(harness: Harness) -> None:
    path = "ball-dont-lie/player-box-scores/2026-11-28/20261129_060000.json"
    box, first = twice(harness, "bdl_player_box_scores", BDL_PLAYER_BOX_SCORES, path,
                       box_scores_file())
    assert len(first) == 4
    lebron = next(r for r in first if r["player_id"] == 237)
    assert lebron["minutes"] == 34.2 and lebron["pts"] == 27
    fixed = box_scores_file(stat_line(237, "LeBron", "James", pts=29))
    box.process(event(path.replace("060000", "120000")), encode(fixed))
    [row] = harness.loaded(BDL_PLAYER_BOX_SCORES)
    assert (row["player_id"], row["pts"]) == (237, 29)


def test_oddsa_player_points_props_twice_then_a_new_snapshot(harness: Harness) -> None:
    path = "odds-api/player-props/2026-11-28/20261128_170000.json"
    odds, first = twice(harness, "oddsa_player_points_props", ODDS_API_PLAYER_POINTS_PROPS,
                        path, odds_file())
    assert len(first) == 8
    assert {(r["price"], r["point"]) for r in first if r["player_name"] == "LeBron James"} == {
        (-115, 25.5), (-105, 25.5)}
    moved = odds_event(update="2026-11-28T22:41:00Z", lebron=(26.5, -110, -110))
    odds.process(event(path.replace("170000", "230000")), encode(odds_file(moved)))
    assert len(harness.loaded(ODDS_API_PLAYER_POINTS_PROPS)) == 16
