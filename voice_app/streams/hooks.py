"""What a live call does outside its process: Redis (transcripts, call state), PostgreSQL (the
call's outcome) and the transfer service. Kept apart so the engine itself stays free of I/O."""

from __future__ import annotations

import logging
from typing import Literal
from uuid import UUID

from voice_app.agent.base import CallContext
from voice_app.db import calls, users
from voice_app.services import Services
from voice_app.state import keys
from voice_app.tools.users import change_pin
from voice_app.transfer import transfer_service

log = logging.getLogger(__name__)


class LiveCallHooks:
    def __init__(self, services: Services, context: CallContext) -> None:
        self.services = services
        self.context = context
        self.transfer_started = False

    async def transcript(self, speaker: Literal["caller", "assistant"], text: str) -> None:
        await self.services.state.publish(
            keys.transcript_channel(self.context.call_sid),
            {"speaker": speaker, "text": text, "final": True},
        )

    async def line(self, text: str) -> None:
        tenant_id = UUID(self.context.tenant_id)
        async with self.services.db.tenant(tenant_id) as conn:
            await calls.add_message(conn, tenant_id, self.context.call_sid, "assistant", text)

    async def transfer(self, reason: str) -> str | None:
        """Start the transfer. None: Twilio is taking the call to the agent. A line: the call
        stays with the assistant (a callback was arranged, or nobody could be reached)."""
        result = await transfer_service(self.services).start(self.context, reason)
        if result.handed_over:
            self.transfer_started = True
            return None
        await self.transfer_cancelled()
        return result.say or "I couldn't reach a person right now. How else can I help?"

    async def transfer_cancelled(self) -> None:
        """The caller called the transfer off: they may ask again later."""
        await self.services.state.clear_call_flag(self.context.call_sid, "transfer_requested")

    async def earlier_conversation(self) -> tuple[str | None, list[tuple[str, str]]]:
        """For a stream that replaces an earlier one of the same call: the line to open with
        instead of the greeting, and the conversation so far. (None, []) for a new call."""
        state = await self.services.state.get_call_state(self.context.call_sid)
        returned = state.get("transfer") == "returned"
        reconnected = state.get("reconnects", "0") not in ("", "0")
        if not (returned or reconnected):
            return None, []
        tenant_id = UUID(self.context.tenant_id)
        async with self.services.db.tenant(tenant_id) as conn:
            rows = await calls.list_messages(conn, tenant_id, self.context.call_sid)
        earlier = [(str(r["role"]), str(r["content"])) for r in rows]
        if returned:
            await self.services.state.set_call_state(self.context.call_sid, transfer="none")
            return "I'm back with you. Is there anything else I can help with meanwhile?", earlier
        return "Sorry, we got cut off. I'm here again. What were you saying?", earlier

    async def hangup(self, reason: str) -> None:
        await self.services.state.set_call_state(self.context.call_sid, phase="goodbye")
        log.info("hanging up: %s", reason)

    async def pin_change_requested(self) -> bool:
        state = await self.services.state.get_call_state(self.context.call_sid)
        if state.get("pin_change") != "requested":
            return False
        await self.services.state.clear_call_flag(self.context.call_sid, "pin_change")
        return True

    async def change_pin(self, current: str, new: str) -> str:
        result = await change_pin(
            self.services.db, self.context.tenant_id, self.context.user_id, current, new
        )
        if result.result != "wrong_pin":
            return result.message
        # A wrong current PIN counts towards the account's lock-out, like any sign-in failure.
        tenant_id, user_id = UUID(self.context.tenant_id), UUID(self.context.user_id)
        async with self.services.db.tenant(tenant_id) as conn:
            user = await users.get_user(conn, tenant_id, user_id)
        if user is None:
            return result.message
        verdict = await self.services.state.record_pin_failure(user.account_number)
        if verdict.locked:
            async with self.services.db.tenant(tenant_id) as conn:
                await calls.add_security_event(conn, tenant_id, "pin_lockout", user_id=user_id)
            return result.message + " Too many wrong PINs: your account is locked for 15 minutes."
        return result.message

    async def finished(self, outcome: str) -> None:
        await self.services.state.set_call_state(self.context.call_sid, stream="ended")
        await self.services.state.publish(
            keys.transcript_channel(self.context.call_sid), {"event": "ended", "outcome": outcome}
        )
        tenant_id = UUID(self.context.tenant_id)
        async with self.services.db.tenant(tenant_id) as conn:
            await calls.set_call_outcome(conn, tenant_id, self.context.call_sid, outcome)
