"""The Lease contract, run against the in-memory lease and BigQuery's on bqemulator."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from outbox.ports import Lease
from outbox.schema import OUTBOX_LEASE
from outbox.testing import InMemoryLease

MINUTE = dt.timedelta(minutes=1)


def _bigquery_lease(bq: Any) -> Lease:
    from outbox.bigquery_lease import BigQueryLease
    from outbox.bigquery_tables import ensure_tables
    from outbox.wiring import Settings, bigquery_client

    settings = Settings(project=bq.project,
                        bigquery_emulator=bq.rest_url.removeprefix("http://"),
                        bigquery_emulator_grpc=bq.grpc_endpoint)
    client = bigquery_client(settings)
    table = OUTBOX_LEASE.with_location(f"lease_{uuid.uuid4().hex[:10]}")
    ensure_tables(client, settings.project, [table])
    return BigQueryLease(client, settings.project, table)


@pytest.fixture(params=["memory", pytest.param("bigquery", marks=pytest.mark.emulator)])
def lease(request: pytest.FixtureRequest) -> Iterator[Lease]:
    if request.param == "memory":
        yield InMemoryLease()
    else:
        yield _bigquery_lease(request.getfixturevalue("bq_emulator"))


def test_a_free_lease_goes_to_the_first_holder_only(lease: Lease) -> None:
    assert lease.acquire("scrapers", "a", MINUTE)
    assert not lease.acquire("scrapers", "b", MINUTE)
    assert lease.acquire("scrapers", "a", MINUTE), "the holder may renew"


def test_routes_are_leased_independently(lease: Lease) -> None:
    assert lease.acquire("scrapers", "a", MINUTE)
    assert lease.acquire("processors", "b", MINUTE)


def test_release_frees_it_and_only_the_holder_can_release(lease: Lease) -> None:
    assert lease.acquire("scrapers", "a", MINUTE)
    lease.release("scrapers", "b")
    assert not lease.acquire("scrapers", "b", MINUTE)
    lease.release("scrapers", "a")
    lease.release("scrapers", "a")
    assert lease.acquire("scrapers", "b", MINUTE)


def test_an_expired_lease_can_be_taken_over(lease: Lease) -> None:
    # A zero ttl expires at once: the holder "died" without releasing.
    assert lease.acquire("scrapers", "dead", dt.timedelta(0))
    assert lease.acquire("scrapers", "next", MINUTE)
    assert not lease.acquire("scrapers", "dead", MINUTE)


def test_a_negative_ttl_is_refused(lease: Lease) -> None:
    with pytest.raises(ValueError):
        lease.acquire("scrapers", "a", dt.timedelta(seconds=-1))


def test_racing_holders_get_exactly_one_lease(lease: Lease) -> None:
    lease.acquire("scrapers", "seed", dt.timedelta(0))  # row exists; expired
    barrier = threading.Barrier(4)
    won: list[str] = []

    def race(name: str) -> None:
        barrier.wait()
        if lease.acquire("scrapers", name, MINUTE):
            won.append(name)

    threads = [threading.Thread(target=race, args=(f"r{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1, won
