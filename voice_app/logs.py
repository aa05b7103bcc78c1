"""Structured logs: JSON lines in production, readable lines in development.

Every line logged while a call is being handled carries its call SID (a context variable set by
the call's task, inherited by its child tasks; Twilio webhooks bind it from `CallSid`). Secrets
never reach a line: `redact` masks PINs, gathered digits, tokens, keys and credentials that slip
into messages or tracebacks. The Sentry scrubber applies the same `redact` to every string.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from typing import Any

from voice_app.state import keys

call_sid_var: contextvars.ContextVar[str] = contextvars.ContextVar("call_sid", default="")

MASK = "***"

# A digit, typed or spoken, as a caller gives a PIN ("4 4 2 1", "four four two one").
_DIGIT = r"(?:\d|\b(?:zero|oh|one|two|three|four|five|six|seven|eight|nine)\b)"
# Names whose value is secret wherever they appear as `name: value` or `name=value`.
_SENSITIVE_NAMES = (
    r"(?:[\w-]*?(?:token|secret|passw(?:or)?d|signature|api[_-]?key)|(?:[\w-]*[_-])?pins?"
    r"|digits|speech_?result|authorization|x-call-context)"
)
_VALUE = r"(\"[^\"]*\"|'[^']*'|(?:(?:bearer|basic|token)\s+)?[^\s,;&\"'<>]+)"

# (pattern, replacement) in order; earlier ones see the text first.
_RULES: list[tuple[re.Pattern[str], str | None]] = [
    # "my PIN is 4 4 2 1", "pin: 1234", "new_pin=123456" (but not "5 PIN failures").
    (
        re.compile(
            rf"(?i)((?<![a-z])pins?(?:\s+(?:code|number))?(?:\s+(?:is|was))?\W{{0,3}})"
            rf"({_DIGIT}(?:[\s,.-]{{0,2}}{_DIGIT}){{3,11}})(?!\w)"
        ),
        rf"\g<1>{MASK}",
    ),
    # Cookie headers: every cookie in the value, not just the first.
    (
        re.compile(
            r"(?i)(?<![\w-])((?:set-)?cookie\s*[\"']?\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|[^\r\n\"']+)"
        ),
        rf"\g<1>{MASK}",
    ),
    # name: value / name=value / "name": "value" (value kept quoted; auth scheme kept).
    (re.compile(rf"(?i)(?<![\w-])({_SENSITIVE_NAMES}\s*[\"']?\s*[:=]\s*){_VALUE}"), None),
    (re.compile(r"(?i)\b(bearer)\s+[\w.~+/-]+=*"), rf"\g<1> {MASK}"),
    (re.compile(r"\bsk-[\w-]{8,}"), f"sk-{MASK}"),  # Anthropic-style API keys
    (re.compile(r"\beyJ[\w-]{5,}\.[\w-]{5,}\.[\w-]*"), MASK),  # JWTs (Twilio access tokens)
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/:@]*:)[^\s/@]+@"), rf"\g<1>{MASK}@"),
    # Redis keys that embed a session or console token (they show up in Redis spans).
    (
        re.compile(
            rf"({re.escape(keys.PREFIX)}(?:session|callsession|console-ctx):)[^\s'\",)}}\]]+"
        ),
        rf"\g<1>{MASK}",
    ),
    (re.compile(r"(?i)([?&](?:code|state)=)[^&\s#\"']+"), rf"\g<1>{MASK}"),  # OAuth callbacks
    # TwiML <Parameter name="token" value="…"/>.
    (
        re.compile(r"(?i)(name=[\"'][\w-]*(?:token|context)[\"']\s+value=[\"'])[^\"']*"),
        rf"\g<1>{MASK}",
    ),
]


# A log call about PINs whose argument looks like one: the message alone cannot show it
# ("PIN check failed for %s"), so the argument is masked before formatting.
_ABOUT_PINS = re.compile(r"(?i)(?<![a-z])(?:pins?|digits|passcode)(?![a-z])")
_PIN_LIKE = re.compile(r"\s*\d{4,8}\s*")


def redact_args(template: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The arguments of a log call, with PIN-like ones masked if the message is about PINs."""
    if not _ABOUT_PINS.search(template):
        return args
    return tuple(MASK if _PIN_LIKE.fullmatch(str(arg)) else arg for arg in args)


def _mask_value(match: re.Match[str]) -> str:
    name_and_sep, value = match[1], match[2]
    if value[:1] in "\"'":
        return f"{name_and_sep}{value[0]}{MASK}{value[0]}"
    scheme = value.split(None, 1)[0] if " " in value else ""
    return f"{name_and_sep}{scheme + ' ' if scheme else ''}{MASK}"


def redact(text: str) -> str:
    """Mask anything in free text that looks like a PIN, digits, token, key or credential."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement if replacement is not None else _mask_value, text)
    return text


class _CallContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.call_sid = call_sid_var.get()
        if isinstance(record.args, tuple):
            record.args = redact_args(str(record.msg), record.args)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not turn into an exception at the call site
            message = f"{record.msg!s} (unformattable arguments)"
        record.msg = redact(message)
        record.args = ()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if getattr(record, "call_sid", ""):
            line["call_sid"] = record.call_sid  # type: ignore[attr-defined]
        if record.exc_info:
            line["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(line)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        call = getattr(record, "call_sid", "")
        prefix = f"{stamp} {record.levelname[0]} {record.name}" + (f" [{call}]" if call else "")
        text = f"{prefix}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + redact(self.formatException(record.exc_info))
        return text


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Ours, so configuring twice replaces it instead of stacking a second one."""


def configure_logging(fmt: str = "auto", level: int = logging.INFO) -> None:
    """fmt: "json", "text", or "auto" (JSON unless stderr is a terminal)."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = _Handler()
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    handler.addFilter(_CallContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _Handler)] + [handler]
    root.setLevel(level)
    for noisy in ("hpack", "websockets", "httpx", "httpcore", "asyncio", "deepgram"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    adopt_server_loggers()


def logging_configured() -> bool:
    return any(isinstance(h, _Handler) for h in logging.getLogger().handlers)


def adopt_server_loggers() -> None:
    """Send Hypercorn's own lines (access log included) through our handler: JSON and redacted.

    Hypercorn gives its loggers plain handlers of their own when it starts serving, so this runs
    again from the app's start-up, after Hypercorn has made them.
    """
    if not logging_configured():
        return
    for name in ("hypercorn.error", "hypercorn.access"):
        server_logger = logging.getLogger(name)
        server_logger.handlers.clear()
        server_logger.propagate = True
