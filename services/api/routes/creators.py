"""A creator's balances and cash-out eligibility."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from ledger.queries import creator_balances
from services.api.deps import ApiSettings, IdPath, Reader, token_route
from services.api.documents import creator_balances_document
from services.api.models import CreatorBalancesDocument, EligibilityDocument
from services.api.responses import not_found
from services.cashout.eligibility import creator_eligibility
from services.operator.freezes import creator_is_known

router = APIRouter()


@token_route(
    router,
    "/v1/creators/{creator_id:path}/balances",
    summary="A creator's balances per asset (`giftledger balance --json`)",
    response_model=CreatorBalancesDocument,
    responses=not_found("The creator has no account."),
)
async def creator_balances_route(conn: Reader, creator_id: IdPath) -> dict[str, Any]:
    accounts = await creator_balances(conn, creator_id)
    if not accounts:
        raise HTTPException(404, detail=f"no accounts for creator {creator_id!r}")
    return creator_balances_document(creator_id, accounts)


@token_route(
    router,
    "/v1/creators/{creator_id:path}/eligibility",
    summary="Each Creator Next cash-out rule with pass or fail and the value seen",
    description="A creator with a profile but no account yet has an eligibility (each rule it "
    "has no fact for fails with the value seen `unknown`); one that nothing names (no profile, "
    "account or cash-out request) is not found, as `giftledger eligibility` says too.",
    response_model=EligibilityDocument,
    responses=not_found("Nothing names the creator: no profile, account or cash-out request."),
)
async def creator_eligibility_route(
    conn: Reader, settings: ApiSettings, creator_id: IdPath
) -> dict[str, Any]:
    if not await creator_is_known(conn, creator_id):
        raise HTTPException(
            404, detail=f"no creator {creator_id!r}: no profile, account or cash-out names it"
        )
    report = await creator_eligibility(conn, creator_id, settings.eligibility)
    return report.to_document()
