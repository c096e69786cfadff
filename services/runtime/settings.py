"""Runtime configuration, read from the environment (and an optional `.env` file).

Every number has bounds: a typo in a deployment fails at start-up with a clear message instead of
turning into an unbounded batch or a zero-length wait. Unset `DATABASE_URL` means the embedded
PostgreSQL; unset `KAFKA_BOOTSTRAP_SERVERS` means the embedded broker. Errors name the variable
and never repeat its value, which may be a password or a token.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from ledger.accounts import ACCOUNT_CACHE_SIZE_MAX
from ledger.database import PORT_MAX, database_url_problem
from ledger.partitions import TRANSFER_PARTITION_MONTHS_AHEAD, TRANSFER_PARTITION_MONTHS_AHEAD_MAX
from schemas.events import OPERATOR_NAME_LENGTH_MAX, OPERATOR_NAME_PATTERN

COUNTRY_COUNT_MAX = 300
TALLY_THRESHOLD_MAX = 10**12
# The oldest a profile may be before a request, in days, that the setting accepts: ten years.
PROFILE_MAX_AGE_DAYS_MAX = 3_650
SETTINGS_ERROR_FIELD = re.compile(r'field "(?P<field>\w+)"')
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# How long a payout result for a cash-out not known yet waits for its request, and how many may
# wait at once (services/ingestion/event_store.py).
PAYOUT_PARK_S_DEFAULT = 3_600.0
PAYOUT_PARK_COUNT_MAX_DEFAULT = 10_000


CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
TallyThreshold = Annotated[int, Field(ge=0, le=TALLY_THRESHOLD_MAX)]


class SettlementBreak(enum.StrEnum):
    """A break the simulated bank can put into its settlement files (`SETTLEMENT_BREAKS`)."""

    UNKNOWN_PAYOUT = "unknown_payout"
    AMOUNT_OFF = "amount_off"
    PAID_BUT_FAILED = "paid_but_failed"
    MISSING_DAY = "missing_day"


class EligibilitySettings(BaseSettings):
    """The thresholds, from `ELIGIBILITY_*` variables; lists and maps are JSON, e.g.
    `ELIGIBILITY_ENABLED_COUNTRIES='["US","GB"]'`,
    `ELIGIBILITY_FOLLOWER_MINIMUM_BY_COUNTRY='{"US": 10000, "GB": 5000}'`."""

    model_config = SettingsConfigDict(
        env_prefix="ELIGIBILITY_", env_file=".env", extra="ignore", frozen=True
    )

    age_min_years: int = Field(
        default=18, ge=13, le=120, description="Youngest age, in whole years, allowed to cash out."
    )
    enabled_countries: tuple[CountryCode, ...] = Field(
        default=("US", "GB", "DE", "FR", "IT", "ES"),
        max_length=COUNTRY_COUNT_MAX,
        description="ISO 3166-1 alpha-2 countries where cash-out is open.",
    )
    coming_soon_countries: tuple[CountryCode, ...] = Field(
        default=("CA", "AU"),
        max_length=COUNTRY_COUNT_MAX,
        description="Countries announced but not open yet: refused, and named as coming soon.",
    )
    follower_minimum_by_country: dict[CountryCode, TallyThreshold] = Field(
        default_factory=lambda: {"US": 10_000},
        max_length=COUNTRY_COUNT_MAX,
        description="Regional follower minimum; countries not listed use the default.",
    )
    follower_minimum_default: TallyThreshold = Field(
        default=10_000, description="Follower minimum for countries without their own."
    )
    video_views_30d_min: TallyThreshold = Field(
        default=1_000, description="Fewest video views in the last 30 days."
    )
    posts_30d_min: TallyThreshold = Field(
        default=3, description="Fewest posts in the last 30 days."
    )
    profile_max_age_days: int = Field(
        default=30,
        gt=0,
        le=PROFILE_MAX_AGE_DAYS_MAX,
        description="How many days before a request its creator's profile may be dated for its"
        " video views and posts of the last 30 days to count: a profile dated earlier says"
        " nothing of the request's last 30 days, and fails both rules.",
    )

    @model_validator(mode="after")
    def _country_lists_are_consistent(self) -> Self:
        for name, countries in (
            ("enabled_countries", self.enabled_countries),
            ("coming_soon_countries", self.coming_soon_countries),
        ):
            if len(set(countries)) != len(countries):
                raise ValueError(f"ELIGIBILITY_{name.upper()} lists a country twice")
        both = sorted(set(self.enabled_countries) & set(self.coming_soon_countries))
        if both:
            raise ValueError(
                f"{', '.join(both)} in both ELIGIBILITY_ENABLED_COUNTRIES and"
                " ELIGIBILITY_COMING_SOON_COUNTRIES: a country enabled is no longer coming soon,"
                " so set ELIGIBILITY_COMING_SOON_COUNTRIES too (JSON, e.g. '[\"AU\"]')"
            )
        return self

    def follower_minimum(self, country: str) -> int:
        return self.follower_minimum_by_country.get(country, self.follower_minimum_default)


Role = Literal["finance", "operator"]
# The name a token given in the old form (`"<digest>": "<role>"`) acts under: its digest's start.
UNNAMED_TOKEN_DIGEST_DIGITS = 12

OperatorName = Annotated[
    str,
    Field(min_length=1, max_length=OPERATOR_NAME_LENGTH_MAX, pattern=OPERATOR_NAME_PATTERN),
]


class NamedToken(BaseModel):
    """A token's role and the name the operator actions log records as who acted."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    role: Role
    name: OperatorName

    @model_validator(mode="before")
    @classmethod
    def _role_and_name(cls, value: object) -> object:
        if isinstance(value, dict) and set(value) != {"role", "name"}:
            raise PydanticCustomError(
                "token_form",
                'a named token is {"role": "finance" or "operator", "name": "<who>"}',
            )
        return value


