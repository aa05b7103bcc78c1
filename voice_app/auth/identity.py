"""The Voice SDK client identity: tenant and user bound by the server into the access token.

Twilio allows alphanumerics and underscore, at most 121 characters; ours is 67. Twilio hands
the identity back as `From=client:<identity>` on the signed voice webhook, so a browser call
arrives already signed in.
"""

from __future__ import annotations

import re
from uuid import UUID

_IDENTITY = re.compile(r"t([0-9a-f]{32})_u([0-9a-f]{32})")
CLIENT_PREFIX = "client:"


def client_identity(tenant_id: UUID, user_id: UUID) -> str:
    return f"t{tenant_id.hex}_u{user_id.hex}"


def parse_client_identity(identity: str) -> tuple[UUID, UUID] | None:
    """(tenant_id, user_id) from an identity we issued, or None for anything else."""
    if identity.startswith(CLIENT_PREFIX):
        identity = identity[len(CLIENT_PREFIX):]
    match = _IDENTITY.fullmatch(identity)
    if match is None:
        return None
    return UUID(hex=match[1]), UUID(hex=match[2])
