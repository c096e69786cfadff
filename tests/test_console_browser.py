"""The console in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright)
against a real API server on the seeded test database and the test broker.

Each test signs in with a token, as a person would, and checks what the pages show and do. Hostile
values (a creator id that is a script tag, a dead letter of raw HTML) must show as text: no
dialog may open, and the text must be on the page. Screenshots of the pages go to a temporary
folder, or to CONSOLE_SCREENSHOTS_DIR when set (`CONSOLE_SCREENSHOTS_DIR=docs/console` refreshes
the README's pictures).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import csv
import io
import json
import os
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from ledger.database import create_engine
from services.api.documents import STATEMENT_CSV_COLUMNS
from tests.api_server import seeded_ledger
from tests.console_fixtures import (
    CONSOLE_FINANCE_NAME,
    CONSOLE_FINANCE_TOKEN,
    CONSOLE_OPERATOR_NAME,
    CONSOLE_OPERATOR_TOKEN,
    HOSTILE_CREATOR,
    ConsoleApi,
    console_api,
    console_data,
)

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(
    os.environ.get("CONSOLE_SCREENSHOTS_DIR") or tempfile.mkdtemp(prefix="console-screenshots-")
)
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
ACTION_WAIT_MS = 20_000
SCREENSHOT_ATTEMPTS_MAX = 3
SCREENSHOT_RETRY_PAUSE_MS = 500

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is absent: install it with `apt-get install -y chromium`",
)

if CHROMIUM.exists():
    from playwright.sync_api import Browser, Page, sync_playwright
    from playwright.sync_api import Error as PlaywrightError

__all__ = ["console_api", "console_data", "seeded_ledger"]


@pytest.fixture(scope="module")
def browser(console_api: ConsoleApi) -> Iterator[Browser]:
    """Chromium, started once the server and its data are ready: Playwright's synchronous API
    runs an event loop of its own in this thread while the browser is open."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Visit:
    page: Page
    base_url: str
    dialogs: list[str] = field(default_factory=list)

    def goto(self, path: str) -> int:
        answer = self.page.goto(self.base_url + path)
        assert answer is not None
        return answer.status

    def screenshot(self, name: str) -> None:
        """A picture of the page for the docs. Chromium now and then answers a capture with
        "Unable to capture screenshot" while the machine is busy: tried again, at most
        SCREENSHOT_ATTEMPTS_MAX times, after a short pause; the last failure is raised."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, SCREENSHOT_ATTEMPTS_MAX + 1):
            try:
                self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
                return
            except PlaywrightError:
                if attempt == SCREENSHOT_ATTEMPTS_MAX:
                    raise
                self.page.wait_for_timeout(SCREENSHOT_RETRY_PAUSE_MS)

    def heading(self) -> str:
        return self.page.locator("h1").inner_text()


@contextlib.contextmanager
def visit(browser: Browser, api: ConsoleApi, viewport: dict[str, int] = DESKTOP) -> Iterator[Visit]:
    """A fresh browser context (no cookies) with every dialog recorded and dismissed."""
    context = browser.new_context(viewport=viewport, accept_downloads=True)  # type: ignore[arg-type]
    context.set_default_timeout(ACTION_WAIT_MS)
    page = context.new_page()
    opened = Visit(page, api.base_url)

    def on_dialog(dialog: Any) -> None:
        opened.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    try:
        yield opened
    finally:
        context.close()


def sign_in(session: Visit, token: str) -> None:
    assert session.goto("/console") == 401  # no session yet: the sign-in form
    assert session.page.get_by_label("API token").is_visible()
    names = {
        CONSOLE_OPERATOR_TOKEN: CONSOLE_OPERATOR_NAME,
        CONSOLE_FINANCE_TOKEN: CONSOLE_FINANCE_NAME,
    }
    session.page.get_by_label("Name", exact=True).fill(names[token])
    session.page.get_by_label("API token").fill(token)
    session.page.get_by_role("button", name="Sign in").click()
    session.page.wait_for_url(session.base_url + "/console")
    assert session.heading() == "Overview"


def _api_get(api: ConsoleApi, path: str) -> Any:
    request = urllib.request.Request(  # noqa: S310 (http://127.0.0.1)
        api.base_url + path, headers={"Authorization": f"Bearer {CONSOLE_OPERATOR_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        return json.loads(answer.read())


def _statement_seqs(session: Visit) -> list[int]:
    rows = session.page.locator("section[aria-labelledby=statement-heading] tbody th[scope=row]")
    return [int(seq) for seq in rows.all_inner_texts()]


def _database_rows(database_url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Rows read straight from the test database, on an event loop of a thread of its own (the
    browser's API here is synchronous)."""

    async def read() -> list[tuple[Any, ...]]:
        engine = create_engine(database_url, pool_size=1, pool_overflow_max=0)
        try:
            async with engine.connect() as conn:
                return [tuple(row) for row in await conn.execute(text(sql), params)]
        finally:
            await engine.dispose()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, read()).result()


