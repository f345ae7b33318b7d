"""bdl_games: a BallDontLie day of games into nba_raw.bdl_games."""

from __future__ import annotations

import datetime as dt

import pytest

from processors.base import InvalidFile
from processors.raw import build_processors
from processors.raw.bdl_games import BdlGamesProcessor
from processors.raw.tables import BDL_GAMES
from processors.raw.testing import InMemoryRawSink
from processors_raw.samples import changed, encode, event, game, games_file

MORNING = "ball-dont-lie/games/2026-11-28/20261128_100000.json"
NIGHT = "ball-dont-lie/games/2026-11-28/20261128_235900.json"
DAY = dt.date(2026, 11, 28)


@pytest.fixture
def processor(sink: InMemoryRawSink) -> BdlGamesProcessor:
    return BdlGamesProcessor(sink)


def loaded(sink: InMemoryRawSink) -> list[dict[str, object]]:
    return [{k: v for k, v in r.items() if k != "processed_at"} for r in sink.rows(BDL_GAMES)]


def test_a_day_of_games_becomes_typed_rows(processor: BdlGamesProcessor,
                                           sink: InMemoryRawSink) -> None:
    result = processor.process(event(MORNING), encode(games_file()))
    assert (result.status, result.record_count, result.records_failed) == ("success", 2, 0)
    assert (result.output_dataset, result.output_table, result.game_date) == (
        "nba_raw", "bdl_games", DAY)
    lakers, warriors = sink.rows(BDL_GAMES)
    assert lakers["game_id"] == 18444564 and lakers["game_date"] == DAY
    assert (lakers["home_team_abbr"], lakers["visitor_team_id"]) == ("LAL", 2)
    assert (lakers["home_team_score"], lakers["postseason"]) == (112, False)
    assert (warriors["period"], warriors["time"], warriors["status"]) == (3, "5:32", "3rd Qtr")
    assert lakers["source_execution_id"] == "a1b2c3d4"
    assert lakers["source_file"] == f"gs://nba-scraped-data/{MORNING}"
    assert lakers["scraped_at"] == dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)
    assert lakers["processed_at"].tzinfo is not None


def test_the_same_file_twice_leaves_the_same_rows(processor: BdlGamesProcessor,
                                                  sink: InMemoryRawSink) -> None:
    processor.process(event(MORNING), encode(games_file()))
    first = loaded(sink)
    again = processor.process(event(MORNING), encode(games_file()))
    assert loaded(sink) == first and again.record_count == 2 and sink.statements == 2


def test_a_later_scrape_updates_scores_and_drops_a_vanished_game(
    processor: BdlGamesProcessor, sink: InMemoryRawSink
) -> None:
    processor.process(event(MORNING), encode(games_file()))
    final = games_file(game(18444564, (14, "LAL"), (2, "BOS"), home_team_score=120))
    processor.process(event(NIGHT, "e5f6a7b8"), encode(final))
    [row] = sink.rows(BDL_GAMES)
    assert (row["home_team_score"], row["source_execution_id"]) == (120, "e5f6a7b8")


def test_the_morning_file_redelivered_after_the_night_one_changes_nothing(
    processor: BdlGamesProcessor, sink: InMemoryRawSink
) -> None:
    final = games_file(game(18444564, (14, "LAL"), (2, "BOS"), home_team_score=120))
    processor.process(event(NIGHT), encode(final))
    processor.process(event(MORNING), encode(games_file()))
    scores = {r["game_id"]: r["home_team_score"] for r in sink.rows(BDL_GAMES)}
    # The night's final score stands; the morning's extra game comes back (documented limit).
    assert scores == {18444564: 120, 18444565: 80}


def test_a_truncated_file_deletes_nothing(processor: BdlGamesProcessor,
                                          sink: InMemoryRawSink) -> None:
    processor.process(event(MORNING), encode(games_file()))
    one_page = games_file(game(18444564, (14, "LAL"), (2, "BOS")), next_cursor=25)
    processor.process(event(NIGHT), encode(one_page))
    assert len(sink.rows(BDL_GAMES)) == 2


@pytest.mark.parametrize(("data", "message"), [
    (b"{not json", "not a JSON document"),
    (b"\xff\xfe\x00garbage", "not a JSON document"),
    (b"[]", "<root>: expected an object, got array"),
    (b'{"meta": {}}', "data: expected an array, got null"),
    (b'{"data": {"id": 1}}', "data: expected an array, got object"),
])
def test_a_malformed_file_is_refused_whole(processor: BdlGamesProcessor, sink: InMemoryRawSink,
                                           data: bytes, message: str) -> None:
    with pytest.raises(InvalidFile, match="^bdl_games: .*" + message.replace("[", r"\[")):
        processor.process(event(MORNING), data)
    assert sink.statements == 0


def test_a_bad_record_is_skipped_counted_and_logged(
    processor: BdlGamesProcessor, sink: InMemoryRawSink, caplog: pytest.LogCaptureFixture
) -> None:
    processor.process(event(MORNING), encode(games_file()))
    doc = changed(games_file(), "data.1.home_team_score", "abc")
    result = processor.process(event(NIGHT), encode(doc))
    assert (result.status, result.record_count, result.records_failed) == ("success", 1, 1)
    assert "data[1].home_team_score: expected an integer, got string 'abc'" in caplog.text
    # The skipped game keeps its earlier row: a file with failures deletes nothing.
    assert [r["game_id"] for r in sink.rows(BDL_GAMES)] == [18444564, 18444565]


def test_a_record_missing_a_required_field_is_skipped(processor: BdlGamesProcessor,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    doc = changed(games_file(), "data.0.home_team.id", ...)
    result = processor.process(event(MORNING), encode(doc))
    assert (result.record_count, result.records_failed) == (1, 1)
    assert "data[0].home_team.id: is required" in caplog.text


def test_a_file_of_only_bad_records_is_invalid(processor: BdlGamesProcessor,
                                               sink: InMemoryRawSink) -> None:
    doc = changed(changed(games_file(), "data.0.id", "x"), "data.1.date", "yesterday")
    with pytest.raises(InvalidFile, match=r"no valid record; data\[0\]\.id: .*; data\[1\]\.date"):
        processor.process(event(MORNING), encode(doc))
    assert sink.statements == 0


def test_an_empty_day_is_no_data_and_writes_nothing(processor: BdlGamesProcessor,
                                                    sink: InMemoryRawSink) -> None:
    processor.process(event(MORNING), encode(games_file()))
    result = processor.process(event(NIGHT), encode({"data": [], "meta": {"next_cursor": None}}))
    assert (result.status, result.record_count, result.game_date) == ("no_data", 0, None)
    assert sink.statements == 1 and len(sink.rows(BDL_GAMES)) == 2


def test_build_processors_names_all_three() -> None:
    processors = build_processors(InMemoryRawSink(), dataset="staging_raw")
    assert sorted(processors) == ["bdl_games", "bdl_player_box_scores",
                                  "oddsa_player_points_props"]
    for name, p in processors.items():
        assert p.name == name and p.table.dataset == "staging_raw"
