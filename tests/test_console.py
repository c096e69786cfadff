"""The console's rules at the HTTP level, on the API app and the test database: what needs a
session, the session cookie, the CSRF tokens, roles, and that the OpenAPI document is unchanged.
The pages themselves are driven in a browser in tests/test_console_browser.py."""

from __future__ import annotations

import csv
import html
import io
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.chart import AccountKind, creator_wallet, platform
from ledger.database import create_engine
from ledger.model import PostResult, Transfer, TransferCode
from ledger.service import Ledger
from schemas import topics
from services.api.auth import Caller
from services.app.bootstrap import build_api_app
from services.console import pages
from services.console.charts import bar_chart
from services.console.pages import SECURITY_HEADERS
from services.console.reads import ActionRow
from services.console.sessions import (
    SESSIONS_PER_CALLER_MAX,
    SessionBook,
    SessionBookFullError,
)
from services.console.shown_bytes import (
    HEX_BYTES_MAX,
    TEXT_CHARACTERS_MAX,
    shown_bytes,
    visible_text,
)
from services.demo import DemoApi, _print_api
from services.ingestion.records import InputRecord
from services.rates.rate_cards import load_rate_cards
from services.runtime.settings import Settings
from tests.api_server import served_client
from tests.console_http import (
    FINANCE_TOKEN,
    OPERATOR_TOKEN,
    SESSION_S,
    console_client,
    console_settings,
    table,
    tables,
)
from tests.console_http import hidden as _hidden
from tests.console_http import sign_in as _sign_in
from tests.ingestion_fixtures import make_ingestor

PAGES = (
    "/console",
    "/console/",
    "/console/creator?id=someone",
    "/console/statement.csv?account=platform:COIN:coins_spent",
    "/console/cashouts",
    "/console/cashout?id=some-cashout",
    "/console/dead-letters",
    "/console/dead-letter?id=1",
    "/console/operator",
    "/console/books",
    "/console/books/journal?period=2026-11",
    "/console/books/reconciliation?id=1",
)
ACTIONS = (
    "/console/dead-letter/redrive?id=1",
    "/console/operator/approve?id=1",
    "/console/creator/freeze?id=someone",
    "/console/creator/unfreeze?id=someone",
    "/console/cashout/cancel?id=some-cashout",
    "/console/cashout/resubmit?id=some-cashout",
)


