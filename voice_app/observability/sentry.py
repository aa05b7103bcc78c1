"""Sentry for the voice app: errors and per-call traces, with nothing a caller said or keyed in.

`init_sentry(settings)` at start-up (a no-op without SENTRY_DSN), then `instrument_event_loop()`
from inside the running loop (`before_serving`): AsyncioIntegration can only patch a loop that
already runs, and without it concurrent tasks of a call share one scope.

What leaves the process goes through `scrub_event`, a pure function over event dicts used by
`before_send`, `before_send_transaction` and (via `scrub_breadcrumb`) `before_breadcrumb`:

* secrets by key, anywhere in the event (request form/query/headers/cookies, span data, extra,
  breadcrumb data, tags): PINs, gathered digits and speech (`Digits`, `SpeechResult`), tokens,
  signatures, cookies, `Authorization`, `X-Call-Context`;
* secrets by shape in every string (messages, exception values, URLs, span descriptions):
  `voice_app.logs.redact`, the same masking the logs use;
* transcripts by key (what the caller or the assistant said, LLM/MCP inputs and outputs),
  unless SENTRY_INCLUDE_TRANSCRIPTS — and even then PINs inside them are masked.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, cast

import sentry_sdk
from sentry_sdk.integrations.asyncio import enable_asyncio_integration

from voice_app.config import Settings
from voice_app.logs import MASK, redact, redact_args

if TYPE_CHECKING:
    from sentry_sdk._types import DataCollectionUserOptions
    from sentry_sdk.types import Breadcrumb, BreadcrumbHint, Event, Hint

FILTERED = "[Filtered]"


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Key names are compared "compacted": lower case, letters and digits only (X-Call-Context →
# xcallcontext), so header, form, JSON and Python spellings all match.
_SECRET_NAMES = _words(
    "pin pins pincode digits speechresult unstablespeechresult authorization proxyauthorization"
    " cookie cookies setcookie xcallcontext callcontext session csrf dsn password passwd secret"
    " credentials"
)
_SECRET_SUFFIXES = tuple(
    _words(
        "token secret password apikey signature pin digits cookie authorization sessionid"
        " privatekey secretkey accesskey encryptionkey"
    )
)
_TRANSCRIPT_NAMES = _words(
    "text transcript transcripts utterance utterances callertext usertext assistanttext heard"
    " heardtext said reply replytext speech speechtext spoken prompt prompts completion"
)
# LLM and MCP span data: inputs and outputs are conversation; names, models and counts are not.
_AI_PREFIXES = ("gen_ai.", "ai.", "mcp.")
_AI_TEXT_WORDS = _words(
    "message text prompt input output instruction content tool_call argument result"
)
# Breadcrumb categories whose message is itself what someone said.
_TRANSCRIPT_CATEGORIES = _words("transcript conversation speech")
# Left exactly as they are: SDK bookkeeping and source code (masking would only garble them).
_VERBATIM = _words(
    "sdk modules debug_meta pre_context context_line post_context abs_path filename function"
    " module event_id trace_id span_id parent_span_id"
)
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")

KeyKind = Literal["secret", "transcript"] | None


def classify_key(key: str) -> KeyKind:
    """Whether a value under this key is a secret, a transcript, or neither."""
    compact = _NOT_ALNUM.sub("", key.lower())
    if compact in _SECRET_NAMES or compact.endswith(_SECRET_SUFFIXES):
        return "secret"
    if compact in _TRANSCRIPT_NAMES:
        return "transcript"
    lowered = key.lower()
    if (
        lowered.startswith(_AI_PREFIXES)
        and "usage" not in lowered
        and not lowered.endswith(("count", "tokens"))
        and any(word in lowered for word in _AI_TEXT_WORDS)
    ):
        return "transcript"
    return None


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _scrub(value: Any, key: str, transcripts: bool) -> Any:
    if key:
        if key in _VERBATIM:
            return value
        kind = classify_key(key)
        if kind == "secret" or (kind == "transcript" and not transcripts):
            return value if _empty(value) else FILTERED
    if isinstance(value, Mapping):
        return {k: _scrub(v, str(k), transcripts) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if value and all(
            isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[0], str)
            for item in value
        ):  # [name, value] pairs: headers, query and form data in list form
            return [[name, _scrub(v, name, transcripts)] for name, v in value]
        return [_scrub(item, "", transcripts) for item in value]
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bytes):
        return redact(value.decode("utf-8", "replace"))
    return value


def _scrub_crumb(crumb: Mapping[str, Any], transcripts: bool) -> dict[str, Any]:
    out: dict[str, Any] = _scrub(crumb, "", transcripts)
    if not transcripts and out.get("category") in _TRANSCRIPT_CATEGORIES and out.get("message"):
        out["message"] = FILTERED
    return out


def _scrub_logentry(entry: dict[str, Any], original: Mapping[str, Any]) -> None:
    """A log call's arguments can hold the secret its message only hints at."""
    template, params = str(original.get("message") or ""), original.get("params")
    if not isinstance(params, list | tuple):
        return
    if entry.get("formatted") != original.get("formatted"):  # masking found something
        masked = [FILTERED for _ in params]
    else:
        masked = [
            FILTERED if p == MASK else _scrub(p, "", False)
            for p in redact_args(template, tuple(params))
        ]
    if masked == list(params):
        return
    entry["params"] = masked
    try:
        entry["formatted"] = redact(template % tuple(masked))
    except (TypeError, ValueError):
        entry["formatted"] = FILTERED


