"""Transfer to a person: the <Dial><Sip> TwiML, the REST update, the <Dial action> webhook and the
PBX availability check. The call engine calls `TransferService.start(call, reason)`."""

from voice_app.transfer.service import TransferResult, TransferService, transfer_service

__all__ = ["TransferResult", "TransferService", "transfer_service"]
