"""Bearer tokens for the MCP server: opaque session tokens kept in Redis.

A token of kind "mcp" (minted by `voice-app mcp token`) or "call" (a live call's session) names
a tenant and a user; the verifier turns it into an AccessToken whose claims carry that identity.
"""

from __future__ import annotations

from collections.abc import Callable

from mcp.server.auth.provider import AccessToken

from voice_app.state.store import Session, StateStore
from voice_app.tools.core import Identity

TOKEN_KINDS = ("mcp", "call")
SCOPE = "tools"


async def identity_for_token(state: StateStore, token: str | None) -> Identity | None:
    session = await state.get_session(token)
    if session is None or session.kind not in TOKEN_KINDS:
        return None
    return Identity.of(session.tenant_id, session.subject_id, session.call_sid)


class SessionTokenVerifier:
    """mcp's TokenVerifier protocol, backed by the Redis session store (checked per request,
    so ending the session revokes the token at once)."""

    def __init__(self, state: Callable[[], StateStore]) -> None:
        self._state = state

    async def verify_token(self, token: str) -> AccessToken | None:
        identity = await identity_for_token(self._state(), token)
        if identity is None:
            return None
        return AccessToken(
            token=token,
            client_id=f"user:{identity.user_id}",
            scopes=[SCOPE],
            subject=str(identity.user_id),
            claims={"tenant_id": str(identity.tenant_id), "call_sid": identity.call_sid or ""},
        )


def identity_from_access_token(token: AccessToken | None) -> Identity | None:
    if token is None or not token.subject or not token.claims or "tenant_id" not in token.claims:
        return None
    return Identity.of(token.claims["tenant_id"], token.subject, token.claims.get("call_sid"))


async def mint_token(
    state: StateStore, tenant_id: str, user_id: str, *, ttl_seconds: int
) -> Session:
    """A token for an MCP client acting as this user (no call attached)."""
    return await state.create_session(
        kind="mcp", tenant_id=tenant_id, subject_id=user_id, ttl_seconds=ttl_seconds
    )