def _token_form(value: object) -> str:
    return "named" if isinstance(value, dict | NamedToken) else "role"


# `"<digest>": "operator"` (the old form) or `"<digest>": {"role": "operator", "name": "alice"}`.
TokenEntry = Annotated[
    Annotated[Role, Tag("role")] | Annotated[NamedToken, Tag("named")],
    Discriminator(_token_form),
]


def named_tokens(tokens: Mapping[str, str | NamedToken]) -> dict[str, NamedToken]:
    """Every token as a `NamedToken`; one given by its role alone is named by the first
    UNNAMED_TOKEN_DIGEST_DIGITS hex digits of its digest."""
    return {
        digest: NamedToken(role=entry, name=digest[:UNNAMED_TOKEN_DIGEST_DIGITS])  # type: ignore[arg-type]
        if isinstance(entry, str)
        else entry
        for digest, entry in tokens.items()
    }


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    database_url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL, e.g. postgresql+asyncpg://user@host:5432/giftledger. "
        "Unset: start the embedded PostgreSQL.",
    )
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        description="Comma-separated host:port list. Unset: start the embedded broker.",
    )
    data_dir: Path = Field(
        default=Path(".giftledger"),
        description="Where the embedded PostgreSQL keeps its data directory.",
    )
    eligibility: EligibilitySettings = Field(
        default_factory=EligibilitySettings,
        description="The Creator Next thresholds, read from the ELIGIBILITY_* variables.",
    )

    services_database_url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL `giftledger run` (the consumers, the API and the console, the"
        " upkeeps) connects with: a login of its own that owns nothing and is only a member of"
        " giftledger_writer and giftledger_reader; `run` refuses a superuser, a login with"
        " CREATEROLE and one that owns, or may act as the owner of, the database, the schema or"
        " any of its tables. The other commands keep DATABASE_URL. Unset: `run` connects with"
        " DATABASE_URL too and only switches to those roles, which any statement on its"
        " connections may switch back from (RESET ROLE).",
    )
    database_writer_role: str = Field(
        default="giftledger_writer",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="The role the consumers write as: no UPDATE or DELETE on ledger rows.",
    )
    db_pool_size: int = Field(default=8, ge=1, le=64)
    db_pool_overflow_max: int = Field(default=4, ge=0, le=64)
    db_pool_timeout_s: float = Field(default=10.0, gt=0, le=300)
    db_statement_timeout_ms: int = Field(default=30_000, ge=100, le=600_000)

    ledger_batch_size_max: int = Field(
        default=8_192, ge=1, le=100_000, description="Transfers posted in one database transaction."
    )
    ledger_conflict_retry_count_max: int = Field(default=5, ge=0, le=50)
    ledger_account_cache_size_max: int = Field(
        default=ACCOUNT_CACHE_SIZE_MAX,
        ge=1_000,
        le=10_000_000,
        description="Accounts whose id (by name) and whose asset and rules (by id) each process"
        " keeps in memory; a cache that is full starts over. About 160 and 190 bytes an account:"
        " the default holds both within about 35 MiB.",
    )
    transfer_partition_months_ahead: int = Field(
        default=TRANSFER_PARTITION_MONTHS_AHEAD,
        ge=1,
        le=TRANSFER_PARTITION_MONTHS_AHEAD_MAX,
        description="Months after the current one (UTC) whose transfers partition `giftledger"
        " run` keeps ready, on start and then daily.",
    )

    kafka_topic_prefix: str = Field(default="", max_length=64, pattern=r"^[A-Za-z0-9._-]*$")
    kafka_partition_count: int = Field(default=8, ge=1, le=1024)
    kafka_consumer_group: str = Field(default="giftledger", min_length=1, max_length=200)
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1_000, le=300_000)
    consumer_batch_size_max: int = Field(default=2_000, ge=1, le=50_000)
    consumer_batch_wait_ms: int = Field(default=50, ge=1, le=10_000)
    consumer_cashout_batch_size_max: int = Field(
        default=250,
        ge=1,
        le=5_000,
        description="Records per batch of `cashouts.requested` and `payouts.updated` (at most"
        " `consumer_batch_size_max`). A batch's statements are about as many for 250 items as"
        " for 50, so larger batches apply a burst sooner and with less CPU a cash-out"
        " (bench/README.md, 2026-12-05 night: 5,000 requests at once, 692 - 701 against 626 -"
        " 638 cash-outs/s, publish -> paid p99 6.8 - 7.1 against 7.6 - 7.8 s); the wait moves"
        " from Kafka to the outbox, so once taken up a cash-out waits longer (requested -> paid"
        " p99 3.4 against 1.3 - 1.4 s). Under a light load batches are small whatever the"
        " bound.",
    )
    outbox_retention_hours: int = Field(
        default=168,
        ge=0,
        le=87_840,
        description="Published outbox rows older than this many hours are deleted by `giftledger"
        " run` (services/cashout/outbox_retention.py); 0 keeps them for good. Unpublished rows"
        " are never deleted.",
    )
    consumer_gift_fetch_wait_ms_max: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="How long the broker may hold a fetch of `gifts.sent` that finds no new"
        " record; the embedded broker holds it this long even when records arrive meanwhile, so"
        " it adds to latency.",
    )
    consumer_cashout_fetch_wait_ms_max: int = Field(
        default=50,
        ge=1,
        le=10_000,
        description="The same for `cashouts.requested` and `payouts.updated`, and for the"
        " simulated bank's fetches of `payouts.requested`: a cash-out crosses three fetches on"
        " its way to `paid`, and on the embedded broker each may hold it for the whole wait.",
    )
    consumer_fetch_wait_ms_max: int = Field(
        default=200,
        ge=1,
        le=10_000,
        description="The same for every other topic. Each fetch that finds nothing costs CPU in"
        " the consumer and the broker: a subscriber idles at 1 / wait fetches a second.",
    )
    consumer_fetch_max_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=64 * 1024,
        le=256 * 1024 * 1024,
        description="Bytes a consumer fetches at once: bounds its memory whatever the backlog.",
    )
    consumer_partition_fetch_max_bytes: int = Field(
        default=512 * 1024, ge=16 * 1024, le=64 * 1024 * 1024
    )
    consumer_db_retry_backoff_ms_max: int = Field(default=5_000, ge=10, le=300_000)
    consumer_db_retry_count_max: int = Field(default=1_000, ge=1, le=1_000_000)
    consumer_poison_attempts_max: int = Field(default=3, ge=1, le=100)
    cashout_minimum_usd_cents: int = Field(default=1_000, ge=1, le=10**9)
    cashout_daily_limit_usd_cents: int = Field(default=100_000, ge=1, le=10**11)
    cashout_answer_window_s: float = Field(
        default=86_400,
        gt=0,
        le=90 * 86_400,
        description="A hold with no answer from the bank for longer than this is listed as stale.",
    )
    payout_rail_seed: int = Field(default=0, ge=0, le=2**63 - 1)
    payout_rail_paid_delay_ms: int = Field(default=200, ge=0, le=600_000)
    payout_rail_failure_rate: float = Field(default=0.05, ge=0, le=1)
    payout_rail_return_rate: float = Field(default=0.02, ge=0, le=1)
    payout_rail_return_delay_ms: int = Field(default=1_000, ge=0, le=3_600_000)
    payout_rail_in_flight_max: int = Field(default=10_000, ge=1, le=1_000_000)
    payout_rail_settlement_dir: Path | None = Field(
        default=None,
        description="Where the simulated bank keeps its journal and writes a settlement file per"
        " UTC day (`giftledger run --payout-rail`); unset: no files.",
    )
    payout_rail_settlement_breaks: frozenset[SettlementBreak] = Field(
        default=frozenset(),
        description="Breaks the simulated bank writes into each settlement file, as a JSON list"
        " of `unknown_payout`, `amount_off`, `paid_but_failed` and `missing_day`.",
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65_535,
        description="Serve Prometheus metrics on this port (0: do not serve).",
    )
    metrics_host: str = Field(default="127.0.0.1", min_length=1, max_length=255)
    reversal_park_s: float = Field(
        default=300.0,
        gt=0,
        le=7 * 24 * 3600,
        description="How long a reversal that arrived before its gift waits for it.",
    )
    payout_park_s: float = Field(
        default=PAYOUT_PARK_S_DEFAULT,
        ge=0,
        le=7 * 24 * 3600,
        description="How long a payout result (`payouts.updated`) for a cash-out whose request has"
        " not arrived waits for it (after a restore, the bank's results can be read again before"
        " the requests); then it is dead-lettered as `unknown_cashout`. 0: not parked,"
        " dead-lettered at once.",
    )
    payout_park_count_max: int = Field(
        default=PAYOUT_PARK_COUNT_MAX_DEFAULT,
        ge=1,
        le=1_000_000,
        description="How many payout results may be parked at once (this deployment's); a result"
        " that finds them all taken is dead-lettered at once, with the reason.",
    )
    api_host: str = Field(
        default="127.0.0.1", min_length=1, max_length=255, description="The finance API's address."
    )
    api_port: int = Field(default=8_000, ge=1, le=65_535, description="The finance API's port.")
    api_forwarded_allow_ips: str = Field(
        default="127.0.0.1,::1",
        min_length=1,
        max_length=1_000,
        description="The addresses (comma-separated IP addresses or networks, or `*` for any)"
        " whose X-Forwarded-Proto and X-Forwarded-For the API believes: a TLS-terminating proxy"
        " in front of it. A request through it with X-Forwarded-Proto: https is taken as https,"
        " so the console's cookies are Secure.",
    )
    api_tokens: Annotated[dict[str, TokenEntry], NoDecode] = Field(
        default_factory=dict,
        max_length=1_000,
        description="Finance API bearer tokens, as JSON from the lowercase hex SHA-256 digest of "
        "each token to its role and the name operator actions record as who acted, e.g. "
        'API_TOKENS=\'{"<sha256 hex>": {"role": "operator", "name": "alice"}}\'; a role alone '
        '(`"<sha256 hex>": "finance"`) is named by the digest\'s first 12 hex digits. Only '
        "digests are configured, never the tokens. Empty: every authenticated route answers 401.",
    )
    operator_name: OperatorName | None = Field(
        default=None,
        description="Who `giftledger operator`, `rates add`, `rates fx-add` and `close` act as "
        "when `--as` is not given.",
    )
    api_concurrency_max: int = Field(
        default=256,
        ge=1,
        le=100_000,
        description="Requests the finance API handles at once; one more is answered 503 with"
        " Retry-After at once.",
    )
    api_page_size_max: int = Field(
        default=1_000,
        ge=1,
        le=1_000,
        description="Most statement lines or cash-outs one API page returns.",
    )
    api_time_range_days_max: int = Field(
        default=366,
        ge=1,
        le=3_660,
        description="Longest from-to range, in days, a statement or report may ask for.",
    )
    api_database_url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL the finance API and the console read through, e.g. a"
        " PostgreSQL streaming replica of DATABASE_URL's database. Unset: they read the database"
        " they write (DATABASE_URL, or the embedded PostgreSQL). Writes (operator actions,"
        " re-drives) always go to that database.",
    )
    api_database_role: str = Field(
        default="giftledger_reader",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="The read-only PostgreSQL role every API transaction switches to.",
    )
    console_session_s: int = Field(
        default=8 * 3600,
        ge=60,
        le=7 * 24 * 3600,
        description="How long a console session lasts after signing in with a token.",
    )
    console_sessions_per_caller_max: int = Field(
        default=10,
        ge=1,
        le=1_000,
        description="Most console sessions one token's role and name keeps: their next sign-in"
        " ends their own oldest session, never another's.",
    )
    console_session_count_max: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="Most console sessions the API process keeps in all: a sign-in past it is"
        " answered 503 with Retry-After (when the first session ends); no session is ended for"
        " it.",
    )
    console_sign_in_failures_max: int = Field(
        default=10,
        ge=1,
        le=1_000,
        description="Failed console sign-ins (an unknown token, or a name the token does not"
        " have) one client address (an IPv6 address: its /64) may make under one name in"
        " CONSOLE_SIGN_IN_WINDOW_S; past them, its sign-ins under that name are answered 429 with"
        " Retry-After until the window ends. Sign-ins that give no name count under one name.",
    )
    console_sign_in_address_failures_max: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="Failed console sign-ins one client address may make in"
        " CONSOLE_SIGN_IN_WINDOW_S whatever names they give; past them, every sign-in from it is"
        " answered 429 with Retry-After until the window ends. At least"
        " CONSOLE_SIGN_IN_FAILURES_MAX; unset, the larger of 100 and that.",
    )
    console_sign_in_window_s: int = Field(
        default=300,
        ge=1,
        le=24 * 3600,
        description="The window of CONSOLE_SIGN_IN_FAILURES_MAX (and of"
        " CONSOLE_SIGN_IN_ADDRESS_FAILURES_MAX), from a client's first failed sign-in under the"
        " name (from the address).",
    )

    @field_validator("database_url", "api_database_url", "services_database_url")
    @classmethod
    def _postgresql_url(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None:
            _refuse(database_url_problem(url.get_secret_value()))
        return url

    @model_validator(mode="after")
    def _address_bound_at_least_the_names(self) -> Self:
        per_address = self.console_sign_in_address_failures_max
        per_name = self.console_sign_in_failures_max
        if "console_sign_in_address_failures_max" not in self.model_fields_set:
            # Left unset, it is never below the names' bound (which may be up to 1,000): a
            # configuration that set only that one stays valid.
            object.__setattr__(
                self, "console_sign_in_address_failures_max", max(per_address, per_name)
            )
            return self
        if per_address < per_name:
            raise ValueError(
                f"CONSOLE_SIGN_IN_ADDRESS_FAILURES_MAX ({per_address}) is below"
                f" CONSOLE_SIGN_IN_FAILURES_MAX ({per_name}): an address may fail at least as"
                " often as one name from it"
            )
        return self

    @model_validator(mode="after")
    def _services_login_beside_the_owners(self) -> Self:
        if self.services_database_url is not None and self.database_url is None:
            raise ValueError(
                "SERVICES_DATABASE_URL needs DATABASE_URL, the login that owns the schema and"
                " runs the migrations (the embedded PostgreSQL has no login for the services)"
            )
        return self

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _host_port_list(cls, servers: str | None) -> str | None:
        if servers:
            for server in servers.split(","):
                _refuse(_server_problem(server.strip()))
        return servers

    @field_validator("api_forwarded_allow_ips")
    @classmethod
    def _addresses_or_any(cls, addresses: str) -> str:
        _refuse(forwarded_allow_ips_problem(addresses))
        # As uvicorn reads it: `*` alone, or entries without the spaces around them.
        return ",".join(entry.strip() for entry in addresses.split(","))

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _digests_to_roles(cls, tokens: object) -> object:
        """JSON from the environment; keys checked here so that a token written where its
        digest belongs is never repeated in the error."""
        if isinstance(tokens, str):
            tokens = _json(tokens)
        if isinstance(tokens, dict) and not all(
            isinstance(key, str) and SHA256_HEX.fullmatch(key) for key in tokens
        ):
            raise PydanticCustomError(
                "digest", "every key must be a token's lowercase hex SHA-256 digest, never a token"
            )
        return tokens


def _json(value: str) -> object:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise PydanticCustomError(
            "json", "not valid JSON: expected an object from SHA-256 hex digest to role"
        ) from None


def _refuse(problem: str | None) -> None:
    if problem is not None:
        raise PydanticCustomError("configuration", "{problem}", {"problem": problem})


def forwarded_allow_ips_problem(addresses: str) -> str | None:
    """Why `addresses` is not `*` or a comma-separated list of IP addresses and networks (which
    uvicorn would otherwise take as names no client has, silently), or None."""
    if addresses.strip() == "*":
        return None
    for address in addresses.split(","):
        try:
            if "/" in address:
                ipaddress.ip_network(address.strip())
            else:
                ipaddress.ip_address(address.strip())
        except ValueError:
            return f"{address.strip()!r} is not an IP address or network (nor `*` alone)"
    return None


def _server_problem(server: str) -> str | None:
    host, colon, port = server.rpartition(":")
    if not colon or not host:
        return f"{server!r} is not host:port"
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= PORT_MAX):
        return f"{server!r} has no port number between 1 and {PORT_MAX}"
    return None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def configuration_problems(error: ValidationError | SettingsError) -> list[str]:
    """One `VARIABLE: reason` line per problem in a settings class's error.

    Positions inside a list are named; keys inside a map are not, since a mistaken key may be
    the secret itself (a token where its digest belongs).
    """
    if isinstance(error, SettingsError):
        return [_unparsed_value_problem(error)]
    prefix = _env_prefix(error.title)
    lines = []
    for problem in error.errors(include_input=False):
        if not problem["loc"]:  # a rule across variables: its message names them
            where = f"{prefix.upper()}*: " if prefix else ""
            lines.append(f"{where}{problem['msg']}")
            continue
        field, *inside = problem["loc"]
        positions = "".join(f"[{part}]" for part in inside if isinstance(part, int))
        lines.append(f"{prefix}{field}".upper() + f"{positions}: {problem['msg']}")
    return lines


def _unparsed_value_problem(error: SettingsError) -> str:
    """pydantic-settings refused a JSON value before validation and names only the field."""
    found = SETTINGS_ERROR_FIELD.search(str(error))
    field = found["field"] if found else "?"
    variable = next(
        (
            f"{_env_prefix(settings_class.__name__)}{field}".upper()
            for settings_class in _settings_classes()
            if field in settings_class.model_fields
        ),
        field.upper(),
    )
    reason = "not valid JSON" if isinstance(error.__cause__, json.JSONDecodeError) else str(error)
    return f"{variable}: {reason}"


def _env_prefix(settings_name: str) -> str:
    for settings_class in _settings_classes():
        if settings_class.__name__ == settings_name:
            return str(settings_class.model_config.get("env_prefix", ""))
    return ""


def _settings_classes() -> Iterator[type[BaseSettings]]:
    pending = list(BaseSettings.__subclasses__())
    while pending:
        settings_class = pending.pop()
        yield settings_class
        pending.extend(settings_class.__subclasses__())