# The tests ------------------------------------------------------------------------------------


def test_an_operator_opens_a_creator_pages_the_statement_downloads_the_csv_and_signs_out(
    browser: Browser, console_api: ConsoleApi
) -> None:
    creator = console_api.data.ledger.creator
    account = console_api.data.ledger.available_account
    with visit(browser, console_api) as session:
        assert session.goto("/console") == 401  # the sign-in form, pictured before it is filled
        session.screenshot("sign-in")
        sign_in(session, CONSOLE_OPERATOR_TOKEN)
        page = session.page
        assert page.locator("svg.chart rect").count() >= 1
        session.screenshot("overview")

        page.get_by_label("Creator id").fill(creator)
        page.get_by_role("button", name="Open").click()
        assert session.heading() == f"Creator {creator}"
        assert page.get_by_role("heading", name="Cash-out eligibility: eligible").is_visible()
        session.screenshot("creator")

        page.get_by_label("Account").select_option(account)
        page.get_by_label("Lines per page").fill("2")
        page.get_by_role("button", name="Show").click()
        first_page = _statement_seqs(session)
        assert len(first_page) == 2

        with page.expect_download() as download_info:
            page.get_by_role("link", name="Download CSV").click()
        downloaded = Path(download_info.value.path()).read_text(encoding="utf-8")
        rows = list(csv.reader(io.StringIO(downloaded)))
        assert tuple(rows[0]) == STATEMENT_CSV_COLUMNS
        quoted = urllib.parse.quote(account, safe="")
        expected = _api_get(console_api, f"/v1/accounts/{quoted}/statement?page_size=1000")
        assert [int(row[0]) for row in rows[1:]] == [line["seq"] for line in expected["lines"]]
        assert len(rows) - 1 > 2  # more than one page of two lines

        page.get_by_role("link", name="Next page").click()
        second_page = _statement_seqs(session)
        assert second_page
        assert min(second_page) > max(first_page)
        assert [*first_page, *second_page] == [int(row[0]) for row in rows[1 : 1 + 4]][
            : len(first_page) + len(second_page)
        ]

        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(session.base_url + "/console/sign-in")
        assert session.goto(f"/console/creator?id={urllib.parse.quote(creator)}") == 401
        assert page.get_by_label("API token").is_visible()
        assert session.dialogs == []


