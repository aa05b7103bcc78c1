"""Structured logs: JSON lines in production, readable lines in development.

Every line logged while a call is being handled carries its call SID (a context variable set by
the call's task, inherited by its child tasks). Secrets never reach a line: the redaction filter
masks PINs, tokens and keys that slip into messages.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time

call_sid_var: contextvars.ContextVar[str] = contextvars.ContextVar("call_sid", default="")

_SECRET_PATTERNS = [
    re.compile(
        r"(?i)\b(pin|password|token|secret|api[_-]?key|authorization)(\W{1,3})([^\s,;&\"']+)"
    ),
    re.compile(r"\b(sk-[A-Za-z0-9_-]{8,})"),
]


def redact(text: str) -> str:
    text = _SECRET_PATTERNS[0].sub(lambda m: f"{m[1]}{m[2]}***", text)
    return _SECRET_PATTERNS[1].sub("sk-***", text)


class _CallContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.call_sid = call_sid_var.get()
        record.msg = redact(record.getMessage())
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


def configure_logging(fmt: str = "auto", level: int = logging.INFO) -> None:
    """fmt: "json", "text", or "auto" (JSON unless stderr is a terminal)."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    handler.addFilter(_CallContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("hpack", "websockets", "httpx", "httpcore", "asyncio", "deepgram"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
