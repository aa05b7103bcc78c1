"""Handing a live call to a person, and what happens when the person does not answer.

`TransferService.start(call, reason)` runs once the assistant's transfer line has played:

1. claims the call's transfer flag in Redis (a second request while one is under way is answered,
   not repeated);
2. mints the opaque console-context token (Redis, 15 min) that rides to the PBX as X-Call-Context;
3. publishes the caller card to the tenant's consoles, so it is on screen before the INVITE rings;
4. marks the call `transfer=dialing`, so the end of the media stream is expected, not a hang-up;
5. replaces the call's TwiML through Twilio's REST API with `<Dial><Sip>` to the agent.

`dial_finished()` answers the `<Dial action>` webhook: after a conversation with the agent, goodbye;
when the agent did not answer, an honest line, a callback todo, and back to the assistant on a new
stream with the same call session token (`transfer=returned`, so it can say it is back).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from voice_app.agent.base import CallContext
from voice_app.auth.secrets import new_token
from voice_app.config import Settings
from voice_app.console.card import caller_card
from voice_app.db import console as console_db
from voice_app.db.pool import Database
from voice_app.services import Services
from voice_app.state import keys
from voice_app.state.store import StateStore
from voice_app.transfer import twiml
from voice_app.transfer.availability import check_agent_availability
from voice_app.twiml.binding import STATE_SESSION
from voice_app.twiml.builders import EdgeUrls

log = logging.getLogger(__name__)

CONTEXT_TTL_SECONDS = 15 * 60
REST_TIMEOUT_SECONDS = 8.0  # the tool budget
E164 = re.compile(r"\+[1-9][0-9]{6,14}")

# Call-state fields (keys.call_state). `transfer` is the one the stream-ended webhook reads.
STATE_TRANSFER = "transfer"  # dialing | connected | returned | (absent: none)
STATE_IN_FLIGHT = "transfer_in_flight"  # the once-per-call flag, cleared when it is over
STATE_CONTEXT = "console_token"
STATE_REASON = "transfer_reason"
STATE_CALLBACK = "callback_todo"  # set once a callback todo exists for this call

SAY_ALREADY = "I'm already connecting you, please hold on."
SAY_FAILED = (
    "I couldn't reach a person right now, so I've asked a colleague to call you back. "
    "Is there anything else I can help with in the meantime?"
)
SAY_NOBODY = (
    "Nobody from the team is available right now, so I've asked a colleague to call you back. "
    "Is there anything else I can help with in the meantime?"
)
SAY_NOT_ON_PHONE = (
    "I can't put you through to a person on this line, but I've asked a colleague to call you "
    "back. Is there anything else I can help with?"
)
SAY_NO_CALLBACK = (  # when even the callback could not be noted: promise nothing
    "I couldn't reach a person right now. Please try again a little later. "
    "Is there anything else I can help with in the meantime?"
)

Status = Literal["dialing", "already_transferring", "callback", "failed"]


@dataclass(frozen=True, slots=True)
class TransferResult:
    """What `start()` did. When `say` is set the call stays with the assistant, which speaks it;
    otherwise (`dialing`, `already_transferring`) Twilio is about to end the stream."""

    status: Status
    say: str | None = None
    token: str | None = None  # the console-context token, when a dial was issued
    detail: str = ""

    @property
    def handed_over(self) -> bool:
        return self.status in ("dialing", "already_transferring")


def make_twilio_client(settings: Settings) -> Client | None:
    """One reusable async-capable REST client (create it inside the running loop), or None when
    Twilio is not configured. TWILIO_API_BASE_URL points it at a local stand-in."""
    if not (settings.twilio_account_sid and settings.twilio_auth_token):
        return None
    http: AsyncTwilioHttpClient
    if settings.twilio_api_base_url:
        from voice_app.twilio_http import LocalAsyncTwilioHttpClient

        http = LocalAsyncTwilioHttpClient(settings.twilio_api_base_url)
    else:
        http = AsyncTwilioHttpClient()
    return Client(settings.twilio_account_sid, settings.twilio_auth_token, http_client=http)


def transferable(call: CallContext) -> bool:
    """Only a call Twilio is carrying can be redirected to the PBX."""
    return call.call_sid.startswith("CA") and call.channel not in ("local", "simulator")


class TransferService:
    def __init__(
        self,
        settings: Settings,
        state: StateStore,
        db: Database,
        client: Client | None,
        *,
        availability: Callable[[], Awaitable[bool | None]] | None = None,
    ) -> None:
        self.settings = settings
        self.state = state
        self.db = db
        self.client = client
        self.availability = availability or (lambda: check_agent_availability(settings))

    async def aclose(self) -> None:
        http = getattr(self.client, "http_client", None)
        if isinstance(http, AsyncTwilioHttpClient):
            await http.close()

    # --- starting ------------------------------------------------------------------------------

    async def start(self, call: CallContext, reason: str) -> TransferResult:
        reason = " ".join(reason.split())[:300] or "asked for a person"
        if not transferable(call):
            noted = await self.create_callback(call, reason, why="the call is not on the phone")
            say = SAY_NOT_ON_PHONE if noted else SAY_NO_CALLBACK
            return TransferResult("callback", say, detail="not a Twilio call")
        if not await self.state.claim_call_flag(call.call_sid, STATE_IN_FLIGHT):
            return TransferResult("already_transferring", detail="a transfer is under way")

        token: str | None = None
        try:
            if self.client is None:
                raise RuntimeError("Twilio is not configured")
            if await self.availability() is False:
                await self._release(call, None)
                noted = await self.create_callback(call, reason, why="no agent was registered")
                say = SAY_NOBODY if noted else SAY_NO_CALLBACK
                return TransferResult("callback", say, detail="agent not registered")
            token = new_token()
            context, card = await self._card(call, reason, token)
            transfer = twiml.transfer_twiml(
                public_base_url=self.settings.public_base_url,
                extension=self.settings.agent_extension,
                domain=self.settings.pbx_sip_domain,
                context_token=token,
                caller_id=context["caller_number"],
                username=self.settings.pbx_sip_username,
                password=self.settings.pbx_sip_password,
            )
            await self.state.put_token(keys.console_context(token), context, CONTEXT_TTL_SECONDS)
            await self._mark(
                call.call_sid,
                {STATE_TRANSFER: "dialing", STATE_CONTEXT: token, STATE_REASON: reason},
            )
            # Before the REST call: the console must have the card when the INVITE rings.
            await self.state.publish(
                keys.console_channel(call.tenant_id),
                {"type": "transfer", "token": token, "card": card},
            )
            async with asyncio.timeout(REST_TIMEOUT_SECONDS):
                await self.client.calls(call.call_sid).update_async(twiml=transfer)
        except Exception as error:  # every failure ends the same way: stay with the assistant
            log.warning("transfer of %s failed: %s", call.call_sid, error or type(error).__name__)
            log.debug("transfer failure", exc_info=True)
            await self._release(call, token)
            noted = await self.create_callback(call, reason, why="the transfer failed to start")
            say = SAY_FAILED if noted else SAY_NO_CALLBACK
            return TransferResult("failed", say, detail=str(error) or type(error).__name__)
        log.info("transfer of %s to %s started", call.call_sid, self.settings.agent_extension)
        return TransferResult("dialing", token=token)

    async def _card(
        self, call: CallContext, reason: str, token: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The token's data (who and which call) and the caller card built from it."""
        tenant_id, user_id = UUID(call.tenant_id), UUID(call.user_id)
        async with self.db.tenant(tenant_id) as conn:
            caller = await console_db.caller_facts(conn, tenant_id, user_id)
            messages = await console_db.conversation(conn, tenant_id, call.call_sid)
            todos = await console_db.open_todos(conn, tenant_id, user_id)
        context = {
            "tenant_id": call.tenant_id,
            "user_id": call.user_id,
            "call_sid": call.call_sid,
            "reason": reason,
            "caller_number": callback_number(call, caller),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        card = caller_card(
            token=token, context=context, caller=caller, messages=messages, todos=todos
        )
        return context, card

    async def _mark(self, call_sid: str, fields: dict[str, str]) -> None:
        await self.state.set_call_state(
            call_sid, ttl_seconds=self.settings.session_ttl_seconds, **fields
        )

    async def _release(self, call: CallContext, token: str | None) -> None:
        """Undo a transfer that did not happen: the call is the assistant's again."""
        try:
            await self.state.redis.hdel(
                keys.call_state(call.call_sid), STATE_IN_FLIGHT, STATE_TRANSFER, STATE_CONTEXT
            )
            if token is not None:
                await self.state.redis.delete(keys.console_context(token))
                await self.state.publish(
                    keys.console_channel(call.tenant_id),
                    {"type": "transfer_ended", "token": token, "outcome": "failed"},
                )
        except Exception:
            log.exception("could not clear the transfer state of %s", call.call_sid)

    # --- callbacks ------------------------------------------------------------------------------

    async def create_callback(
        self, call: CallContext, reason: str, *, why: str, number: str = ""
    ) -> bool:
        """A callback todo on the tenant's agent team, once per call (webhooks are retried).
        True when the call has one, so the caller may be told a colleague will call back."""
        if not await self.state.claim_call_flag(call.call_sid, STATE_CALLBACK):
            return True
        try:
            tenant_id, user_id = UUID(call.tenant_id), UUID(call.user_id)
            async with self.db.tenant(tenant_id) as conn:
                caller = await console_db.caller_facts(conn, tenant_id, user_id)
                number = number or callback_number(call, caller)
                name = (caller or {}).get("display_name") or "the caller"
                todo_id = await console_db.create_callback_todo(
                    conn,
                    tenant_id,
                    user_id,
                    title=f"Call back {name}" + (f" on {number}" if number else ""),
                    notes=f"Reason: {reason}\nWhy a callback: {why}.\nCall: {call.call_sid}",
                )
        except Exception:
            log.exception("could not create a callback todo for %s", call.call_sid)
            await self.state.clear_call_flag(call.call_sid, STATE_CALLBACK)
            return False
        log.info("callback todo %s for call %s", todo_id, call.call_sid)
        return True

    # --- after the <Dial> --------------------------------------------------------------------

    async def dial_finished(
        self, call_sid: str, dial_call_status: str, call_status: str = "in-progress"
    ) -> str:
        """The TwiML answering `<Dial action>`, and the bookkeeping that goes with it."""
        outcome = twiml.dial_outcome(dial_call_status, call_status)
        state = await self.state.get_call_state(call_sid)
        tenant_id, user_id = state.get("tenant_id", ""), state.get("user_id", "")
        token = state.get(STATE_CONTEXT, "")
        if tenant_id and token:
            await self.state.publish(
                keys.console_channel(tenant_id),
                {"type": "transfer_ended", "token": token, "outcome": outcome.value},
            )
        if not (tenant_id and user_id):  # not a call we bound: nothing to go back to
            log.warning("<Dial action> for unknown call %s", call_sid)
            return twiml.goodbye_twiml()

        if outcome is twiml.DialOutcome.CONNECTED:
            await self._mark(call_sid, {STATE_TRANSFER: "connected"})
            async with self.db.tenant(UUID(tenant_id)) as conn:
                await console_db.set_call_outcome(conn, UUID(tenant_id), call_sid, "transferred")
            return twiml.goodbye_twiml()

        call = CallContext(
            tenant_id=tenant_id,
            user_id=user_id,
            call_sid=call_sid,
            channel=state.get("channel", "pstn"),  # type: ignore[arg-type]
        )
        why = f"the agent did not take the call ({dial_call_status or 'no status'})"
        reason = state.get(STATE_REASON, "asked for a person")
        noted = await self.create_callback(call, reason, why=why)
        if outcome is twiml.DialOutcome.CALLER_GONE:
            await self.state.redis.hdel(keys.call_state(call_sid), STATE_IN_FLIGHT)
            return twiml.goodbye_twiml()

        session_token = state.get(STATE_SESSION, "")
        session = await self.state.get_session(session_token, kind="call")
        if session is None or session.call_sid != call_sid:
            return twiml.goodbye_twiml(twiml.missed_line(noted) + " Goodbye.")
        await self._mark(call_sid, {STATE_TRANSFER: "returned"})
        # Back with the assistant: the caller may ask for a person again.
        await self.state.redis.hdel(
            keys.call_state(call_sid), STATE_IN_FLIGHT, "transfer_requested"
        )
        urls = EdgeUrls(self.settings.public_base_url, self.settings.public_ws_base_url)
        return twiml.back_to_assistant_twiml(urls, session_token, callback=noted)


def callback_number(call: CallContext, caller: dict[str, Any] | None) -> str:
    """The E.164 number to show and to call back: the line they called from, else their profile."""
    if E164.fullmatch(call.caller_number):
        return call.caller_number
    phone = (caller or {}).get("phone_e164") or ""
    return phone if E164.fullmatch(phone) else ""


def transfer_service(services: Services) -> TransferService:
    """The process's TransferService, made on first use inside the running loop (its aiohttp
    session must belong to that loop) and closed with the other extras at shutdown."""
    service = services.extras.get("transfers")
    if not isinstance(service, TransferService):
        client = make_twilio_client(services.settings)
        service = TransferService(services.settings, services.state, services.db, client)
        services.extras["transfers"] = service
    return service
