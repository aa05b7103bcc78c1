"""`POST /twiml/transfer-done`: Twilio's `<Dial action>` once the agent's leg is over."""

from __future__ import annotations

from quart import Blueprint, Response, request

from voice_app.auth.twilio_signature import twilio_signed
from voice_app.services import current_services
from voice_app.transfer.service import transfer_service

transfer_webhooks = Blueprint("transfer", __name__, url_prefix="/twiml")


@transfer_webhooks.post("/transfer-done")
@twilio_signed
async def transfer_done() -> Response:
    form = await request.form
    body = await transfer_service(current_services()).dial_finished(
        form.get("CallSid", ""),
        form.get("DialCallStatus", ""),
        form.get("CallStatus", "in-progress"),
    )
    return Response(body, mimetype="text/xml")