def test_a_dead_letter_of_raw_html_shows_as_text_and_an_operator_redrives_it(
    browser: Browser, console_api: ConsoleApi, database_url: str
) -> None:
    letter_id = console_api.data.html_dead_letter_id
    with visit(browser, console_api) as session:
        sign_in(session, CONSOLE_OPERATOR_TOKEN)
        page = session.page
        page.get_by_role("link", name="Dead letters").click()
        page.get_by_label("Topic").select_option("gifts.sent")
        page.get_by_label("Reason").fill("malformed_json")
        page.get_by_role("button", name="Filter").click()
        session.screenshot("dead-letters")
        page.get_by_role("link", name=str(letter_id), exact=True).click()
        assert session.heading() == f"Dead letter {letter_id}"
        shown = page.locator("pre.bytes[data-part=value][data-shape=text]").inner_text()
        assert '<script>alert("dead letter")</script>' in shown
        assert page.locator("main script, main img, main h1 + h1").count() == 0
        session.screenshot("dead-letter")

        page.get_by_label("Reason (for the operator log)").fill("the gift schema is fixed")
        page.get_by_role("button", name="Re-drive to gifts.sent").click()
        notice = page.get_by_role("status").inner_text()
        assert notice.startswith("Re-driven: the copy is at partition"), notice
        assert page.get_by_role("button", name="Re-drive to gifts.sent").count() == 0
        assert session.dialogs == []
    [recorded] = _database_rows(
        database_url,
        "SELECT a.actor, a.reason FROM dead_letter_redrives r"
        " JOIN operator_actions a ON a.id = r.operator_action_id WHERE r.dead_letter_id = :id",
        id=letter_id,
    )
    assert tuple(recorded) == (CONSOLE_OPERATOR_NAME, "the gift schema is fixed")


def test_bytes_that_are_not_utf8_show_as_hex(browser: Browser, console_api: ConsoleApi) -> None:
    with visit(browser, console_api) as session:
        sign_in(session, CONSOLE_OPERATOR_TOKEN)
        assert session.goto(f"/console/dead-letter?id={console_api.data.binary_dead_letter_id}")
        dump = session.page.locator("pre.bytes[data-part=value][data-shape=hex]").inner_text()
        assert dump.startswith("00000000  ff fe 00 3c 62 3e"), dump
        assert "<b>not utf-8</b>" not in session.page.locator("main").inner_text()


def test_finance_sees_no_action_and_its_posts_are_refused(
    browser: Browser, console_api: ConsoleApi, database_url: str
) -> None:
    letter_id = console_api.data.binary_dead_letter_id
    with visit(browser, console_api) as session:
        sign_in(session, CONSOLE_FINANCE_TOKEN)
        page = session.page
        assert session.goto(f"/console/dead-letter?id={letter_id}") == 200
        assert page.get_by_role("button", name="Re-drive to gifts.sent").count() == 0
        assert session.goto("/console/operator") == 200
        assert page.get_by_role("button", name="Approve").count() == 0
        assert page.get_by_text("operators only").first.is_visible()
        csrf = page.locator("form.who input[name=csrf_token]").get_attribute("value")
        assert csrf
        form: dict[str, str | float | bool] = {
            "csrf_token": csrf,
            "idempotency_key": "console-finance-try",
            "reason": "no",
        }
        for path in (
            f"/console/dead-letter/redrive?id={letter_id}",
            f"/console/operator/approve?id={console_api.data.adjustment_id}",
        ):
            answer = page.request.post(session.base_url + path, form=form)
            assert answer.status == 403, (path, answer.text())
            assert "only the operator role acts" in answer.text()
    assert not _database_rows(
        database_url, "SELECT 1 FROM dead_letter_redrives WHERE dead_letter_id = :id", id=letter_id
    )
    assert not _database_rows(
        database_url,
        "SELECT 1 FROM balance_adjustment_approvals WHERE adjustment_id = :id",
        id=console_api.data.adjustment_id,
    )


def test_an_operator_approves_an_adjustment_another_operator_proposed(
    browser: Browser, console_api: ConsoleApi
) -> None:
    adjustment_id = console_api.data.adjustment_id
    with visit(browser, console_api) as session:
        sign_in(session, CONSOLE_OPERATOR_TOKEN)
        page = session.page
        page.get_by_role("link", name="Operator").click()
        session.screenshot("operator")
        page.get_by_role("button", name=f"Approve {adjustment_id}").click()
        notice = page.get_by_role("status").inner_text()
        assert notice.startswith(f"Adjustment {adjustment_id} is approved"), notice
        assert page.get_by_role("button", name=f"Approve {adjustment_id}").count() == 0
        log = page.locator("section[aria-labelledby=log-heading] tbody").inner_text()
        assert "adjustment_approved" in log
        assert CONSOLE_OPERATOR_NAME in log