@pytest.fixture
async def http(engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    async with console_client(engine, console_settings()) as client:
        yield client


@pytest.fixture
async def https(engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    async with console_client(engine, console_settings(), "https://console.test") as client:
        yield client


async def _action_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM operator_actions"))).scalar_one())


async def test_every_page_and_action_without_a_session_answers_401_with_the_sign_in_form(
    http: httpx.AsyncClient,
) -> None:
    for path in PAGES:
        answer = await http.get(path)
        assert answer.status_code == 401, path
        assert 'name="token"' in answer.text, path
    for path in ACTIONS:
        assert (await http.post(path, data={"reason": "x"})).status_code == 401, path
    assert (await http.get("/console/sign-in")).status_code == 200


async def test_signing_in_sets_a_strict_http_only_session_cookie_that_expires(
    http: httpx.AsyncClient,
) -> None:
    answer = await _sign_in(http, FINANCE_TOKEN)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console"
    [cookie] = [
        value
        for value in answer.headers.get_list("set-cookie")
        if value.startswith("giftledger_console=")
    ]
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", f"max-age={SESSION_S}", "path=/console"} <= attributes
    assert "secure" not in attributes
    overview = await http.get("/console")
    assert overview.status_code == 200
    assert "http-finance (finance)" in overview.text


async def test_over_tls_the_session_cookie_is_secure(https: httpx.AsyncClient) -> None:
    answer = await _sign_in(https, OPERATOR_TOKEN)
    [cookie] = [
        value
        for value in answer.headers.get_list("set-cookie")
        if value.startswith("giftledger_console=")
    ]
    assert "secure" in {part.strip().lower() for part in cookie.split(";")[1:]}
    assert (await https.get("/console")).status_code == 200


async def test_a_sign_in_without_its_form_token_or_with_an_unknown_token_opens_no_session(
    http: httpx.AsyncClient,
) -> None:
    forged = await http.post(
        "/console/sign-in", data={"token": OPERATOR_TOKEN, "sign_in_token": "forged"}
    )
    assert forged.status_code == 403
    assert "giftledger_console=" not in "".join(forged.headers.get_list("set-cookie"))
    unknown = await _sign_in(http, "not-a-configured-token")
    assert unknown.status_code == 401
    assert (await http.get("/console")).status_code == 401


async def test_an_operator_action_without_the_sessions_csrf_token_is_refused(
    http: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await _sign_in(http, OPERATOR_TOKEN)
    before = await _action_count(engine)
    for path in ACTIONS:
        for csrf in (None, "not-the-token"):
            form = {"reason": "try", "idempotency_key": "console-csrf-try"}
            if csrf is not None:
                form["csrf_token"] = csrf
            answer = await http.post(path, data=form)
            assert answer.status_code == 403, (path, csrf)
            assert "CSRF" in answer.text
    assert await _action_count(engine) == before


async def test_a_finance_session_may_not_act_even_with_its_csrf_token(
    http: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await _sign_in(http, FINANCE_TOKEN)
    page = (await http.get("/console/operator")).text
    csrf = _hidden(page, "csrf_token")
    before = await _action_count(engine)
    for path in ACTIONS:
        answer = await http.post(path, data={"csrf_token": csrf, "reason": "try"})
        assert answer.status_code == 403, path
    assert await _action_count(engine) == before


async def test_signing_out_ends_the_session(http: httpx.AsyncClient) -> None:
    await _sign_in(http, OPERATOR_TOKEN)
    page = (await http.get("/console/operator")).text
    kept_cookie = http.cookies.get("giftledger_console")
    assert kept_cookie
    out = await http.post("/console/sign-out", data={"csrf_token": _hidden(page, "csrf_token")})
    assert out.status_code == 303
    assert out.headers["location"] == "/console/sign-in"
    http.cookies.set("giftledger_console", kept_cookie, domain="console.test", path="/console")
    assert (await http.get("/console/operator")).status_code == 401


async def test_pages_forbid_scripts_framing_and_caching(http: httpx.AsyncClient) -> None:
    answer = await http.get("/console/sign-in")
    policy = answer.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src" not in policy
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["cache-control"] == "no-store"


async def test_the_console_is_not_in_the_openapi_document(http: httpx.AsyncClient) -> None:
    document = (await http.get("/openapi.json")).json()
    assert document["paths"]
    assert not [path for path in document["paths"] if path.startswith("/console")]


def test_a_session_ends_console_session_s_after_sign_in() -> None:
    now = [1_000.0]
    book = SessionBook(60, clock_s=lambda: now[0])
    session = book.open(Caller("operator", "someone"))
    now[0] += 59.0
    assert book.find(session.session_id) == session
    now[0] += 1.0
    assert book.find(session.session_id) is None
    assert len(book) == 0


def test_a_flood_of_one_callers_sign_ins_leaves_another_callers_session_open() -> None:
    """One caller signing in again and again ends only their own oldest sessions, however many
    sign-ins: another caller's session stays, and the book stays at what the callers may keep."""
    now = [0.0]
    book = SessionBook(60, count_max=SESSIONS_PER_CALLER_MAX * 2, clock_s=lambda: now[0])
    other = book.open(Caller("finance", "b"))
    flood = []
    for _ in range(SESSIONS_PER_CALLER_MAX * 10):
        now[0] += 0.01
        flood.append(book.open(Caller("operator", "a")))
    assert book.find(other.session_id) == other
    kept = flood[-SESSIONS_PER_CALLER_MAX:]
    assert [book.find(session.session_id) for session in kept] == kept
    assert not [s for s in flood[:-SESSIONS_PER_CALLER_MAX] if book.find(s.session_id)]
    assert len(book) == SESSIONS_PER_CALLER_MAX + 1
    assert book.count_of(Caller("operator", "a")) == SESSIONS_PER_CALLER_MAX


def test_a_caller_past_their_sessions_ends_their_own_oldest() -> None:
    now = [0.0]
    book = SessionBook(60, per_caller_max=2, clock_s=lambda: now[0])
    caller = Caller("operator", "a")
    first = book.open(caller)
    now[0] += 1
    second = book.open(caller)
    third = book.open(caller)
    assert book.find(first.session_id) is None
    assert book.find(second.session_id) == second
    assert book.find(third.session_id) == third


def test_a_full_book_refuses_a_new_session_until_the_first_ends_and_ends_none() -> None:
    now = [0.0]
    book = SessionBook(60, count_max=2, clock_s=lambda: now[0])
    first = book.open(Caller("finance", "a"))
    now[0] += 10
    second = book.open(Caller("finance", "b"))
    now[0] += 0.5
    with pytest.raises(SessionBookFullError) as refused:
        book.open(Caller("finance", "c"))
    assert refused.value.retry_after_s == 50  # 49.5 s, rounded up
    assert book.find(first.session_id) == first
    assert book.find(second.session_id) == second
    now[0] += 49.5
    third = book.open(Caller("finance", "c"))
    assert book.find(first.session_id) is None
    assert [book.find(second.session_id), book.find(third.session_id)] == [second, third]


def test_bytes_show_as_text_when_utf8_else_as_hex_and_always_cut_short() -> None:
    assert shown_bytes("<b>é</b>\x00".encode()).text == "<b>é</b>\\x00"
    long_text = shown_bytes(b"a" * (TEXT_CHARACTERS_MAX + 1))
    assert (long_text.shape, len(long_text.text), long_text.truncated) == (
        "text",
        TEXT_CHARACTERS_MAX,
        True,
    )
    binary = shown_bytes(b"\xff" * (HEX_BYTES_MAX + 1))
    assert binary.shape == "hex"
    assert binary.truncated
    assert binary.length_bytes == HEX_BYTES_MAX + 1
    assert binary.text.splitlines()[0].startswith("00000000  ff ff")
    assert shown_bytes(None).shape == "absent"


# What would not show as itself: C1 controls, a right-to-left override and its pop, isolates,
# marks, a zero-width joiner and a byte order mark, the line and paragraph separators; and one
# format character beyond the Basic Multilingual Plane (a language tag).
HIDDEN_CHARACTERS = (
    "\x85\x9b\u202e\u202c\u2066\u2069\u200e\u200f\u061c\u200d\ufeff\u2028\u2029\U000e0001"
)
HOSTILE_TEXT = '{"amount": 1\u202e0001\u202c, "x": "\x85\x9b31m", "line": "a\u2028b"}'


def test_bytes_shown_as_text_escape_c1_controls_and_bidirectional_overrides() -> None:
    shown = shown_bytes(f"tab\tnewline\n{HIDDEN_CHARACTERS}é".encode())
    assert shown.text == (
        "tab\tnewline\n"
        "\\x85\\x9b\\u202e\\u202c\\u2066\\u2069\\u200e\\u200f\\u061c\\u200d\\ufeff\\u2028\\u2029"
        "\\U000e0001é"
    )
    assert shown_bytes(HOSTILE_TEXT.encode()).text == (
        '{"amount": 1\\u202e0001\\u202c, "x": "\\x85\\x9b31m", "line": "a\\u2028b"}'
    )
    assert visible_text("pop\u202c") == "pop\\u202c"


def test_a_bar_chart_scales_bars_to_the_largest_value() -> None:
    chart = bar_chart("t", [("a", 0, "0"), ("b", 50, "50"), ("c", 100, "100")])
    heights = [bar.height_px for bar in chart.bars]
    assert heights == [0, chart.plot_height_px // 2, chart.plot_height_px]
    assert all(bar.y_px + bar.height_px == chart.plot_height_px for bar in chart.bars)


def test_the_demo_prints_the_consoles_address_beside_the_apis() -> None:
    out = io.StringIO()
    settings = Settings(api_host="127.0.0.1", api_port=8123)
    _print_api(settings, DemoApi(task=None, problem=None), "demo-token", out, wait=True)
    console_line = "  console: http://127.0.0.1:8123/console (sign in as demo with that token)\n"
    assert console_line in out.getvalue()


async def test_the_statement_csv_says_the_asset_and_scale_of_its_amounts_on_every_line(
    engine: AsyncEngine, http: httpx.AsyncClient
) -> None:
    """A downloaded statement opened in a spreadsheet: 150 in a USD wallet is 1.50 USD, and
    each line says so."""
    wallet = creator_wallet(f"console-csv-{uuid.uuid4().hex[:8]}", "USD")
    specs = [platform(AccountKind.TIPS_CLEARING, "USD"), wallet]
    ledger = Ledger(engine)
    ids = await ledger.account_ids(specs)
    tips = [
        Transfer(uuid.uuid4(), ids[specs[0].name], ids[wallet.name], amount, TransferCode.TIP)
        for amount in (150, 25)
    ]
    assert await ledger.post(tips) == [PostResult.OK] * 2
    assert (await _sign_in(http, FINANCE_TOKEN)).status_code == 303
    answer = await http.get("/console/statement.csv", params={"account": wallet.name})
    assert answer.status_code == 200
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [(row["credit"], row["asset"], row["scale"]) for row in rows] == [
        ("150", "USD", "2"),
        ("25", "USD", "2"),
    ]


def _shows_no_hidden_character(page: str) -> bool:
    return not [character for character in HIDDEN_CHARACTERS if character in page]


async def test_a_dead_letters_event_id_and_detail_show_hidden_characters_as_escapes(
    engine: AsyncEngine, unique_id: str
) -> None:
    """A dead letter whose event id and detail hold a right-to-left override, C1 controls and a
    line separator: its page and the list show them escaped, in the order they were written."""
    prefix = f"console-hidden-{unique_id}"
    async with engine.begin() as conn:
        found = await conn.execute(
            text(
                "INSERT INTO dead_letters (topic_prefix, topic, kafka_partition, kafka_offset,"
                " event_id, error, detail) VALUES (:prefix, 'gifts.sent', 0, 0, :text,"
                " 'schema_violation', :text) RETURNING id"
            ),
            {"prefix": prefix, "text": HOSTILE_TEXT + HIDDEN_CHARACTERS},
        )
        dead_letter_id = int(found.scalar_one())
    escaped = (
        '{"amount": 1\\u202e0001\\u202c, "x": "\\x85\\x9b31m", "line": "a\\u2028b"}'
        "\\x85\\x9b\\u202e\\u202c\\u2066\\u2069\\u200e\\u200f\\u061c\\u200d\\ufeff\\u2028\\u2029"
        "\\U000e0001"
    )
    async with console_client(engine, console_settings(kafka_topic_prefix=prefix)) as client:
        assert (await _sign_in(client, FINANCE_TOKEN)).status_code == 303
        page = await client.get("/console/dead-letter", params={"id": dead_letter_id})
        listed = await client.get("/console/dead-letters")
    assert page.status_code == 200
    rows = {row[0]: row[1] for row in tables(page.text)[0].rows}
    assert rows["Event"] == rows["Detail"] == escaped
    assert _shows_no_hidden_character(page.text)
    assert listed.status_code == 200
    [row] = table(listed.text, "Newest first").rows[1:]
    assert row[4] == escaped
    assert row[6].startswith('{"amount": 1\\u202e0001\\u202c, "x": "\\x85\\x9b31m"')
    assert _shows_no_hidden_character(listed.text)


async def test_a_dead_letters_record_and_headers_show_hidden_characters_as_escapes(
    engine: AsyncEngine, kafka_bootstrap: str
) -> None:
    """A record refused as malformed JSON, with a header whose name and value hold a
    right-to-left override and C1 controls, read back from its topic: key, value, header name
    and value show them escaped."""
    header_name = "x-\u202eeman\x85"
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    ingestor = make_ingestor(engine, rate_cards)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(
            topics.GIFTS_SENT,
            key=f"key{HIDDEN_CHARACTERS}".encode(),
            value=HOSTILE_TEXT.encode(),
            headers=[(header_name, HOSTILE_TEXT.encode())],
        )
    finally:
        await producer.stop()
    record = InputRecord(
        topics.GIFTS_SENT,
        sent.partition,
        sent.offset,
        f"key{HIDDEN_CHARACTERS}".encode(),
        HOSTILE_TEXT.encode(),
    )
    report = await ingestor.process(topics.GIFTS_SENT, [record])
    assert len(report.dead_letters) == 1, report
    async with engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT id FROM dead_letters WHERE topic_prefix = '' AND topic = :topic"
                " AND kafka_partition = :partition AND kafka_offset = :offset"
            ),
            {"topic": topics.GIFTS_SENT, "partition": sent.partition, "offset": sent.offset},
        )
        dead_letter_id = int(found.scalar_one())
    settings = console_settings(kafka_bootstrap_servers=kafka_bootstrap)
    async with console_client(engine, settings) as client:
        assert (await _sign_in(client, FINANCE_TOKEN)).status_code == 303
        page = await client.get("/console/dead-letter", params={"id": dead_letter_id})
    assert page.status_code == 200
    escaped_value = '{"amount": 1\\u202e0001\\u202c, "x": "\\x85\\x9b31m", "line": "a\\u2028b"}'
    assert table(page.text, "Headers").rows[1:] == [["x-\\u202eeman\\x85", escaped_value]]
    shown = re.findall(
        r'<pre class="bytes" data-part="(\w+)" data-shape="text">([^<]*)</pre>', page.text
    )
    assert [(part, html.unescape(text_shown)) for part, text_shown in shown] == [
        (
            "key",
            "key\\x85\\x9b\\u202e\\u202c\\u2066\\u2069\\u200e\\u200f\\u061c\\u200d\\ufeff"
            "\\u2028\\u2029\\U000e0001",
        ),
        ("value", escaped_value),
    ]
    assert _shows_no_hidden_character(page.text)


async def _as_answered(client: httpx.AsyncClient, path: str) -> tuple[object, ...]:
    answer = await client.get(path)
    return (
        answer.status_code,
        answer.headers["content-type"],
        answer.headers.get("retry-after"),
        {name: answer.headers.get(name) for name in SECURITY_HEADERS},
        "<!doctype html>" in answer.text,
    )


async def test_the_console_without_its_slash_answers_as_the_console_does(
    engine: AsyncEngine,
) -> None:
    """`/console` (where signing in leads) answers as `/console/`: the sign-in form without a
    session, the overview with one, and the console's "unavailable" page (not the JSON API's
    503) when the database does not answer, each with the console's headers."""
    unreachable = create_engine(
        "postgresql+asyncpg://postgres@127.0.0.1:1/nothing", pool_size=1, pool_overflow_max=0
    )
    try:
        for database, signed_in, status in (
            (engine, False, 401),
            (engine, True, 200),
            (unreachable, True, 503),
        ):
            async with console_client(database, console_settings()) as client:
                if signed_in:
                    assert (await _sign_in(client, FINANCE_TOKEN)).status_code == 303
                without_slash = await _as_answered(client, "/console")
                assert without_slash == await _as_answered(client, "/console/")
                assert without_slash[:2] == (status, "text/html; charset=utf-8")
                assert without_slash[3] == SECURITY_HEADERS
                assert without_slash[4]
                if status == 503:
                    assert without_slash[2] == "5"
    finally:
        await unreachable.dispose()


async def _session_cookie_attributes(
    base_url: str, client_address: str, forwarded_proto: str | None
) -> set[str]:
    """The session cookie's attributes, signing in from `client_address` (as a proxy would,
    saying `X-Forwarded-Proto: forwarded_proto` when given)."""
    headers = {} if forwarded_proto is None else {"X-Forwarded-Proto": forwarded_proto}
    transport = httpx.AsyncHTTPTransport(local_address=client_address)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        form = await client.get("/console/sign-in", headers=headers)
        token = _hidden(form.text, "sign_in_token")
        client.cookies.clear()  # sent by hand: a Secure one would not be sent over http
        answer = await client.post(
            "/console/sign-in",
            headers={**headers, "Cookie": f"giftledger_console_sign_in={token}"},
            data={"token": OPERATOR_TOKEN, "sign_in_token": token},
        )
    assert answer.status_code == 303, answer.text
    [cookie] = [
        value
        for value in answer.headers.get_list("set-cookie")
        if value.startswith("giftledger_console=")
    ]
    return {part.strip().lower() for part in cookie.split(";")[1:]}


async def test_behind_a_proxy_named_by_api_forwarded_allow_ips_the_session_cookie_is_secure(
    engine: AsyncEngine,
) -> None:
    """The API served as `giftledger run --api` serves it, reached from 127.0.0.2, which
    stands for a TLS-terminating proxy on another host (not loopback's 127.0.0.1): its
    `X-Forwarded-Proto: https` makes the session cookie Secure once API_FORWARDED_ALLOW_IPS
    names it, and not before."""
    proxy = "127.0.0.2"
    for allowed, client_address, forwarded_proto, secure in (
        (None, proxy, "https", False),
        (proxy, proxy, "https", True),
        (proxy, proxy, None, False),
        (proxy, "127.0.0.1", "https", False),
        ("127.0.0.0/8", proxy, "https", True),
    ):
        overrides = {} if allowed is None else {"api_forwarded_allow_ips": allowed}
        app = build_api_app(engine, console_settings(**overrides))
        async with served_client(app) as served:
            attributes = await _session_cookie_attributes(
                str(served.base_url), client_address, forwarded_proto
            )
        assert ("secure" in attributes) is secure, (allowed, client_address, forwarded_proto)


def test_the_action_log_shows_a_recorded_keys_hidden_characters_as_escapes() -> None:
    """A re-drive records its record's key in the action's details, as the producer wrote it:
    a right-to-left override there must not reorder the operator log's row."""
    key = "creator-00\u202e1gp.exe"
    action = ActionRow(
        id=7,
        actor="alice",
        role="operator",
        action="dead_letter_redriven",
        target="dead-letter:1",
        reason="retry",
        ticket=None,
        details=json.dumps({"message_key": key}, ensure_ascii=False),
        recorded_at=datetime.now(UTC),
    )
    # The table as every page that lists actions includes it (the operator, creator and
    # cash-out pages), rendered by the console's own template environment.
    shown = pages._ENVIRONMENT.get_template("actions_table.html").render(actions=[action])
    assert "\u202e" not in shown
    assert "creator-00\\u202e1gp.exe" in shown
