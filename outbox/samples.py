"""Realistic scraper log rows, for `outbox dev`, benchmarks and tests."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import Any

from outbox.clock import utcnow

SCRAPERS = {
    "bdl_games_scraper": "ball-dont-lie/games",
    "bdl_player_box_scores_scraper": "ball-dont-lie/player-box-scores",
    "oddsa_events": "odds-api/events",
    "oddsa_player_props": "odds-api/player-props",
    "nbac_schedule_scraper": "nba-com/schedule",
    "espn_scoreboard_scraper": "espn/scoreboard",
}
WORKFLOWS = ("morning_operations", "real_time_business", "post_game_collection", "MANUAL")


def scraper_row(
    rng: random.Random | None = None,
    now: dt.datetime | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """One log row as a scraper run would write it; ``overrides`` win."""
    rng = rng or random.Random()
    now = now or utcnow()
    name = rng.choice(list(SCRAPERS))
    status = rng.choices(("success", "no_data", "failed"), weights=(8, 1, 1))[0]
    duration = round(rng.uniform(0.4, 25.0), 3)
    run_id = uuid.UUID(int=rng.getrandbits(128)).hex[:8]
    stamp = now.strftime("%Y%m%d_%H%M%S")
    row: dict[str, Any] = {
        "execution_id": run_id,
        "scraper_name": name,
        "workflow": rng.choice(WORKFLOWS),
        "status": status,
        "triggered_at": now - dt.timedelta(seconds=duration),
        "source": rng.choice(("CONTROLLER", "SCHEDULER", "CLOUD_RUN")),
        "environment": "local",
        "triggered_by": "outbox-dev",
        "retry_count": 0,
        "recovery": False,
        "run_id": run_id,
        "opts": {"date": now.date().isoformat(), "group": "prod"},
    }
    if status == "failed":
        row.update(error_type="HTTPError", error_message="502 Bad Gateway from upstream API")
        row["data_summary"] = {"record_count": 0, "is_empty_report": True,
                               "scraper_class": name}
    else:
        count = rng.randint(1, 450) if status == "success" else 0
        row.update(
            completed_at=now,
            duration_seconds=duration,
            gcs_path=f"gs://nba-scraped-data/{SCRAPERS[name]}/{now.date()}/{stamp}.json",
            data_summary={"record_count": count, "is_empty_report": count == 0,
                          "scraper_stats": {"records": count}, "scraper_class": name},
        )
    row.update(overrides)
    return row


def scraper_rows(n: int, seed: int = 0, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """``n`` rows with unique execution ids, spread over the last minutes."""
    rng = random.Random(seed)
    now = now or utcnow()
    rows = []
    for i in range(n):
        row = scraper_row(rng, now)
        row["execution_id"] = f"{row['execution_id']}{i:07d}"
        row["triggered_at"] = now - dt.timedelta(seconds=30, milliseconds=n - i)
        rows.append(row)
    return rows
