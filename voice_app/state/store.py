"""Short-lived shared state in Redis: sessions, live call state, PIN counters, pub/sub.

Anything that must survive a process or be seen by another process lives here; audio never does.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, cast

import redis.asyncio as aioredis

from voice_app.auth import pin_policy
from voice_app.auth.secrets import new_token
from voice_app.state import keys


@dataclass(frozen=True, slots=True)
class Session:
    """Who is signed in. `kind` is "browser" (cookie), "call" (a call's stream), or "agent"."""

    token: str
    kind: str
    tenant_id: str
    subject_id: str  # user id, or agent id for kind="agent"
    call_sid: str = ""
    channel: str = ""
    csrf: str = ""
    created_at: float = 0.0


class StateStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    @classmethod
    def from_url(cls, url: str) -> StateStore:
        return cls(aioredis.from_url(url, decode_responses=True, health_check_interval=15))

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    # Sessions ------------------------------------------------------------------------------

    async def create_session(
        self, *, kind: str, tenant_id: str, subject_id: str, ttl_seconds: int, **extra: str
    ) -> Session:
        session = Session(
            token=new_token(),
            kind=kind,
            tenant_id=tenant_id,
            subject_id=subject_id,
            csrf=new_token(16),
            created_at=time.time(),
            **extra,
        )
        await self.redis.set(
            keys.session(session.token), json.dumps(asdict(session)), ex=ttl_seconds
        )
        return session

    async def get_session(self, token: str | None, *, kind: str | None = None) -> Session | None:
        if not token or len(token) > 128:
            return None
        raw = await self.redis.get(keys.session(token))
        if raw is None:
            return None
        session = Session(**json.loads(raw))
        if kind is not None and session.kind != kind:
            return None
        return session

    async def end_session(self, token: str) -> None:
        await self.redis.delete(keys.session(token))

    # Live call state -----------------------------------------------------------------------

    async def set_call_state(
        self, call_sid: str, ttl_seconds: int = 6 * 3600, **fields: str
    ) -> None:
        key = keys.call_state(call_sid)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=cast(dict[Any, Any], fields))
            pipe.expire(key, ttl_seconds)
            await pipe.execute()

    async def get_call_state(self, call_sid: str) -> dict[str, str]:
        return cast(dict[str, str], await self.redis.hgetall(keys.call_state(call_sid)))

    async def claim_call_flag(self, call_sid: str, flag: str, value: str = "1") -> bool:
        """Set a flag once; True only for the first caller (e.g. "a transfer is under way")."""
        return bool(await self.redis.hsetnx(keys.call_state(call_sid), flag, value))

    async def clear_call_flag(self, call_sid: str, flag: str) -> None:
        await self.redis.hdel(keys.call_state(call_sid), flag)

    # PIN tries and lockout -----------------------------------------------------------------

    async def count_sign_in(self, client: str, limit: int, window_seconds: int) -> int:
        """Count one sign-in attempt from `client`; seconds to wait if it is over `limit` in
        the current window, else 0. Counted before the secret is checked: each check costs an
        argon2 hash, and many accounts tried from one address is an attack of its own."""
        now = int(time.time())
        window = now // window_seconds
        key = keys.sign_in_attempts(client, window)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, window_seconds)
            attempts, _ = await pipe.execute()
        if int(attempts) <= limit:
            return 0
        return (window + 1) * window_seconds - now

    async def is_locked(self, account_number: str) -> int:
        """Seconds left on the account's lock, or 0."""
        ttl = await self.redis.ttl(keys.pin_lock(account_number))
        return max(0, int(ttl))

    async def record_pin_failure(self, account_number: str) -> pin_policy.LockVerdict:
        """Count a failure in the sliding window, whatever phone or browser it came from."""
        now = time.time()
        key = keys.pin_failures(account_number)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, 0, now - pin_policy.FAILURE_WINDOW_SECONDS)
            pipe.zadd(key, {new_token(6): now})
            pipe.zcard(key)
            pipe.expire(key, pin_policy.FAILURE_WINDOW_SECONDS)
            _, _, failures, _ = await pipe.execute()
        verdict = pin_policy.verdict_after_failure(int(failures))
        if verdict.locked:
            await self.redis.set(keys.pin_lock(account_number), "1", ex=verdict.retry_after_seconds)
            await self.redis.delete(key)
        return verdict

    async def clear_pin_failures(self, account_number: str) -> None:
        await self.redis.delete(keys.pin_failures(account_number))

    async def count_call_try(self, call_sid: str) -> int:
        key = keys.call_tries(call_sid)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, 3600)
            tries, _ = await pipe.execute()
        return int(tries)

    async def set_pending_account(self, call_sid: str, account_number: str) -> None:
        await self.redis.set(keys.pending_account(call_sid), account_number, ex=900)

    async def get_pending_account(self, call_sid: str) -> str | None:
        return cast(str | None, await self.redis.get(keys.pending_account(call_sid)))

    # Short-lived tokens bound to data (stream tokens, console contexts) --------------------

    async def put_token(self, key: str, data: Mapping[str, Any], ttl_seconds: int) -> None:
        await self.redis.set(key, json.dumps(dict(data)), ex=ttl_seconds)

    async def get_token(self, key: str) -> dict[str, Any] | None:
        raw = await self.redis.get(key)
        return json.loads(raw) if raw else None

    # Pub/sub -------------------------------------------------------------------------------

    async def publish(self, channel: str, message: Mapping[str, Any]) -> None:
        await self.redis.publish(channel, json.dumps(dict(message), default=str))

    async def subscribe(self, channel: str) -> AsyncIterator[dict[str, Any]]:
        """Messages on a channel until the consumer stops iterating."""
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(channel)
        try:
            async for item in pubsub.listen():
                if item.get("type") == "message":
                    yield json.loads(item["data"])
        finally:
            await pubsub.unsubscribe(channel)
            await pubsub.aclose()
