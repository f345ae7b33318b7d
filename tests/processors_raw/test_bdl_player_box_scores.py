"""bdl_player_box_scores: a BallDontLie day of stat lines into nba_raw.bdl_player_box_scores."""

from __future__ import annotations

import datetime as dt

import pytest

from processors.base import InvalidFile
from processors.raw.bdl_player_box_scores import BdlPlayerBoxScoresProcessor
from processors.raw.tables import BDL_PLAYER_BOX_SCORES
from processors.raw.testing import InMemoryRawSink
from processors_raw.samples import box_scores_file, changed, encode, event, stat_line

FIRST = "ball-dont-lie/player-box-scores/2026-11-28/20261129_060000.json"
RESCRAPE = "ball-dont-lie/player-box-scores/2026-11-28/20261129_120000.json"


@pytest.fixture
def processor(sink: InMemoryRawSink) -> BdlPlayerBoxScoresProcessor:
    return BdlPlayerBoxScoresProcessor(sink)


def by_player(sink: InMemoryRawSink) -> dict[int, dict[str, object]]:
    return {r["player_id"]: r for r in sink.rows(BDL_PLAYER_BOX_SCORES)}


def test_a_day_of_stat_lines_becomes_typed_rows(processor: BdlPlayerBoxScoresProcessor,
                                                sink: InMemoryRawSink) -> None:
    result = processor.process(event(FIRST), encode(box_scores_file()))
    assert (result.status, result.record_count, result.game_date) == (
        "success", 4, dt.date(2026, 11, 28))
    rows = by_player(sink)
    lebron = rows[237]
    assert (lebron["game_id"], lebron["team_abbr"], lebron["player_last_name"]) == (
        18444564, "LAL", "James")
    assert lebron["minutes"] == pytest.approx(34.2) and lebron["pts"] == 27
    assert (lebron["fg3m"], lebron["fta"], lebron["stat_id"]) == (3, 5, 2370)
    assert rows[666786]["minutes"] == 31.0
    assert "minutes" not in rows[1] and rows[1]["pts"] == 0  # "" = did not play: NULL
    assert "minutes" not in rows[2] and "pts" not in rows[2]  # null stays NULL


def test_the_same_file_twice_leaves_the_same_rows(processor: BdlPlayerBoxScoresProcessor,
                                                  sink: InMemoryRawSink) -> None:
    processor.process(event(FIRST), encode(box_scores_file()))
    first = sink.rows(BDL_PLAYER_BOX_SCORES)
    processor.process(event(FIRST), encode(box_scores_file()))
    again = sink.rows(BDL_PLAYER_BOX_SCORES)
    strip = [{k: v for k, v in r.items() if k != "processed_at"} for r in first]
    assert [{k: v for k, v in r.items() if k != "processed_at"} for r in again] == strip


def test_a_player_removed_by_a_rescrape_is_deleted(processor: BdlPlayerBoxScoresProcessor,
                                                   sink: InMemoryRawSink) -> None:
    processor.process(event(FIRST), encode(box_scores_file()))
    corrected = box_scores_file(stat_line(237, "LeBron", "James", pts=29),
                                stat_line(1, "Jayson", "Tatum", team=(2, "BOS")))
    processor.process(event(RESCRAPE), encode(corrected))
    rows = by_player(sink)
    assert sorted(rows) == [1, 237] and rows[237]["pts"] == 29


@pytest.mark.parametrize(("path", "value", "message"), [
    ("data.0.pts", "abc", "data[0].pts: expected an integer, got string 'abc'"),
    ("data.0.min", "thirty", 'data[0].min: expected minutes as "MM:SS" or "MM"'),
    ("data.0.player.id", ..., "data[0].player.id: is required"),
    ("data.0.game", None, "data[0].game: expected an object, got null"),
    ("data.0.game.date", "2026-13-01", "data[0].game.date: expected a date YYYY-MM-DD"),
])
def test_a_bad_line_is_skipped_and_the_rest_loaded(
    processor: BdlPlayerBoxScoresProcessor, sink: InMemoryRawSink,
    caplog: pytest.LogCaptureFixture, path: str, value: object, message: str,
) -> None:
    result = processor.process(event(FIRST), encode(changed(box_scores_file(), path, value)))
    assert (result.record_count, result.records_failed) == (3, 1)
    assert message in caplog.text
    assert 237 not in by_player(sink)


def test_a_string_longer_than_its_column_is_a_bad_record(
    processor: BdlPlayerBoxScoresProcessor, caplog: pytest.LogCaptureFixture
) -> None:
    doc = changed(box_scores_file(), "data.1.team.abbreviation", "X" * 20)
    assert processor.process(event(FIRST), encode(doc)).records_failed == 1
    assert "data[1]: column team_abbr: longer than 8 characters" in caplog.text


def test_only_bad_lines_make_an_invalid_file(processor: BdlPlayerBoxScoresProcessor,
                                             sink: InMemoryRawSink) -> None:
    doc = box_scores_file(stat_line(237, "LeBron", "James", pts="abc"))
    with pytest.raises(InvalidFile, match=r"data\[0\]\.pts: expected an integer"):
        processor.process(event(FIRST), encode(doc))
    assert sink.statements == 0


def test_a_record_that_is_not_an_object_is_a_bad_record(
    processor: BdlPlayerBoxScoresProcessor, caplog: pytest.LogCaptureFixture
) -> None:
    doc = box_scores_file()
    doc["data"].append("oops")
    assert processor.process(event(FIRST), encode(doc)).records_failed == 1
    assert "data[4]: expected an object, got string" in caplog.text


def test_an_empty_day_is_no_data(processor: BdlPlayerBoxScoresProcessor,
                                 sink: InMemoryRawSink) -> None:
    result = processor.process(event(FIRST), encode({"data": [], "meta": {"next_cursor": None}}))
    assert (result.status, result.record_count, sink.statements) == ("no_data", 0, 0)