def scrub_event(event: Mapping[str, Any], *, include_transcripts: bool = False) -> dict[str, Any]:
    """A copy of a Sentry event (error or transaction) with secrets and transcripts removed."""
    out: dict[str, Any] = _scrub(event, "", include_transcripts)
    if isinstance(out.get("user"), dict):  # an opaque id only; never e-mail, IP or name
        out["user"] = {k: v for k, v in out["user"].items() if k == "id"}
    entry = out.get("logentry")
    if isinstance(entry, dict):
        _scrub_logentry(entry, event.get("logentry") or {})
    crumbs = out.get("breadcrumbs")
    values = crumbs.get("values") if isinstance(crumbs, dict) else crumbs
    if isinstance(values, list):
        values[:] = [
            _scrub_crumb(c, include_transcripts) if isinstance(c, dict) else c for c in values
        ]
    return out


def scrub_breadcrumb(
    crumb: Mapping[str, Any], *, include_transcripts: bool = False
) -> dict[str, Any]:
    return _scrub_crumb(crumb, include_transcripts)


# Hooks -------------------------------------------------------------------------------------


def _before_send(event: Event, hint: Hint, *, transcripts: bool) -> Event | None:
    scrubbed = scrub_event(cast(Mapping[str, Any], event), include_transcripts=transcripts)
    return cast("Event", scrubbed)


def _before_breadcrumb(
    crumb: Breadcrumb, hint: BreadcrumbHint, *, transcripts: bool
) -> Breadcrumb | None:
    record = hint.get("log_record") if hint else None
    if isinstance(record, logging.LogRecord) and isinstance(record.args, tuple):
        # Re-format a log breadcrumb with its PIN-like arguments masked, as the log line is.
        with contextlib.suppress(TypeError, ValueError):
            crumb["message"] = str(record.msg) % redact_args(str(record.msg), record.args)
    scrubbed = scrub_breadcrumb(cast(Mapping[str, Any], crumb), include_transcripts=transcripts)
    return cast("Breadcrumb", scrubbed)


# What the SDK may collect on its own. sentry-sdk 2.75 deprecates `send_default_pii` (it warns)
# in favour of `data_collection`; every field is spelled out because an omitted one defaults to
# *collecting*. This is send_default_pii=False and then some: no user/IP, no cookies, no bodies,
# no frame variables (locals hold transcripts under any name: `piece`, `said`, `event`), no
# LLM inputs/outputs, no query parameters of database or Redis commands.
DATA_COLLECTION: DataCollectionUserOptions = {
    "user_info": False,
    "cookies": {"mode": "off"},
    "http_headers": {  # the SDK's own PII-off terms (client IPs), then ours
        "request": {
            "mode": "denylist",
            "terms": list(
                _words("forwarded -ip remote- via -user signature call-context cookie pin")
            ),
        }
    },
    "http_bodies": [],
    "url_query_params": {
        "mode": "denylist",
        "terms": ["digits", "pin", "speech", "code", "state", "context"],
    },
    "graphql": {"document": False, "variables": False},
    "gen_ai": {"inputs": False, "outputs": False},
    "database_query_data": False,
    "queues": False,
    "stack_frame_variables": False,
}


def init_sentry(settings: Settings) -> bool:
    """Start the Sentry client from SENTRY_DSN; False (and nothing happens) when it is unset."""
    if not settings.sentry_dsn:
        return False
    # Imported here: they pull in LangChain and LangGraph (over a second), needless without a DSN.
    from sentry_sdk.integrations.langchain import LangchainIntegration
    from sentry_sdk.integrations.langgraph import LanggraphIntegration
    from sentry_sdk.integrations.mcp import MCPIntegration
    from sentry_sdk.integrations.quart import QuartIntegration

    transcripts = settings.sentry_include_transcripts
    before_send: Callable[[Event, Hint], Event | None] = partial(
        _before_send, transcripts=transcripts
    )
    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.environment,
        traces_sample_rate=settings.sentry_traces_sample_rate,
        data_collection=DATA_COLLECTION,
        include_local_variables=False,
        max_request_body_size="never",
        integrations=[
            QuartIntegration(transaction_style="endpoint"),
            # Prompts stay out twice over: gen_ai inputs/outputs are off above as well.
            LangchainIntegration(include_prompts=False),
            LanggraphIntegration(include_prompts=False),
            MCPIntegration(include_prompts=False),
        ],
        before_send=before_send,
        before_send_transaction=before_send,
        before_breadcrumb=partial(_before_breadcrumb, transcripts=transcripts),
    )
    return True


def sentry_active() -> bool:
    """A client that can send. `Client.is_active()` alone is True for any client sentry_sdk.init
    made, even without a DSN or after close(); only the transport tells."""
    client = sentry_sdk.get_client()
    return client.is_active() and client.transport is not None


def instrument_event_loop() -> None:
    """Give each asyncio task its own Sentry scope. Call from inside the running loop.

    task_spans=False: a span per spawned task would flood a long call's transaction.
    """
    if sentry_active():
        enable_asyncio_integration(task_spans=False)
