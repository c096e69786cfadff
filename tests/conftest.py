from hypothesis import settings

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

# A property test asserts behaviour, not time: no example has a deadline. Hypothesis's default
# (200 ms an example) would fail a pure-function example that a busy machine, or the suite's
# other process, held up.
settings.register_profile("giftledger", deadline=None)
settings.load_profile("giftledger")
