"""Twilio webhooks: the incoming call, account and PIN gathers, stream end, status callbacks.

Every route is @twilio_signed: an unsigned or tampered request gets 403 before any state is read.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from quart import Blueprint, Response, request
from werkzeug.datastructures import MultiDict

from voice_app.auth import pin_policy
from voice_app.auth.identity import CLIENT_PREFIX, parse_client_identity
from voice_app.auth.pin_signin import (
    ACCOUNT_NUMBER,
    PinResult,
    clean_account_number,
    sign_in_with_pin,
)
from voice_app.auth.twilio_signature import twilio_signed
from voice_app.db import calls, users
from voice_app.observability.metrics import current_metrics
from voice_app.services import Services, current_services
from voice_app.streams.admission import call_admission
from voice_app.twiml import builders
from voice_app.twiml.binding import STATE_SESSION, bind_call

log = logging.getLogger(__name__)

twiml = Blueprint("twiml", __name__, url_prefix="/twiml")

E164 = re.compile(r"\+[1-9][0-9]{6,14}")
# Order of call statuses, for callbacks that arrive without a SequenceNumber.
_STATUS_ORDER = {"queued": 0, "initiated": 1, "ringing": 2, "in-progress": 3}


def _xml(body: str) -> Response:
    return Response(body, mimetype="text/xml")


def _urls(services: Services) -> builders.EdgeUrls:
    settings = services.settings
    return builders.EdgeUrls(settings.public_base_url, settings.public_ws_base_url)


def _channel(caller: str) -> str:
    return "browser" if caller.startswith(CLIENT_PREFIX) else "pstn"


def _heard(form: MultiDict[str, str]) -> str:
    """Keypad digits if any were pressed, else what the speech recogniser heard."""
    return form.get("Digits") or form.get("SpeechResult") or ""


@twiml.post("/voice")
@twilio_signed
async def voice() -> Response:
    services = current_services()
    form = await request.form
    call_sid, caller = form.get("CallSid", ""), form.get("From", "")
    channel = _channel(caller)
    async with services.db.anonymous() as conn:
        await calls.record_call_event(
            conn, call_sid=call_sid, status=form.get("CallStatus", "ringing"), sequence=-1,
            at=datetime.now(UTC), from_number=caller, to_number=form.get("To", ""),
            channel=channel,
        )
    if call_admission(services).full:  # before any PIN: a caller we cannot carry hears why
        log.warning("call %s turned away: this process is at MAX_LIVE_CALLS", call_sid)
        current_metrics().calls_refused.labels("busy").inc()
        return _xml(builders.goodbye(builders.GOODBYE_BUSY))

    if channel == "browser":
        # The identity was bound by us into the access token and Twilio vouches for it.
        ids = parse_client_identity(caller)
        user = None
        if ids is not None:
            async with services.db.tenant(ids[0]) as conn:
                user = await users.get_user(conn, *ids)
        if user is None:
            log.warning("browser call %s from an unknown identity", call_sid)
            return _xml(builders.goodbye(builders.GOODBYE_UNKNOWN_CLIENT))
        session = await bind_call(
            services, call_sid=call_sid, tenant_id=user.tenant_id, user_id=user.id,
            channel="browser",
        )
        return _xml(builders.connect_stream(_urls(services), session.token))

    # PSTN: caller ID may suggest the account; with none or several, ask for it.
    accounts: list[str] = []
    if E164.fullmatch(caller):
        async with services.db.anonymous() as conn:
            accounts = await users.accounts_for_phone(conn, caller)
    if len(accounts) == 1:
        await services.state.set_pending_account(call_sid, accounts[0])
        return _xml(builders.ask_pin(_urls(services)))
    return _xml(builders.ask_account(_urls(services)))


@twiml.post("/account")
@twilio_signed
async def account() -> Response:
    services = current_services()
    form = await request.form
    attempt = max(1, request.args.get("attempt", 1, type=int) or 1)
    number = clean_account_number(_heard(form))
    if not ACCOUNT_NUMBER.fullmatch(number):
        if attempt >= builders.MAX_ACCOUNT_PROMPTS:
            return _xml(builders.goodbye(builders.GOODBYE_TOO_MANY))
        return _xml(builders.ask_account(_urls(services), attempt=attempt + 1))
    # Whether or not the number exists, the caller is asked for a PIN the same way.
    await services.state.set_pending_account(form.get("CallSid", ""), number)
    return _xml(builders.ask_pin(_urls(services)))


@twiml.post("/pin")
@twilio_signed
async def pin() -> Response:
    services = current_services()
    form = await request.form
    call_sid = form.get("CallSid", "")
    number = await services.state.get_pending_account(call_sid)
    if number is None:  # the pending account expired between gathers: start over
        return _xml(builders.ask_account(_urls(services)))

    tries = await services.state.count_call_try(call_sid)
    last_try = tries >= pin_policy.MAX_TRIES_PER_CALL
    digits = pin_policy.normalise_digits(_heard(form))
    if not digits:
        if last_try:
            return _xml(builders.goodbye(builders.GOODBYE_TOO_MANY))
        return _xml(builders.ask_pin(_urls(services), builders.PIN_NOT_HEARD))

    attempt = await sign_in_with_pin(
        services.db, services.state, number, digits, channel="pstn",
        context={"call_sid": call_sid, "caller": form.get("From", "")},
    )
    if attempt.result is PinResult.LOCKED:
        return _xml(builders.locked_goodbye(attempt.retry_after_seconds))
    if attempt.result is PinResult.WRONG or attempt.account is None:
        if last_try:
            return _xml(builders.goodbye(builders.GOODBYE_TOO_MANY))
        return _xml(builders.ask_pin(_urls(services), builders.PIN_WRONG))

    session = await bind_call(
        services, call_sid=call_sid, tenant_id=attempt.account.tenant_id,
        user_id=attempt.account.user_id, channel="pstn",
    )
    return _xml(builders.connect_stream(_urls(services), session.token))


@twiml.post("/stream-ended")
@twilio_signed
async def stream_ended() -> Response:
    """<Connect action>: the stream closed. Transfer, goodbye, or reconnect after a drop."""
    services = current_services()
    call_sid = (await request.form).get("CallSid", "")
    state = await services.state.get_call_state(call_sid)
    token = state.get(STATE_SESSION, "")
    session = await services.state.get_session(token, kind="call") if token else None
    alive = session is not None and session.call_sid == call_sid
    decision = builders.after_stream(state, session_alive=alive)
    if decision is builders.AfterStream.RECONNECT:
        reconnects = builders.reconnect_count(state) + 1
        await services.state.set_call_state(call_sid, reconnects=str(reconnects))
        log.warning("stream for %s dropped; reconnecting (%d)", call_sid, reconnects)
    elif decision is builders.AfterStream.GIVE_UP:
        log.warning("stream for %s dropped; giving up", call_sid)
    return _xml(builders.after_stream_twiml(decision, _urls(services), token))


def _callback_time(raw: str | None) -> datetime:
    """Twilio's Timestamp, or now when it is missing, malformed or absurd."""
    now = datetime.now(UTC)
    try:
        at = parsedate_to_datetime(raw) if raw else now
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        at.astimezone(UTC)  # overflows for dates at the edge of datetime's range
    except (TypeError, ValueError, OverflowError):
        return now
    return at if abs((at - now).days) < 366 else now