def test_a_hostile_creator_id_shows_as_text_on_a_phone(
    browser: Browser, console_api: ConsoleApi
) -> None:
    with visit(browser, console_api, PHONE) as session:
        sign_in(session, CONSOLE_OPERATOR_TOKEN)
        page = session.page
        session.screenshot("overview-phone")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], width
        page.get_by_label("Creator id").fill(HOSTILE_CREATOR)
        page.get_by_role("button", name="Open").click()
        assert session.heading() == f"Creator {HOSTILE_CREATOR}"
        assert page.get_by_text(HOSTILE_CREATOR).first.is_visible()
        assert page.locator("script").count() == 0
        session.screenshot("creator-hostile-phone")
        assert session.dialogs == []


def test_cashouts_filter_by_state_and_a_cashout_shows_its_transitions(
    browser: Browser, console_api: ConsoleApi
) -> None:
    paid = console_api.data.ledger.paid_cashout
    with visit(browser, console_api) as session:
        sign_in(session, CONSOLE_FINANCE_TOKEN)
        page = session.page
        page.get_by_role("link", name="Cash-outs").click()
        page.get_by_label("State").select_option("paid")
        page.get_by_label("Creator id").fill(console_api.data.ledger.creator)
        page.get_by_role("button", name="Filter").click()
        states = page.locator("tbody td:nth-child(3)").all_inner_texts()
        assert states == ["paid"]
        session.screenshot("cashouts")
        page.get_by_role("link", name=paid).click()
        assert session.heading() == f"Cash-out {paid}"
        steps = page.locator("main table").nth(1).locator("tbody th").all_inner_texts()
        stored = _api_get(console_api, f"/v1/cashouts/{urllib.parse.quote(paid, safe='')}")
        assert steps == [step["status"] for step in stored["transitions"]]
        assert steps[-1] == "paid"
        session.screenshot("cashout")


def test_an_operator_reads_the_books_and_freezes_a_creator(
    browser: Browser, console_api: ConsoleApi, database_url: str
) -> None:
    hostile = console_api.data.hostile_creator
    with visit(browser, console_api) as session:
        sign_in(session, CONSOLE_OPERATOR_TOKEN)
        page = session.page
        page.get_by_role("link", name="Books").click()
        assert session.heading() == "Books"
        diamonds = page.locator(
            "table.trial-balance", has=page.locator("caption", has_text="DIAMOND")
        )
        assert diamonds.locator("tfoot td").count() == 2
        debit, credit = diamonds.locator("tfoot td").all_inner_texts()
        assert debit == credit
        session.screenshot("books")

        assert session.goto(f"/console/creator?id={urllib.parse.quote(hostile, safe='')}") == 200
        page.get_by_label("Reason (for the operator log)").fill("payout details under review")
        page.get_by_role("button", name="Freeze this creator").click()
        notice = page.get_by_role("status").inner_text()
        assert notice.startswith("Frozen (action "), notice
        assert page.get_by_role("button", name="Unfreeze this creator").is_visible()
        log = page.locator("section[aria-labelledby=creator-actions-heading] tbody").inner_text()
        assert "creator_frozen" in log
        assert hostile in log
        session.screenshot("creator-frozen")
        assert session.dialogs == []
    [recorded] = _database_rows(
        database_url,
        "SELECT actor, reason FROM operator_actions WHERE action = 'creator_frozen'"
        " AND target = :creator",
        creator=hostile,
    )
    assert tuple(recorded) == (CONSOLE_OPERATOR_NAME, "payout details under review")
