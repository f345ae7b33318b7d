"""The one place where Google clients are built and dependencies wired.

Settings come from the environment (Cloud Run conventions) or the CLI;
nothing here is a module-level singleton.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from outbox.bigquery_lease import BigQueryLease
from outbox.bigquery_read import StorageReader
from outbox.bigquery_store import BigQueryOutboxStore
from outbox.bigquery_write import LegacyStreamingAppender, RowAppender, StorageWriteAppender
from outbox.errors import ConfigError
from outbox.ports import Publisher
from outbox.routes import ROUTES, Route
from outbox.schema import TableSpec, check_project

if TYPE_CHECKING:
    from outbox.pubsub_publisher import PubSubPublisher
    from relay.cycle import Relay, RelayConfig

WriteMode = Literal["storage-write", "legacy-streaming"]
ReadMode = Literal["storage-read", "query"]
_GRPC_OPTIONS = [("grpc.max_receive_message_length", 256 * 1024 * 1024)]


@dataclass(frozen=True)
class Settings:
    project: str
    bigquery_emulator: str | None = None
    """host:port of bqemulator's REST API; None for real BigQuery."""
    bigquery_emulator_grpc: str | None = None
    pubsub_emulator: str | None = None
    write_mode: WriteMode = "storage-write"
    read_mode: ReadMode = "storage-read"
    routes: tuple[Route, ...] = field(default=ROUTES)

    def __post_init__(self) -> None:
        check_project(self.project)
        if self.write_mode not in ("storage-write", "legacy-streaming"):
            raise ConfigError(
                f"OUTBOX_WRITE_MODE must be storage-write or legacy-streaming, "
                f"got {self.write_mode!r}"
            )
        if self.read_mode not in ("storage-read", "query"):
            raise ConfigError(
                f"OUTBOX_READ_MODE must be storage-read or query, got {self.read_mode!r}"
            )

    @classmethod
    def from_env(cls, project: str | None = None) -> Settings:
        env = os.environ
        project = project or env.get("OUTBOX_PROJECT") or env.get("GOOGLE_CLOUD_PROJECT")
        if not project:
            raise ConfigError("no project: set OUTBOX_PROJECT or GOOGLE_CLOUD_PROJECT")
        bq = env.get("BIGQUERY_EMULATOR_HOST") or None
        grpc = env.get("BIGQUERY_EMULATOR_GRPC_HOST") or None
        if bq and not grpc:
            grpc = bq.rsplit(":", 1)[0] + ":9060"
        return cls(
            project=project,
            bigquery_emulator=bq,
            bigquery_emulator_grpc=grpc,
            pubsub_emulator=env.get("PUBSUB_EMULATOR_HOST") or None,
            write_mode=env.get("OUTBOX_WRITE_MODE", "storage-write"),  # type: ignore[arg-type]
            read_mode=env.get("OUTBOX_READ_MODE", "storage-read"),  # type: ignore[arg-type]
        )

    def route(self, name: str) -> Route:
        for r in self.routes:
            if r.name == name:
                return r
        known = ", ".join(r.name for r in self.routes)
        raise ConfigError(f"unknown route {name!r}; known routes: {known}")


def bigquery_client(settings: Settings) -> bigquery.Client:
    if settings.bigquery_emulator:
        return bigquery.Client(
            project=settings.project,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=f"http://{settings.bigquery_emulator}"),
        )
    return bigquery.Client(project=settings.project)


def _storage_client(settings: Settings, client_cls: Any, transport_cls: Any) -> Any:
    """A Storage API client: an insecure channel to the emulator, or the real service."""
    if settings.bigquery_emulator_grpc:
        import grpc

        channel = grpc.insecure_channel(settings.bigquery_emulator_grpc, options=_GRPC_OPTIONS)
        return client_cls(transport=transport_cls(channel=channel))
    return client_cls()


def row_appender(settings: Settings, client: bigquery.Client) -> RowAppender:
    if settings.write_mode == "legacy-streaming":
        return LegacyStreamingAppender(client, settings.project)
    from google.cloud.bigquery_storage_v1 import BigQueryWriteClient
    from google.cloud.bigquery_storage_v1.services.big_query_write.transports import (
        BigQueryWriteGrpcTransport,
    )

    write = _storage_client(settings, BigQueryWriteClient, BigQueryWriteGrpcTransport)
    return StorageWriteAppender(write, settings.project)


def storage_reader(settings: Settings) -> StorageReader | None:
    if settings.read_mode == "query":
        return None
    from google.cloud.bigquery_storage_v1 import BigQueryReadClient
    from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
        BigQueryReadGrpcTransport,
    )

    read = _storage_client(settings, BigQueryReadClient, BigQueryReadGrpcTransport)
    return StorageReader(read, settings.project)


def all_tables(settings: Settings) -> list[TableSpec]:
    """Every table the platform needs (the one list lives in :mod:`outbox.infra`)."""
    from outbox.infra import platform_tables

    return list(platform_tables())


@dataclass
class Wiring:
    """Everything a process needs, built once."""

    settings: Settings
    bigquery: bigquery.Client
    appender: RowAppender
    reader: StorageReader | None

    @classmethod
    def build(cls, settings: Settings) -> Wiring:
        client = bigquery_client(settings)
        return cls(settings, client, row_appender(settings, client), storage_reader(settings))

    def store(self, route: Route) -> BigQueryOutboxStore:
        return BigQueryOutboxStore(
            self.bigquery, self.appender, route.table, route.name,
            project=self.settings.project, columns=route.columns, reader=self.reader,
        )

    def publisher(self) -> PubSubPublisher:
        # Imported here: scrapers and processors use Wiring but never publish.
        from outbox.pubsub_publisher import PubSubPublisher

        return PubSubPublisher(self.settings.project)

    def relay(
        self, route: Route, config: RelayConfig | None = None, publisher: Publisher | None = None
    ) -> Relay:
        """The relay for ``route``; every door (HTTP, scheduler, CLI) builds it here."""
        from relay.cycle import Relay

        lease = BigQueryLease(self.bigquery, self.settings.project)
        return Relay(route, self.store(route), publisher or self.publisher(), config, lease)
