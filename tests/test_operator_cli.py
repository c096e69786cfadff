"""`giftledger operator` against the session's database, `verify` with the actions log's chain,
and `API_TOKENS` with named tokens.

`main()` calls `asyncio.run`, so these tests are plain functions; they feed creators and look at
the database through short `asyncio.run` calls with engines of their own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from pydantic import ValidationError
from sqlalchemy import text

from ledger.database import create_engine
from services.cli import main
from services.runtime import settings
from services.runtime.settings import NamedToken, Settings, configuration_problems, named_tokens
from tests.operator_helpers import Feed, available_diamonds

T = TypeVar("T")
DIGEST = "ab" * 32


@pytest.fixture
def cli_database(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The session's migrated database as `DATABASE_URL`; no OPERATOR_NAME unless a test sets
    it; the settings cache cleared around the test."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("OPERATOR_NAME", raising=False)
    monkeypatch.delenv("API_TOKENS", raising=False)
    settings.get_settings.cache_clear()
    yield database_url
    settings.get_settings.cache_clear()


def _on(database_url: str, work: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    async def run() -> T:
        engine = create_engine(database_url, pool_size=2)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _eligible_creator(database_url: str, diamonds: int) -> str:
    async def feed(engine: Any) -> str:
        return await (await Feed.on(engine)).eligible_creator(diamonds)

    return _on(database_url, feed)


def _available(database_url: str, creator: str) -> int:
    return _on(database_url, lambda engine: available_diamonds(engine, creator))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_an_adjustment_is_proposed_approved_by_another_and_logged(
    cli_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    creator = _eligible_creator(cli_database, 2)
    propose = ["operator", "propose", creator, "DIAMOND", "-500", "--reason", "double credit"]
    code, out, _ = _run(capsys, *propose, "--as", "carol", "--json")
    assert code == 0
    proposed = json.loads(out)
    adjustment_id = proposed["adjustment"]["adjustment_id"]
    assert (proposed["recorded"], proposed["adjustment"]["amount_minor"]) == (True, -500)

    code, out, _ = _run(capsys, *propose, "--as", "carol")
    assert code == 0
    assert f"adjustment {adjustment_id}: -0.500 DIAMOND for creator {creator}" in out
    assert "nothing new recorded" in out

    code, _, err = _run(capsys, "operator", "approve", str(adjustment_id), "--as", "carol")
    assert code == 1
    assert "refused: carol proposed adjustment" in err
    assert _available(cli_database, creator) == 2_000

    code, out, _ = _run(capsys, "operator", "approve", str(adjustment_id), "--as", "dave")
    assert code == 0
    assert "approved by dave, posted as transfer" in out
    assert _available(cli_database, creator) == 1_500

    code, out, _ = _run(capsys, "operator", "adjustments", "--creator", creator)
    assert code == 0
    [row] = [line.split() for line in out.splitlines() if line.split()[1:2] == [creator]]
    assert row[-3:] == ["approved", "carol", "dave"]

    code, out, _ = _run(capsys, "operator", "log", "--target", creator)
    assert code == 0
    assert [line.split()[3] for line in out.splitlines()[1:-1]] == [
        "adjustment_proposed",
        "adjustment_approved",
    ]
    assert out.rstrip().endswith("chain: intact")

    code, out, _ = _run(capsys, "verify")
    assert code == 0
    assert out.startswith("ledger verified: ")


def test_a_proposal_is_withdrawn_once_and_is_then_never_approved(
    cli_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    creator = _eligible_creator(cli_database, 2)
    propose = ["operator", "propose", creator, "DIAMOND", "700", "--reason", "meant another"]
    code, out, _ = _run(capsys, *propose, "--as", "carol", "--json")
    assert code == 0
    adjustment_id = str(json.loads(out)["adjustment"]["adjustment_id"])
    withdraw = ["operator", "withdraw", adjustment_id, "--reason", "wrong creator"]

    code, _, err = _run(capsys, "operator", "withdraw", adjustment_id, "--as", "carol")
    assert code == 2  # a reason is required
    assert "--reason" in err
    code, _, err = _run(capsys, *withdraw)
    assert code == 2
    assert "give --as NAME or set OPERATOR_NAME" in err

    code, out, _ = _run(capsys, *withdraw, "--as", "carol", "--ticket", "OPS-3")
    assert code == 0
    assert out.startswith(f"adjustment {adjustment_id}: 0.700 DIAMOND for creator {creator}:")
    assert "withdrawn by carol: it will never be posted" in out
    code, out, _ = _run(capsys, *withdraw, "--as", "carol", "--ticket", "OPS-3")
    assert code == 0
    assert "nothing new recorded" in out
    code, out, _ = _run(capsys, *withdraw, "--as", "dave", "--json")
    assert code == 0
    answer = json.loads(out)
    assert (answer["recorded"], answer["action"]["actor"]) == (False, "carol")
    assert (answer["adjustment"]["status"], answer["adjustment"]["withdrawn_by"]) == (
        "withdrawn",
        "carol",
    )

    code, _, err = _run(capsys, "operator", "approve", adjustment_id, "--as", "dave")
    assert code == 1
    assert f"refused: adjustment {adjustment_id} was withdrawn by carol" in err
    assert _available(cli_database, creator) == 2_000

    code, out, _ = _run(capsys, "operator", "adjustments", "--creator", creator)
    assert code == 0
    [row] = [line.split() for line in out.splitlines() if line.split()[1:2] == [creator]]
    assert row[-3:] == ["withdrawn", "carol", "carol"]
    for status, expected in (("withdrawn", [adjustment_id]), ("proposed", []), ("approved", [])):
        code, out, _ = _run(
            capsys, "operator", "adjustments", "--creator", creator, "--status", status, "--json"
        )
        assert code == 0
        listed = [str(item["adjustment_id"]) for item in json.loads(out)["adjustments"]]
        assert listed == expected, status

    code, out, _ = _run(capsys, "operator", "log", "--target", creator)
    assert code == 0
    assert [line.split()[3] for line in out.splitlines()[1:-1]] == [
        "adjustment_proposed",
        "adjustment_withdrawn",
    ]


def test_an_approved_adjustment_is_not_withdrawn_and_an_unknown_one_is_a_usage_error(
    cli_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    creator = _eligible_creator(cli_database, 1)
    propose = ["operator", "propose", creator, "DIAMOND", "-200", "--reason", "double credit"]
    code, out, _ = _run(capsys, *propose, "--as", "carol", "--json")
    adjustment_id = str(json.loads(out)["adjustment"]["adjustment_id"])
    assert _run(capsys, "operator", "approve", adjustment_id, "--as", "dave")[0] == 0
    withdraw = ["operator", "withdraw", adjustment_id, "--reason", "too late", "--as", "carol"]
    code, _, err = _run(capsys, *withdraw)
    assert code == 1
    assert f"refused: adjustment {adjustment_id} was approved by dave and posted" in err
    assert "propose an adjustment of 0.200 DIAMOND (the other way)" in err
    assert _available(cli_database, creator) == 800
    code, _, err = _run(capsys, "operator", "withdraw", str(2**62), "--reason", "r", "--as", "c")
    assert (code, f"no adjustment {2**62}" in err) == (2, True)


def test_who_acts_comes_from_as_or_operator_name(
    cli_database: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    creator = _eligible_creator(cli_database, 1)
    freeze = ["operator", "freeze", creator, "--reason", "fraud review", "--json"]
    code, _, err = _run(capsys, *freeze)
    assert code == 2
    assert "give --as NAME or set OPERATOR_NAME" in err
    code, _, err = _run(capsys, *freeze, "--as", "not a name")
    assert code == 2
    monkeypatch.setenv("OPERATOR_NAME", "erin")
    settings.get_settings.cache_clear()
    code, out, _ = _run(capsys, *freeze)
    assert code == 0
    assert json.loads(out)["action"]["actor"] == "erin"


def test_a_repeated_freeze_is_idempotent_and_a_later_one_acts_again(
    cli_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    creator = _eligible_creator(cli_database, 1)
    freeze = ["operator", "freeze", creator, "--reason", "fraud review", "--as", "carol"]
    unfreeze = ["operator", "unfreeze", creator, "--reason", "fraud review", "--as", "carol"]
    answers = []
    for argv in (freeze, freeze, unfreeze, freeze):
        code, out, _ = _run(capsys, *argv, "--json")
        assert code == 0
        answers.append(json.loads(out))
    assert [(a["frozen"], a["recorded"]) for a in answers] == [
        (True, True),
        (True, False),
        (False, True),
        (True, True),
    ]
    assert answers[1]["action"] == answers[0]["action"]
    code, out, _ = _run(capsys, "operator", "log", "--target", creator, "--json")
    assert [a["action"] for a in json.loads(out)["actions"]] == [
        "creator_frozen",
        "creator_unfrozen",
        "creator_frozen",
    ]


def test_an_unknown_creator_or_adjustment_is_a_usage_error(
    cli_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(
        capsys, "operator", "freeze", "nobody-at-all", "--reason", "r", "--as", "carol"
    )
    assert (code, "no creator 'nobody-at-all'" in err) == (2, True)
    code, _, err = _run(capsys, "operator", "approve", str(2**62), "--as", "carol")
    assert (code, f"no adjustment {2**62}" in err) == (2, True)


def test_log_and_verify_fail_when_an_action_was_changed_behind_the_logs_back(
    cli_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    creator = _eligible_creator(cli_database, 1)
    code, out, _ = _run(
        capsys, "operator", "freeze", creator, "--reason", "fraud", "--as", "carol", "--json"
    )
    action_id = json.loads(out)["action"]["action_id"]

    def edit(reason: str) -> Callable[[Any], Coroutine[Any, Any, None]]:
        async def change(engine: Any) -> None:
            async with engine.begin() as conn:  # triggers do not fire for a replica (superuser)
                await conn.execute(text("SET LOCAL session_replication_role = replica"))
                await conn.execute(
                    text("UPDATE operator_actions SET reason = :reason WHERE id = :id"),
                    {"reason": reason, "id": action_id},
                )

        return change

    _on(cli_database, edit("a harmless look"))
    try:
        code, _, err = _run(capsys, "operator", "log", "--target", creator)
        assert code == 1
        assert f"operator action {action_id}: its content was changed" in err
        code, out, _ = _run(capsys, "verify")
        assert code == 1
        assert f"operator_actions_chain_intact: operator action {action_id}" in out
    finally:
        _on(cli_database, edit("fraud"))
    assert _run(capsys, "verify")[0] == 0


# Named tokens --------------------------------------------------------------------------------


def test_api_tokens_take_a_role_and_a_name_or_a_role_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tokens = {DIGEST: {"role": "operator", "name": "alice"}, "cd" * 32: "finance"}
    monkeypatch.setenv("API_TOKENS", json.dumps(tokens))
    configured = Settings(_env_file=None).api_tokens
    assert named_tokens(configured) == {
        DIGEST: NamedToken(role="operator", name="alice"),
        "cd" * 32: NamedToken(role="finance", name="cd" * 6),
    }


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"role": "operator"}, 'a named token is {"role": "finance" or "operator", "name"'),
        ({"role": "operator", "name": "alice", "x": 1}, "a named token is"),
        ({"role": "admin", "name": "alice"}, "Input should be 'finance' or 'operator'"),
        ({"role": "operator", "name": "alice smith"}, "String should match pattern"),
        ({"role": "operator", "name": ""}, "at least 1 character"),
        (7, "Input should be 'finance' or 'operator'"),
    ],
)
def test_a_named_token_that_does_not_parse_names_api_tokens(
    monkeypatch: pytest.MonkeyPatch, entry: object, problem: str
) -> None:
    monkeypatch.setenv("API_TOKENS", json.dumps({DIGEST: entry}))
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None)
    [line] = configuration_problems(raised.value)
    assert line.startswith("API_TOKENS: ")
    assert problem in line


def test_a_bad_api_tokens_stops_a_command_with_exit_2(
    cli_database: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_TOKENS", json.dumps({DIGEST: {"role": "operator"}}))
    settings.get_settings.cache_clear()
    code, _, err = _run(capsys, "verify")
    assert code == 2
    assert err.startswith("giftledger: configuration: API_TOKENS: a named token is")
