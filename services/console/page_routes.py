"""The console's pages (GET): overview, creator, cash-outs, dead letters, operator (the books are
in `books_routes`, the statement download in `statement_routes`).

Each page needs a session (else 401 with the sign-in form) and reads in one read-only
transaction as the API's database role. Ids travel in the query string (`?id=`), so any id
makes a working link; every value is escaped by the templates.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Final, get_args

from aiokafka.errors import KafkaError  # type: ignore[import-untyped]
from starlette.requests import Request
from starlette.responses import Response

from ledger.queries import STATEMENT_PAGE_SIZE_MAX, creator_balances, statement
from ledger.verify_runs import latest_run
from schemas import topics
from schemas.assets import DIAMOND
from schemas.events import CashoutStatus
from services.api.dead_letters import DeadLetterFilter, list_dead_letters, load_dead_letter
from services.api.documents import creator_balances_document
from services.api.replica_lag import read_replica_lag
from services.cashout.eligibility import creator_eligibility
from services.cashout.recovery import (
    CANCELLABLE_STATUSES,
    awaits_bank_confirmation,
    resubmission_id,
)
from services.cashout.store import CashoutKey, cashout_cursor, cashout_key, load_cashout
from services.console import reads
from services.console.charts import bar_chart
from services.console.context import (
    console_of,
    day_after,
    day_start,
    message_page,
    new_action_key,
    not_signed_in,
    query_day,
    query_int,
    query_text,
    session_of,
)
from services.console.pages import amount_text, render
from services.console.shown_bytes import shown_bytes
from services.ingestion.redrive import is_source_of, read_source_records
from services.operator.adjustments import list_adjustments
from services.operator.freezes import freeze_state
from services.runtime.metrics import CONSUMER_LAG

STATEMENT_PAGE_SIZE_DEFAULT: Final = 50
ACTION_PAGE_SIZE: Final = 50
CREATOR_CASHOUT_PAGE_SIZE: Final = 200
PROPOSED_ADJUSTMENT_PAGE_SIZE: Final = 200
FROZEN_CREATOR_PAGE_SIZE: Final = 200
SOURCE_READ_WAIT_S: Final = 3.0
SEQ_MAX: Final = 2**63 - 1
ID_MAX: Final = 2**63 - 1
CASHOUT_STATUSES: Final[tuple[str, ...]] = get_args(CashoutStatus)


# Overview ------------------------------------------------------------------------------------


def consumer_lag() -> list[tuple[str, int, int]]:
    """Records behind per topic and partition, from this process's consumers' gauge (empty when
    the process runs no consumers)."""
    found = [
        (sample.labels["topic"], int(sample.labels["partition"]), int(sample.value))
        for metric in CONSUMER_LAG.collect()
        for sample in metric.samples
    ]
    return sorted(found)


def _month_days(month_start: date, today: date) -> list[date]:
    return [
        month_start + timedelta(days=offset) for offset in range((today - month_start).days + 1)
    ]


async def overview(request: Request) -> Response:
    session = session_of(request)
    if session is None:
        return not_signed_in(request)
    console = console_of(request)
    settings = console.settings
    now = datetime.now(UTC)
    today = now.date()
    month_start = today.replace(day=1)
    today_start, tomorrow = day_start(today), day_after(today)
    assert today_start is not None
    assert tomorrow is not None
    month_time = datetime(month_start.year, month_start.month, 1, tzinfo=UTC)
    async with console.reader() as conn:
        gifts = await reads.overview_gifts(conn, month_time, today, tomorrow)
        today_rows, month_rows, by_day = gifts.today, gifts.month, gifts.by_day
        liability_posted, liability_pending = await reads.creator_diamond_liability(conn)
        top = await reads.top_creators(conn)
        statuses = await reads.cashouts_by_status(conn)
        stale = await reads.find_cashouts(
            conn,
            status=None,
            creator_id=None,
            from_time=None,
            to_time=None,
            stale_after_s=settings.cashout_answer_window_s,
        )
        dead_letter_counts = await reads.dead_letters_by_reason(conn, settings.kafka_topic_prefix)
        replica_lag = await read_replica_lag(conn)
        verify_run = await latest_run(conn)
    diamonds_by_day = {row["day"]: int(row["milli_diamonds"]) for row in by_day}
    chart = bar_chart(
        f"Diamonds credited by gifts per UTC day, {month_start:%Y-%m}",
        [
            (
                day.isoformat(),
                diamonds_by_day.get(day.isoformat(), 0),
                amount_text(diamonds_by_day.get(day.isoformat(), 0), DIAMOND),
            )
            for day in _month_days(month_start, today)
        ],
    )
    return render(
        request,
        "overview.html",
        session=session,
        today=today.isoformat(),
        month=f"{month_start:%Y-%m}",
        today_rows=today_rows,
        month_rows=month_rows,
        chart=chart,
        liability_posted=liability_posted,
        liability_pending=liability_pending,
        top=top,
        cashout_statuses=statuses,
        stale=stale,
        answer_window_s=settings.cashout_answer_window_s,
        dead_letter_counts=dead_letter_counts,
        lag=consumer_lag(),
        reads_from=replica_lag.text(),
        verify_run=verify_run,
    )


# Creator --------------------------------------------------------------------------------------


def query_cashout_key(request: Request, name: str) -> CashoutKey | None:
    """A cursor of the cash-outs list (`cashout_cursor`), or None when absent or not one."""
    value = query_text(request, name)
    if value is None:
        return None
    try:
        return cashout_key(value)
    except ValueError:
        return None


async def creator(request: Request, outcome: str | None = None) -> Response:
    """A creator's page; for an operator, the freeze or unfreeze form. The statement, the
    cash-outs (newest first, after `cashouts_after`) and the operator actions on the creator and
    every cash-out of theirs (newest first, before `actions_before`) each come a page at a time,
    their cursors in the query, each list's links keeping the others'."""
    session = session_of(request)
    if session is None:
        return not_signed_in(request)
    creator_id = query_text(request, "id")
    if creator_id is None:
        return message_page(request, session, 404, "No creator", "Give a creator id.")
    console = console_of(request)
    page_size = query_int(request, "page_size", 1, STATEMENT_PAGE_SIZE_MAX)
    page_size = page_size or STATEMENT_PAGE_SIZE_DEFAULT
    cursor = query_int(request, "cursor", 0, SEQ_MAX) or 0
    actions_before = query_int(request, "actions_before", 1, ID_MAX)
    cashouts_after = query_cashout_key(request, "cashouts_after")
    async with console.reader() as conn:
        accounts = sorted(await creator_balances(conn, creator_id), key=lambda a: a.name)
        freeze = await freeze_state(conn, creator_id)
        eligibility = await creator_eligibility(conn, creator_id, console.settings.eligibility)
        chosen_name = query_text(request, "account")
        chosen = next((a for a in accounts if a.name == chosen_name), None)
        chosen = chosen or next((a for a in accounts if a.asset == DIAMOND), None)
        chosen = chosen or (accounts[0] if accounts else None)
        page = None
        if chosen is not None:
            page = await statement(conn, chosen.account_id, after_seq=cursor, page_size=page_size)
        cashouts = await reads.creator_cashouts(
            conn, creator_id, after=cashouts_after, count=CREATOR_CASHOUT_PAGE_SIZE
        )
        steps = await reads.transitions_of(conn, [c.cashout_id for c in cashouts.rows])
        actions = await reads.actions_on_creator(
            conn, creator_id, before_id=actions_before, count=ACTION_PAGE_SIZE
        )
    transitions: dict[str, list[reads.Transition]] = {}
    for step in steps:
        transitions.setdefault(step.cashout_id, []).append(step)
    return render(
        request,
        "creator.html",
        session=session,
        creator_id=creator_id,
        freeze=freeze,
        balances=creator_balances_document(creator_id, accounts)["balances"],
        accounts=accounts,
        eligibility=eligibility,
        statement_account=chosen,
        statement_lines=[] if page is None else page.lines,
        next_cursor=None if page is None else page.next_cursor,
        cursor=cursor,
        page_size=page_size,
        page_size_max=STATEMENT_PAGE_SIZE_MAX,
        cashouts=cashouts.rows,
        cashouts_after=None if cashouts_after is None else cashout_cursor(cashouts_after),
        cashouts_after_id=None if cashouts_after is None else cashouts_after.cashout_id,
        cashouts_older_than=(
            None if cashouts.next_cursor is None else cashout_cursor(cashouts.next_cursor)
        ),
        cashout_page_size=CREATOR_CASHOUT_PAGE_SIZE,
        transitions=transitions,
        actions=actions.rows,
        actions_before=actions_before,
        older_than=actions.next_cursor,
        action_page_size=ACTION_PAGE_SIZE,
        outcome=outcome,
        action_key=new_action_key(),
    )


# Cash-outs ------------------------------------------------------------------------------------


async def cashout_list(request: Request) -> Response:
    session = session_of(request)
    if session is None:
        return not_signed_in(request)
    status = query_text(request, "status")
    status = status if status in CASHOUT_STATUSES else None
    creator_id = query_text(request, "creator_id")
    from_day, to_day = query_day(request, "from"), query_day(request, "to")
    async with console_of(request).reader() as conn:
        cashouts = await reads.find_cashouts(
            conn,
            status=status,
            creator_id=creator_id,
            from_time=day_start(from_day),
            to_time=day_after(to_day),
        )
    return render(
        request,
        "cashouts.html",
        session=session,
        statuses=CASHOUT_STATUSES,
        status=status,
        creator_id=creator_id,
        from_day=from_day,
        to_day=to_day,
        cashouts=cashouts,
        row_count_max=reads.LIST_ROW_COUNT_MAX,
    )


async def cashout(request: Request, outcome: str | None = None) -> Response:
    """A cash-out's page; for an operator, the form that cancels it when it is a stale hold, or
    the one that resubmits it when it failed and was not resubmitted yet."""
    session = session_of(request)
    if session is None:
        return not_signed_in(request)
    console = console_of(request)
    answer_window_s = console.settings.cashout_answer_window_s
    cashout_id = query_text(request, "id")
    async with console.reader() as conn:
        found = None if cashout_id is None else await load_cashout(conn, cashout_id)
        if found is None or cashout_id is None:
            return message_page(request, session, 404, "No cash-out", "No cash-out has this id.")
        transitions = await reads.transitions_of(conn, [cashout_id])
        # A cash-out's actions: a cancellation and a resubmission at most, one page.
        actions = (await reads.actions_on(conn, [cashout_id])).rows
        resubmission = None
        awaiting_bank = False
        if found.status == "failed":
            resubmission = await load_cashout(conn, resubmission_id(cashout_id))
            awaiting_bank = await awaits_bank_confirmation(conn, found)
    last_change = transitions[-1].at if transitions else None
    stale = (
        found.status in CANCELLABLE_STATUSES
        and last_change is not None
        and (datetime.now(UTC) - last_change).total_seconds() > answer_window_s
    )
    return render(
        request,
        "cashout.html",
        session=session,
        cashout=found,
        transitions=transitions,
        actions=actions,
        outcome=outcome,
        stale=stale,
        answer_window_s=answer_window_s,
        may_resubmit=found.status == "failed" and resubmission is None and not awaiting_bank,
        awaiting_bank=awaiting_bank,
        resubmission=resubmission,
        action_key=new_action_key(),
    )


# Dead letters ---------------------------------------------------------------------------------


async def dead_letter_list(request: Request) -> Response:
    session = session_of(request)
    if session is None:
        return not_signed_in(request)
    console = console_of(request)
    topic = query_text(request, "topic")
    topic = topic if topic in topics.CONSUMED_TOPICS else None
    error = query_text(request, "error")
    from_day, to_day = query_day(request, "from"), query_day(request, "to")
    selection = DeadLetterFilter(
        topic=topic, error=error, from_time=day_start(from_day), to_time=day_after(to_day)
    )
    async with console.reader() as conn:
        page = await list_dead_letters(
            conn, console.settings.kafka_topic_prefix, selection, limit=reads.LIST_ROW_COUNT_MAX
        )
    return render(
        request,
        "dead_letters.html",
        session=session,
        topics=topics.CONSUMED_TOPICS,
        topic=topic,
        error=error,
        from_day=from_day,
        to_day=to_day,
        letters=page.rows,
        row_count_max=reads.LIST_ROW_COUNT_MAX,
    )


async def dead_letter(request: Request, outcome: str | None = None) -> Response:
    """A dead letter with its original record, read back from its source topic (escaped, cut
    short, hex when not UTF-8), and, for an operator, the re-drive form."""
    session = session_of(request)
    if session is None:
        return not_signed_in(request)
    console = console_of(request)
    prefix = console.settings.kafka_topic_prefix
    dead_letter_id = query_int(request, "id", 1, ID_MAX)
    async with console.reader() as conn:
        letter = None
        if dead_letter_id is not None:
            letter = await load_dead_letter(conn, prefix, dead_letter_id)
    if letter is None:
        return message_page(request, session, 404, "No dead letter", "No dead letter has this id.")
    servers = console.kafka_bootstrap_servers
    source_problem: str | None = None
    record = None
    if not servers:
        source_problem = "No Kafka cluster is configured: the original record cannot be read."
    else:
        try:
            records = await read_source_records(
                servers,
                topics.prefixed(prefix, letter.topic),
                [(letter.partition, letter.offset)],
                wait_s=SOURCE_READ_WAIT_S,
            )
            record = records.get((letter.partition, letter.offset))
            if record is None:
                source_problem = "The original record is no longer in its topic (retention)."
            elif not is_source_of(letter.topic, letter.value_sha256, letter.event_id, record):
                record = None
                source_problem = (
                    "Another record is at its offset now (the topic was recreated, or the"
                    " broker restarted): the original is no longer in its topic."
                )
        except (KafkaError, TimeoutError, OSError) as error:
            source_problem = f"The Kafka cluster did not answer ({type(error).__name__})."
    return render(
        request,
        "dead_letter.html",
        session=session,
        letter=letter,
        outcome=outcome,
        source_problem=source_problem,
        source_key=shown_bytes(None if record is None else record.key),
        source_value=shown_bytes(None if record is None else record.value),
        source_headers=[] if record is None else [(n, shown_bytes(v)) for n, v in record.headers],
        action_key=new_action_key(),
    )


# Operator -------------------------------------------------------------------------------------


async def operator_page(request: Request, outcome: str | None = None) -> Response:
    """Adjustments awaiting approval (oldest first, after `proposed_after`), frozen creators (most
    recently frozen first, before the freeze `frozen_before`) and the log (newest first, before
    `before`): each a page at a time, its cursor in the query, the others' kept in its links."""
    session = session_of(request)
    if session is None:
        return not_signed_in(request)
    proposed_after = query_int(request, "proposed_after", 1, ID_MAX)
    frozen_before = query_int(request, "frozen_before", 1, ID_MAX)
    before = query_int(request, "before", 1, ID_MAX)
    async with console_of(request).reader() as conn:
        proposed = await list_adjustments(
            conn,
            status="proposed",
            after_id=proposed_after,
            limit=PROPOSED_ADJUSTMENT_PAGE_SIZE + 1,  # one more: whether a next page exists
        )
        freezes = await reads.frozen_creators(
            conn, before_action_id=frozen_before, count=FROZEN_CREATOR_PAGE_SIZE
        )
        actions = await reads.actions_before(conn, before, ACTION_PAGE_SIZE)
    later_than = None
    if len(proposed) > PROPOSED_ADJUSTMENT_PAGE_SIZE:
        proposed = proposed[:PROPOSED_ADJUSTMENT_PAGE_SIZE]
        later_than = proposed[-1].id
    return render(
        request,
        "operator.html",
        session=session,
        outcome=outcome,
        proposed=proposed,
        proposed_after=proposed_after,
        later_than=later_than,
        proposed_page_size=PROPOSED_ADJUSTMENT_PAGE_SIZE,
        freezes=freezes.rows,
        frozen_before=frozen_before,
        frozen_earlier_than=freezes.next_cursor,
        frozen_page_size=FROZEN_CREATOR_PAGE_SIZE,
        actions=actions.rows,
        before=before,
        older_than=actions.next_cursor,
        action_page_size=ACTION_PAGE_SIZE,
        new_key=new_action_key,
    )
