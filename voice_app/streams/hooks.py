"""What a live call does outside its process: Redis (transcripts, call state), PostgreSQL (the
call's outcome) and the transfer service. Kept apart so the engine itself stays free of I/O."""

from __future__ import annotations

import logging
from typing import Literal
from uuid import UUID

from voice_app.agent.base import CallContext
from voice_app.db import calls
from voice_app.services import Services
from voice_app.state import keys

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

    async def transfer(self, reason: str) -> None:
        transfers = self.services.extras.get("transfers")
        if transfers is None:
            log.warning("no transfer service configured; ending the call instead")
            return
        await transfers.start(self.context, reason)
        self.transfer_started = True

    async def hangup(self, reason: str) -> None:
        await self.services.state.set_call_state(self.context.call_sid, phase="goodbye")
        log.info("hanging up: %s", reason)

    async def finished(self, outcome: str) -> None:
        await self.services.state.set_call_state(self.context.call_sid, stream="ended")
        await self.services.state.publish(
            keys.transcript_channel(self.context.call_sid), {"event": "ended", "outcome": outcome}
        )
        tenant_id = UUID(self.context.tenant_id)
        async with self.services.db.tenant(tenant_id) as conn:
            await calls.set_call_outcome(conn, tenant_id, self.context.call_sid, outcome)
