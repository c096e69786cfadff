"""`giftledger run` claims its listening addresses before it opens the database or the broker:
a port that is taken, or a host that does not resolve, stops it at once with exit 1 and a line
naming the variables to change (it ran without its API, and crashed at its stop, before)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from services.cli import main
from services.commands.common import EXIT_FAILURE
from services.runtime.settings import get_settings

# Where nothing listens: were `run` to get as far as the broker, it would wait there instead.
NO_BROKER = "127.0.0.1:1"


@pytest.fixture
def taken_port() -> Iterator[int]:
    holder = socket.create_server(("127.0.0.1", 0))
    try:
        yield int(holder.getsockname()[1])
    finally:
        holder.close()


@pytest.fixture(autouse=True)
def _nowhere(monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[None]:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", NO_BROKER)
    get_settings.cache_clear()  # the settings are read once a process, at the first command
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("arguments", "variables", "names"),
    [
        (["run", "--api"], {"API_HOST": "127.0.0.1"}, "API_HOST and API_PORT"),
        (["run"], {"METRICS_HOST": "127.0.0.1"}, "METRICS_HOST and METRICS_PORT"),
    ],
)
def test_a_taken_port_stops_run_naming_its_variables(
    arguments: list[str],
    variables: dict[str, str],
    names: str,
    taken_port: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    port_variable = names.split(" and ")[1]
    monkeypatch.setenv(port_variable, str(taken_port))
    assert main(arguments) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert err == (
        f"giftledger: cannot listen on 127.0.0.1:{taken_port} ({names}): Address already in use\n"
    )


def test_a_host_that_does_not_resolve_stops_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("API_HOST", "no-such-host.invalid")
    assert main(["run", "--api"]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert err.startswith("giftledger: cannot listen on no-such-host.invalid:")
    assert "(API_HOST and API_PORT)" in err