def _int32(raw: str | None) -> int | None:
    """An integer form field that fits PostgreSQL's integer, else None (ignored)."""
    try:
        value = int((raw or "").strip())
    except ValueError:
        return None
    return value if -(2**31) <= value < 2**31 else None


@twiml.post("/status")
@twilio_signed
async def status() -> Response:
    """Call progress. Twilio retries and may reorder: record_call_event is idempotent on
    SequenceNumber, so replays change nothing."""
    services = current_services()
    form = await request.form
    call_sid, call_status = form.get("CallSid", ""), form.get("CallStatus", "")
    sequence = _int32(form.get("SequenceNumber"))
    if sequence is None:
        sequence = _STATUS_ORDER.get(call_status, 10)
    async with services.db.anonymous() as conn:
        await calls.record_call_event(
            conn, call_sid=call_sid, status=call_status, sequence=sequence,
            at=_callback_time(form.get("Timestamp")), from_number=form.get("From", ""),
            to_number=form.get("To", ""), channel=_channel(form.get("From", "")),
            duration_s=_int32(form.get("CallDuration")),
        )
    if call_status in calls.TERMINAL_STATUSES:
        # A finished call's stream token must not open another stream.
        token = (await services.state.get_call_state(call_sid)).get(STATE_SESSION)
        if token:
            await services.state.end_session(token)
    return Response(status=204)


@twiml.post("/stream-status")
@twilio_signed
async def stream_status() -> Response:
    services = current_services()
    form = await request.form
    call_sid, event = form.get("CallSid", ""), form.get("StreamEvent", "")
    if not call_sid or not event:
        return Response(status=204)
    await services.state.set_call_state(
        call_sid, stream_event=event, stream_sid=form.get("StreamSid", "")
    )
    if event == "stream-started":
        # Marks the call answered even when no call status callback is configured.
        async with services.db.anonymous() as conn:
            await calls.record_call_event(
                conn, call_sid=call_sid, status="in-progress", sequence=-1,
                at=_callback_time(form.get("Timestamp")),
            )
    elif event == "stream-error":
        log.warning("stream error on %s: %s", call_sid, form.get("StreamError", "unknown"))
    return Response(status=204)
