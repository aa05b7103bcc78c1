"""Every setting, read from the environment (and an optional `.env`) and validated once.

`Settings.from_env()` is the only place that touches `os.environ`; everything else receives a
`Settings`. A bad value fails start-up with a `ConfigError` that names the variable and says what
is wrong. A missing provider key is not an error: the app falls back to an offline engine and says
so (`Settings.engines()`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

DEV_TWILIO_AUTH_TOKEN = "dev-twilio-auth-token"  # noqa: S105 - a public, development-only value


class ConfigError(ValueError):
    """A setting is missing or malformed. The message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


def _url(*schemes: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme not in schemes or not parts.netloc:
            raise ConfigError(name, f"expected a {'/'.join(schemes)} URL, got {raw!r}")
        return raw.rstrip("/")

    return parse


def _int_between(low: int, high: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(name, f"expected an integer, got {raw!r}") from None
        if not low <= value <= high:
            raise ConfigError(name, f"must be between {low} and {high}, got {value}")
        return value

    return parse


def _float_between(low: float, high: float) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(name, f"expected a number, got {raw!r}") from None
        if not low <= value <= high:
            raise ConfigError(name, f"must be between {low} and {high}, got {value}")
        return value

    return parse


def _bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(name, f"expected true or false, got {raw!r}")


def _pattern(regex: str, what: str) -> Callable[[str, str], str]:
    compiled = re.compile(regex)

    def parse(name: str, raw: str) -> str:
        if not compiled.fullmatch(raw):
            raise ConfigError(name, f"expected {what}, got {raw!r}")
        return raw

    return parse


def _text(name: str, raw: str) -> str:
    return raw.strip()


def _choice(*options: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        if raw not in options:
            raise ConfigError(name, f"expected one of {', '.join(options)}, got {raw!r}")
        return raw

    return parse


def setting(
    parser: Callable[[str, str], Any] = _text, default: Any = None, *, secret: bool = False
) -> Any:
    """Declare a setting: the field name upper-cased is the environment variable."""
    return field(default=default, metadata={"parser": parser, "secret": secret})


@dataclass(frozen=True)
class Settings:
    # Where things live. Unset database/redis URLs mean "start embedded services".
    database_url: str | None = setting(_url("postgres", "postgresql"))
    # Connections per process. Call-log writes are batched and tool calls short, so ~1 per
    # 5 live calls is plenty; PostgreSQL's own max_connections bounds the sum over processes.
    database_pool_size: int = setting(_int_between(2, 500), 20)
    redis_url: str | None = setting(_url("redis", "rediss", "unix"))
    data_dir: str = setting(_text, ".data")
    public_base_url: str = setting(_url("http", "https"), "http://127.0.0.1:8080")
    host: str = setting(_text, "127.0.0.1")
    port: int = setting(_int_between(1, 65535), 8080)
    environment: str = setting(_choice("development", "production", "test"), "development")
    secret_key: str | None = setting(_text, None, secret=True)
    token_encryption_key: str | None = setting(_text, None, secret=True)

    # Twilio
    twilio_account_sid: str | None = setting(_pattern(r"AC[0-9a-fA-F]{32}", "AC + 32 hex digits"))
    twilio_auth_token: str | None = setting(_text, None, secret=True)
    twilio_api_key_sid: str | None = setting(_pattern(r"SK[0-9a-fA-F]{32}", "SK + 32 hex digits"))
    twilio_api_key_secret: str | None = setting(_text, None, secret=True)
    twilio_twiml_app_sid: str | None = setting(_pattern(r"AP[0-9a-fA-F]{32}", "AP + 32 hex digits"))
    twilio_api_base_url: str | None = setting(_url("http", "https"))  # tests: a local REST stand-in

    # Speech
    deepgram_api_key: str | None = setting(_text, None, secret=True)
    deepgram_url: str = setting(_url("https", "http", "wss", "ws"), "https://api.deepgram.com")
    deepgram_stt_model: str = setting(_text, "nova-3")
    deepgram_tts_voice: str = setting(_text, "aura-2-thalia-en")

    # The model
    anthropic_api_key: str | None = setting(_text, None, secret=True)
    anthropic_base_url: str | None = setting(_url("http", "https"))
    anthropic_model: str = setting(_text, "claude-sonnet-4-6")

    # Google Calendar OAuth
    google_client_id: str | None = setting(_text)
    google_client_secret: str | None = setting(_text, None, secret=True)
    google_oauth_base_url: str = setting(_url("http", "https"), "https://accounts.google.com")
    google_token_url: str = setting(_url("http", "https"), "https://oauth2.googleapis.com/token")
    google_calendar_base_url: str = setting(
        _url("http", "https"), "https://www.googleapis.com/calendar/v3"
    )

    # Observability
    sentry_dsn: str | None = setting(_url("http", "https"), None, secret=True)
    # GET /metrics wants `Authorization: Bearer <this>` when set; in production it is served
    # only when set (operational data is not for the public port).
    metrics_token: str | None = setting(_text, None, secret=True)
    sentry_traces_sample_rate: float = setting(_float_between(0.0, 1.0), 1.0)
    sentry_include_transcripts: bool = setting(_bool, False)
    log_format: str = setting(_choice("auto", "json", "text"), "auto")

    # The PBX and the human agent
    pbx_sip_domain: str = setting(_pattern(r"[A-Za-z0-9.\-]+(:\d+)?", "a SIP host"), "pbx.local")
    agent_extension: str = setting(_pattern(r"\d{2,10}", "2-10 digits"), "2001")
    pbx_sip_username: str | None = setting(_text)
    pbx_sip_password: str | None = setting(_text, None, secret=True)
    pbx_availability_url: str | None = setting(_url("http", "https"))
    pbx_event_socket: str | None = setting(_text)  # host:port of FreeSWITCH's event socket
    pbx_event_socket_password: str | None = setting(_text, None, secret=True)

    # Call policy
    local_mode: bool = setting(_bool, False)  # browser mic straight to /streams/local
    max_call_seconds: int = setting(_int_between(10, 4 * 3600), 1800)
    idle_reprompt_seconds: float = setting(_float_between(2.0, 120.0), 8.0)
    shutdown_grace_seconds: int = setting(_int_between(0, 3600), 60)
    # Calls one process carries at once (0: no limit); the next caller hears a busy line. Set it
    # from bench/concurrency on your hardware: one core of the benchmark VMs held 20-50 cleanly.
    max_live_calls: int = setting(_int_between(0, 100_000), 25)
    session_ttl_seconds: int = setting(_int_between(60, 7 * 24 * 3600), 4 * 3600)
    # Sign-in attempts (caller PIN or console password) per client address per 10 minutes,
    # on top of each account's own lockout. Behind a proxy set TRUSTED_PROXY_HOPS, or every
    # caller shares the proxy's address.
    sign_in_attempts_per_ip: int = setting(_int_between(1, 100_000), 60)
    trusted_proxy_hops: int = setting(_int_between(0, 10), 0)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, dotenv: str | Path | None = ".env"
    ) -> Settings:
        """Parse and validate every setting. Raises `ConfigError` naming the first bad one."""
        env: dict[str, str] = {}
        if dotenv is not None and Path(dotenv).is_file():
            from dotenv import dotenv_values

            env.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
        env.update(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f.name.upper()
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = f.metadata["parser"](name, raw.strip())
        if "twilio_auth_token" not in values and values.get("environment") != "production":
            # Lets the caller simulator and local mode sign requests out of the box. Real Twilio
            # requests are signed with the account's token, so they fail against this one.
            values["twilio_auth_token"] = DEV_TWILIO_AUTH_TOKEN
        if "host" not in values and values.get("environment") == "production":
            values["host"] = "0.0.0.0"  # noqa: S104 - behind the platform's router
        settings = cls(**values)
        settings._check_pairs()
        return settings

    def _check_pairs(self) -> None:
        """Settings that only make sense together."""
        if self.twilio_api_key_sid and not self.twilio_api_key_secret:
            raise ConfigError("TWILIO_API_KEY_SECRET", "required when TWILIO_API_KEY_SID is set")
        if self.google_client_id and not self.google_client_secret:
            raise ConfigError("GOOGLE_CLIENT_SECRET", "required when GOOGLE_CLIENT_ID is set")
        if self.environment == "production":
            for name in ("twilio_auth_token", "secret_key", "token_encryption_key"):
                if not getattr(self, name):
                    raise ConfigError(name.upper(), "required in production")
            if self.twilio_auth_token == DEV_TWILIO_AUTH_TOKEN:
                raise ConfigError("TWILIO_AUTH_TOKEN", "the development token is not allowed")
            if not self.public_base_url.startswith("https://"):
                raise ConfigError("PUBLIC_BASE_URL", "must be https:// in production")

    # Derived values -------------------------------------------------------------------------

    @property
    def public_ws_base_url(self) -> str:
        """The wss:// (or ws://) form of PUBLIC_BASE_URL, the URL Twilio signs for streams."""
        scheme, rest = self.public_base_url.split("://", 1)
        return ("wss" if scheme == "https" else "ws") + "://" + rest

    @property
    def effective_secret_key(self) -> str:
        # Development falls back to a key derived from the data folder so restarts keep sessions.
        return self.secret_key or f"dev-only-secret:{Path(self.data_dir).resolve()}"

    def engines(self) -> dict[str, str]:
        """Which engine serves each job, in words an operator reads at start-up."""
        return {
            "speech-to-text": "Deepgram nova-3"
            if self.deepgram_api_key
            else "offline pocketsphinx",
            "text-to-speech": "Deepgram Aura-2"
            if self.deepgram_api_key
            else "offline flite/espeak-ng",
            "agent": f"Claude {self.anthropic_model}"
            if self.anthropic_api_key
            else "offline intent grammar",
            "database": "configured PostgreSQL" if self.database_url else "embedded PostgreSQL",
            "redis": "configured Redis" if self.redis_url else "embedded Redis",
        }

    def redacted(self) -> dict[str, Any]:
        """The settings with secrets hidden, for logs."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name.upper()] = "***" if f.metadata["secret"] and value else value
        return out
