"""Settings refuse a variable that does not parse, naming it and never repeating its value."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError
from sqlalchemy import make_url, text

from ledger.database import create_engine, to_async_url
from services.runtime.settings import EligibilitySettings, Settings, configuration_problems

PASSWORD = "s3cret-word"
DIGEST = "ab" * 32
VARIABLES_UNDER_TEST = (
    "DATABASE_URL",
    "KAFKA_BOOTSTRAP_SERVERS",
    "API_PORT",
    "API_TOKENS",
    "API_FORWARDED_ALLOW_IPS",
)


@pytest.fixture(autouse=True)
def unconfigured(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables these tests set, unset first whatever the session's environment holds."""
    for name in VARIABLES_UNDER_TEST:
        monkeypatch.delenv(name, raising=False)


def _problems(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> list[str]:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None)
    assert PASSWORD not in str(raised.value)
    return configuration_problems(raised.value)


def _settings(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> Settings:
    monkeypatch.setenv(name, value)
    return Settings(_env_file=None)


def test_a_mysql_url_is_refused_as_not_postgresql(monkeypatch: pytest.MonkeyPatch) -> None:
    problems = _problems(monkeypatch, "DATABASE_URL", f"mysql://ledger:{PASSWORD}@db/giftledger")
    assert problems == [
        "DATABASE_URL: mysql:// is not PostgreSQL: expected postgresql:// or postgresql+asyncpg://"
    ]


def test_a_database_url_option_asyncpg_does_not_take_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"postgresql://ledger:{PASSWORD}@db/giftledger?connect_timeout=10"
    [problem] = _problems(monkeypatch, "DATABASE_URL", url)
    assert problem.startswith(
        "DATABASE_URL: the option connect_timeout= is not one asyncpg, giftledger's driver, takes"
    )
    assert PASSWORD not in problem


@pytest.mark.parametrize(
    "query",
    ["target_session_attrs=read-write", "prepared_statement_cache_size=0", "ssl=require"],
)
def test_the_options_asyncpg_takes_are_accepted(
    query: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _settings(monkeypatch, "DATABASE_URL", f"postgresql://ledger:{PASSWORD}@db/giftledger?{query}")


def test_libpq_sslmode_is_read_as_asyncpg_ssl(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"postgresql://ledger:{PASSWORD}@db/giftledger?sslmode=require"
    _settings(monkeypatch, "DATABASE_URL", url)  # accepted
    assert to_async_url(url) == (
        f"postgresql+asyncpg://ledger:{PASSWORD}@db/giftledger?ssl=require"
    )


async def test_a_database_url_with_sslmode_connects(database_url: str) -> None:
    """`sslmode=disable` (the machine's server has no TLS) reaches the server through asyncpg."""
    with_sslmode = make_url(database_url).update_query_dict({"sslmode": "disable"})
    engine = create_engine(to_async_url(with_sslmode.render_as_string(hide_password=False)))
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


def test_a_database_url_that_is_not_a_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _problems(monkeypatch, "DATABASE_URL", "not-a-url") == [
        "DATABASE_URL: not a URL: expected postgresql://user:password@host:port/database"
    ]


def test_a_database_url_with_a_port_that_is_not_a_number_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"postgresql://ledger:{PASSWORD}@db:abc/giftledger"
    assert _problems(monkeypatch, "DATABASE_URL", url) == ["DATABASE_URL: the port is not a number"]


def test_a_database_url_with_a_port_out_of_range_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"postgresql://ledger:{PASSWORD}@db:70000/giftledger"
    assert _problems(monkeypatch, "DATABASE_URL", url) == [
        "DATABASE_URL: port 70000 is not between 1 and 65535"
    ]


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://ledger:{PASSWORD}@db:5432/giftledger",
        "postgres://ledger@db/giftledger",
        "postgresql+asyncpg://ledger@[::1]:5432/giftledger",
        "postgresql:///giftledger",
    ],
)
def test_postgresql_urls_are_accepted(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    database_url = _settings(monkeypatch, "DATABASE_URL", url).database_url
    assert database_url is not None
    assert database_url.get_secret_value() == url


def test_an_api_port_that_is_not_a_number_names_api_port(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _problems(monkeypatch, "API_PORT", "abc") == [
        "API_PORT: Input should be a valid integer, unable to parse string as an integer"
    ]


def test_api_tokens_that_are_not_json_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _problems(monkeypatch, "API_TOKENS", "notjson") == [
        "API_TOKENS: not valid JSON: expected an object from SHA-256 hex digest to role"
    ]


def test_an_unknown_role_in_api_tokens_names_the_variable_and_the_roles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    problems = _problems(monkeypatch, "API_TOKENS", json.dumps({DIGEST: "admin"}))
    assert problems == ["API_TOKENS: Input should be 'finance' or 'operator'"]


def test_a_token_written_where_its_digest_belongs_is_not_repeated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    problems = _problems(monkeypatch, "API_TOKENS", json.dumps({PASSWORD: "finance"}))
    assert problems == [
        "API_TOKENS: every key must be a token's lowercase hex SHA-256 digest, never a token"
    ]


def test_api_tokens_map_digests_to_roles(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = {DIGEST: "finance", "cd" * 32: "operator"}
    assert _settings(monkeypatch, "API_TOKENS", json.dumps(tokens)).api_tokens == tokens


def test_kafka_servers_without_a_port_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _problems(monkeypatch, "KAFKA_BOOTSTRAP_SERVERS", "host-without-port") == [
        "KAFKA_BOOTSTRAP_SERVERS: 'host-without-port' is not host:port"
    ]


def test_kafka_servers_are_checked_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _problems(monkeypatch, "KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:x") == [
        "KAFKA_BOOTSTRAP_SERVERS: 'kafka-2:x' has no port number between 1 and 65535"
    ]


def test_kafka_servers_as_host_port_pairs_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    servers = "kafka-1:9092, [::1]:9093"
    assert _settings(monkeypatch, "KAFKA_BOOTSTRAP_SERVERS", servers).kafka_bootstrap_servers == (
        servers
    )


def test_forwarded_allow_ips_are_ip_addresses_or_networks_or_any(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings(_env_file=None).api_forwarded_allow_ips == "127.0.0.1,::1"
    for accepted in ("10.0.0.0/8, 192.0.2.2", "fd00::/8", "*"):
        settings = _settings(monkeypatch, "API_FORWARDED_ALLOW_IPS", accepted)
        assert settings.api_forwarded_allow_ips == accepted.replace(" ", "")
    for refused, named in (("proxy.example", "proxy.example"), ("*, 10.0.0.1", "*")):
        assert _problems(monkeypatch, "API_FORWARDED_ALLOW_IPS", refused) == [
            f"API_FORWARDED_ALLOW_IPS: {named!r} is not an IP address or network (nor `*` alone)"
        ]


def test_an_eligibility_list_that_is_not_json_names_its_prefixed_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ELIGIBILITY_ENABLED_COUNTRIES", "US,GB")
    with pytest.raises(SettingsError) as raised:
        EligibilitySettings(_env_file=None)
    assert configuration_problems(raised.value) == ["ELIGIBILITY_ENABLED_COUNTRIES: not valid JSON"]


def test_a_country_enabled_and_coming_soon_names_both_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ELIGIBILITY_ENABLED_COUNTRIES", '["US", "CA"]')
    with pytest.raises(ValidationError) as raised:
        EligibilitySettings(_env_file=None)
    [problem] = configuration_problems(raised.value)
    assert problem.startswith(
        "ELIGIBILITY_*: Value error, CA in both ELIGIBILITY_ENABLED_COUNTRIES and"
        " ELIGIBILITY_COMING_SOON_COUNTRIES"
    )


def test_an_eligibility_list_entry_is_named_by_its_position(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ELIGIBILITY_ENABLED_COUNTRIES", '["US", "gb"]')
    with pytest.raises(ValidationError) as raised:
        EligibilitySettings(_env_file=None)
    assert configuration_problems(raised.value) == [
        "ELIGIBILITY_ENABLED_COUNTRIES[1]: String should match pattern '^[A-Z]{2}$'"
    ]


@pytest.mark.parametrize(("written", "read"), [(" * ", "*"), (" 10.0.0.1 , ::1", "10.0.0.1,::1")])
def test_the_proxies_believed_are_read_without_spaces_as_uvicorn_compares_them(
    written: str, read: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _settings(monkeypatch, "API_FORWARDED_ALLOW_IPS", written).api_forwarded_allow_ips == (
        read
    )
