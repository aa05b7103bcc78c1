"""Account number + PIN sign-in, shared by the phone (Gather) and the browser (JSON).

Every attempt does the same work whether or not the account exists: one database lookup, one
lock check, one argon2 verify (against a dummy hash for unknown accounts) and one failure count.
Failures are counted per account number, so unknown numbers lock exactly like real ones and a
lock reveals nothing. Only a real account's lock is written to its tenant's security events, and
that write runs after the response so it cannot be timed either.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from quart import current_app

from voice_app.auth import pin_policy
from voice_app.auth.secrets import verify_secret
from voice_app.db import calls, users
from voice_app.db.pool import Database
from voice_app.state.store import StateStore

log = logging.getLogger(__name__)

ACCOUNT_NUMBER = re.compile(r"[0-9]{6,12}")
_MAX_INPUT = 32  # longer input cannot be a PIN or an account number; keeps Redis keys bounded


class PinResult(enum.Enum):
    OK = "ok"
    WRONG = "wrong"  # wrong PIN or unknown account: deliberately one outcome
    LOCKED = "locked"


@dataclass(frozen=True, slots=True)
class SignIn:
    result: PinResult
    account: users.AccountMatch | None = None  # set only when result is OK
    retry_after_seconds: int = 0


def clean_account_number(raw: str) -> str:
    return pin_policy.normalise_account_number(raw)[:_MAX_INPUT]


async def sign_in_with_pin(
    db: Database,
    state: StateStore,
    account_number: str,
    pin: str,
    *,
    channel: str,
    context: dict[str, Any] | None = None,
) -> SignIn:
    """Check a PIN under the lockout policy. `context` (call SID, caller ID...) goes into the
    security event if this attempt locks the account."""
    account_number = account_number[:_MAX_INPUT]
    async with db.anonymous() as conn:
        match = await users.account_for_sign_in(conn, account_number)
    locked_for = await state.is_locked(account_number)
    # Always verify, even when locked or unknown: the time taken must not depend on either.
    pin_ok = await asyncio.to_thread(
        verify_secret, match.pin_hash if match else None, pin[:_MAX_INPUT]
    )

    if locked_for:
        return SignIn(PinResult.LOCKED, retry_after_seconds=locked_for)
    if pin_ok and match is not None:
        await state.clear_pin_failures(account_number)
        return SignIn(PinResult.OK, account=match)

    verdict = await state.record_pin_failure(account_number)
    if not verdict.locked:
        return SignIn(PinResult.WRONG)
    if match is not None:
        detail = {
            "account_number": account_number,
            "channel": channel,
            "failures": verdict.failures,
            "locked_seconds": verdict.retry_after_seconds,
            **(context or {}),
        }
        current_app.add_background_task(
            _record_lockout, db, match.tenant_id, match.user_id, detail
        )
    return SignIn(PinResult.LOCKED, retry_after_seconds=verdict.retry_after_seconds)


async def _record_lockout(
    db: Database, tenant_id: UUID, user_id: UUID, detail: dict[str, Any]
) -> None:
    async with db.tenant(tenant_id) as conn:
        await calls.add_security_event(
            conn, tenant_id, "pin_lockout", user_id=user_id, detail=detail
        )
    log.warning(
        "account locked after %s PIN failures (tenant %s, user %s, via %s)",
        detail["failures"], tenant_id, user_id, detail["channel"],
    )
