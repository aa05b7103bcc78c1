"""Handing the caller to a person. The tool only marks the call in Redis (once per call); the
call engine sees the mark, lets the assistant say its line, then redirects the live call.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StringConstraints

from voice_app.tools.core import Invalid, ToolSet, current_call

tools = ToolSet()

TRANSFER_FLAG = "transfer_requested"  # once per request; cleared if the transfer does not happen


@tools()
async def transfer_to_agent(
    reason: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=3, max_length=300),
        Field(
            description="Why the caller needs a person, in a few words; the agent reads it "
            "before answering (e.g. 'wants to dispute an invoice')."
        ),
    ],
) -> dict[str, Any]:
    """Hand the caller to a human agent. Use when they ask for a person or you cannot help.

    Call it once; afterwards say only the short line it returns. Returns {status, say}:
    status is "transferring", or "already_transferring" if a transfer is under way.
    """
    call = current_call()
    call_sid = call.identity.call_sid
    if not call_sid:
        raise Invalid("There is no phone call to transfer in this session.")
    first = await call.services.state.claim_call_flag(call_sid, TRANSFER_FLAG, reason)
    if not first:
        call.detail = "already transferring"
        return {
            "status": "already_transferring",
            "say": "I'm already connecting you, please hold on.",
        }
    return {"status": "transferring", "say": "I'll connect you with a colleague now, one moment."}


@tools(read_only=True)
async def check_agent_availability() -> dict[str, Any]:
    """Check whether a human agent is free right now, before offering a transfer.

    Returns {available, say}: available is true, false, or null when it could not be checked
    (then a transfer may still work; do not tell the caller nobody is there).
    """
    available = await current_call().services.availability.is_available()
    say = {
        True: "A colleague is available now.",
        False: "All my colleagues are busy at the moment.",
        None: "I can't tell right now whether a colleague is free, but I can try to connect you.",
    }[available]
    return {"available": available, "say": say}
