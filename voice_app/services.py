"""The long-lived clients one process shares: database, Redis, speech engines, model, Twilio.

Built once at start-up from `Settings` (choosing the offline engines when a provider key is
missing) and closed at shutdown. Handlers reach it through `current_services()`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from quart import current_app

from voice_app.config import Settings
from voice_app.db.pool import Database
from voice_app.state.store import StateStore

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    db: Database
    state: StateStore
    extras: dict[str, Any] = field(default_factory=dict)  # engines, clients, registries

    @classmethod
    async def start(cls, settings: Settings) -> Services:
        if not settings.database_url or not settings.redis_url:
            raise RuntimeError(
                "DATABASE_URL and REDIS_URL must be resolved before the app starts "
                "(`voice-app serve` starts embedded services when they are unset)"
            )
        from voice_app.speech.factory import build_speech

        db = await Database.connect(settings.database_url, max_size=settings.database_pool_size)
        state = StateStore.from_url(settings.redis_url)
        services = cls(settings=settings, db=db, state=state)
        services.extras["speech"] = build_speech(settings)  # shared factories; streams per call
        return services

    async def close(self) -> None:
        for name, extra in list(self.extras.items()):
            closer = getattr(extra, "aclose", None) or getattr(extra, "close", None)
            if closer is None:
                continue
            try:
                result = closer()
                if hasattr(result, "__await__"):
                    await result
            except Exception:
                log.exception("closing %s failed", name)
        await self.state.close()
        await self.db.close()


def current_services() -> Services:
    services: Services = current_app.extensions["services"]
    return services
