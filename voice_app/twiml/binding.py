"""Binding a call to the caller who proved who they are: database row, Redis call session and
call state. Used for PSTN (after the PIN), browser (Voice SDK identity) and local-mode calls."""

from __future__ import annotations

from uuid import UUID

from voice_app.db import calls
from voice_app.services import Services
from voice_app.state.store import Session

# The call's Redis state (keys.call_state) gets session (the stream token, reused when a dropped
# stream reconnects), tenant_id, user_id, channel and reconnects; the call engine adds
# phase and transfer.
STATE_SESSION = "session"


async def bind_call(
    services: Services, *, call_sid: str, tenant_id: UUID, user_id: UUID, channel: str
) -> Session:
    async with services.db.tenant(tenant_id) as conn:
        await calls.claim_call(conn, call_sid, tenant_id, user_id, channel)
    ttl = services.settings.session_ttl_seconds
    session = await services.state.create_session(
        kind="call",
        tenant_id=str(tenant_id),
        subject_id=str(user_id),
        ttl_seconds=ttl,
        call_sid=call_sid,
        channel=channel,
    )
    await services.state.set_call_state(
        call_sid,
        ttl_seconds=ttl,
        session=session.token,
        tenant_id=str(tenant_id),
        user_id=str(user_id),
        channel=channel,
        reconnects="0",
    )
    return session
