from tests.ingestion_fixtures import consumers
from tests.kafka_fixtures import kafka_bootstrap
from tests.postgres_fixtures import (
    database_url,
    engine,
    module_engine,
    postgres_admin_url,
    postgres_source,
    unique_id,
)

__all__ = [
    "consumers",
    "database_url",
    "engine",
    "kafka_bootstrap",
    "module_engine",
    "postgres_admin_url",
    "postgres_source",
    "unique_id",
]
