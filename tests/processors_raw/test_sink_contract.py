"""The RawTableSink contract: the in-memory double and BigQuery (bqemulator) pass it alike."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from outbox.errors import InvalidRow, PermanentError
from outbox.rows import Row
from processors.raw.tables import BDL_GAMES, ODDS_API_PLAYER_POINTS_PROPS
from processors_raw.harness import Harness

D1, D2 = dt.date(2026, 11, 27), dt.date(2026, 11, 28)
T0 = dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)
LATER = T0 + dt.timedelta(hours=13)


def lineage(scraped_at: dt.datetime = T0) -> Row:
    return {"source_execution_id": f"run{scraped_at:%H%M}", "source_file": "gs://b/f.json",
            "scraped_at": scraped_at, "processed_at": scraped_at + dt.timedelta(minutes=1)}


def game(game_id: int, day: dt.date = D2, scraped_at: dt.datetime = T0, **kw: Any) -> Row:
    return {"game_id": game_id, "game_date": day, "season": 2026, "status": "Final",
            "home_team_id": 14, "visitor_team_id": 2, "home_team_score": 100 + game_id,
            **lineage(scraped_at), **kw}


def line(player: str, update: dt.datetime, price: int = -115, side: str = "Over") -> Row:
    return {"event_id": "e1", "game_date": D2, "commence_time": T0 + dt.timedelta(hours=14),
            "home_team": "Los Angeles Lakers", "away_team": "Boston Celtics",
            "bookmaker": "draftkings", "player_name": player, "side": side, "price": price,
            "point": 25.5, "last_update": update, **lineage(update)}


def ids(h: Harness) -> list[tuple[dt.date, int]]:
    return [(r["game_date"], r["game_id"]) for r in h.rows(BDL_GAMES)]


def test_rows_come_back_whole_and_typed(harness: Harness) -> None:
    rows = [game(1, time="Q3 5:32", postseason=False, period=3), game(2, status=None)]
    assert harness.sink.upsert(harness.table(BDL_GAMES), rows, replace=True) == 2
    got = harness.rows(BDL_GAMES)
    assert got == [{k: v for k, v in r.items() if v is not None} for r in rows]
    assert isinstance(got[0]["scraped_at"], dt.datetime) and got[0]["scraped_at"] == T0


def test_the_same_rows_twice_leave_the_same_rows(harness: Harness) -> None:
    table = harness.table(BDL_GAMES)
    rows = [game(1), game(2), game(3, day=D1)]
    harness.sink.upsert(table, rows, replace=True)
    first = harness.rows(BDL_GAMES)
    harness.sink.upsert(table, rows, replace=True)
    assert harness.rows(BDL_GAMES) == first and len(first) == 3


def test_a_newer_full_day_replaces_its_dates_only(harness: Harness) -> None:
    table = harness.table(BDL_GAMES)
    harness.sink.upsert(table, [game(1), game(2), game(3, day=D1)], replace=True)
    harness.sink.upsert(table, [game(1, scraped_at=LATER, status="Final/OT")], replace=True)
    assert ids(harness) == [(D1, 3), (D2, 1)]
    assert harness.rows(BDL_GAMES)[1]["status"] == "Final/OT"


def test_without_replace_absent_rows_stay(harness: Harness) -> None:
    table = harness.table(BDL_GAMES)
    harness.sink.upsert(table, [game(1), game(2)], replace=True)
    harness.sink.upsert(table, [game(1, scraped_at=LATER)])
    assert ids(harness) == [(D2, 1), (D2, 2)]


def test_a_file_with_several_dates_replaces_each(harness: Harness) -> None:
    table = harness.table(BDL_GAMES)
    harness.sink.upsert(table, [game(1, day=D1), game(2, day=D1), game(3), game(4)], replace=True)
    harness.sink.upsert(table, [game(1, day=D1, scraped_at=LATER), game(4, scraped_at=LATER)],
                        replace=True)
    assert ids(harness) == [(D1, 1), (D2, 4)]


def test_an_older_file_arriving_late_changes_nothing_newer(harness: Harness) -> None:
    table = harness.table(BDL_GAMES)
    harness.sink.upsert(table, [game(1, scraped_at=LATER, status="Final")], replace=True)
    harness.sink.upsert(table, [game(1, status="1st Qtr")], replace=True)
    assert [r["status"] for r in harness.rows(BDL_GAMES)] == ["Final"]
    # ...nor deletes newer rows it does not list.
    harness.sink.upsert(table, [game(9)], replace=True)
    assert ids(harness) == [(D2, 1), (D2, 9)]


@pytest.mark.parametrize("newer_first", [True, False])
def test_two_files_of_one_day_loaded_at_once_end_with_the_newer(
    harness: Harness, newer_first: bool
) -> None:
    table = harness.table(BDL_GAMES)
    older = [game(1, status="1st Qtr"), game(2)]
    newer = [game(1, scraped_at=LATER, status="Final"), game(3, scraped_at=LATER)]
    files = [newer, older] if newer_first else [older, newer]
    with ThreadPoolExecutor(2) as pool:
        for done in [pool.submit(harness.sink.upsert, table, f, replace=True) for f in files]:
            done.result()
    got = {r["game_id"]: r["status"] for r in harness.rows(BDL_GAMES)}
    # Game 2 survives only when the older file lands last (the documented insert limit).
    assert got[1] == "Final" and got[3] == "Final" and set(got) <= {1, 2, 3}


def test_snapshots_are_kept_side_by_side(harness: Harness) -> None:
    table = harness.table(ODDS_API_PLAYER_POINTS_PROPS)
    first = [line("LeBron James", T0), line("LeBron James", T0, -105, "Under")]
    second = [line("LeBron James", LATER, -125)]
    harness.sink.upsert(table, first)
    harness.sink.upsert(table, second)
    harness.sink.upsert(table, first)
    got = harness.rows(ODDS_API_PLAYER_POINTS_PROPS)
    assert sorted((r["last_update"], r["side"], r["price"]) for r in got) == [
        (T0, "Over", -115), (T0, "Under", -105), (LATER, "Over", -125)]


def test_snapshot_tables_cannot_be_replaced(harness: Harness) -> None:
    with pytest.raises(PermanentError, match="snapshots"):
        harness.sink.upsert(harness.table(ODDS_API_PLAYER_POINTS_PROPS),
                            [line("LeBron James", T0)], replace=True)


def test_duplicate_keys_in_one_call_last_wins(harness: Harness) -> None:
    n = harness.sink.upsert(harness.table(BDL_GAMES), [game(1, status="A"), game(1, status="B")])
    assert n == 1 and [r["status"] for r in harness.rows(BDL_GAMES)] == ["B"]


def test_an_invalid_row_refuses_the_call_and_writes_nothing(harness: Harness) -> None:
    bad = game(2)
    del bad["season"]
    with pytest.raises(InvalidRow) as err:
        harness.sink.upsert(harness.table(BDL_GAMES), [game(1), bad])
    assert err.value.field == "season"
    assert harness.rows(BDL_GAMES) == []


def test_no_rows_is_a_no_op(harness: Harness) -> None:
    assert harness.sink.upsert(harness.table(BDL_GAMES), [], replace=True) == 0
    assert harness.rows(BDL_GAMES) == []


def test_large_snapshots_load_in_several_statements(harness: Harness) -> None:
    harness.sink.max_rows = 2
    rows = [line(f"Player {i}", T0) for i in range(5)]
    assert harness.sink.upsert(harness.table(ODDS_API_PLAYER_POINTS_PROPS), rows) == 5
    assert len(harness.rows(ODDS_API_PLAYER_POINTS_PROPS)) == 5


def test_a_full_day_too_large_for_one_statement_is_refused_whole(harness: Harness) -> None:
    harness.sink.max_rows = 2
    with pytest.raises(PermanentError, match="more than 2"):
        harness.sink.upsert(harness.table(BDL_GAMES), [game(1), game(2), game(3)], replace=True)
    assert harness.rows(BDL_GAMES) == []
