"""An Anthropic Messages API stand-in: `POST /v1/messages`, streamed (SSE) or not.

Replies are scripted by the test, in order, or computed by a responder that sees the request (so a
test can answer tool_result messages):

    async with AnthropicStandIn(ttft=0.2, tokens_per_second=50) as claude:
        claude.reply("Sure.", ToolUse("list_todos", {"status": "open"}))
        claude.reply("You have two todos.")
        claude.responder = lambda request: ScriptedReply.text("...")   # when the queue is empty
        claude.fail_next("overloaded")                                  # 529 on the next request

Point the SDK at it: `AsyncAnthropic(base_url=claude.url, api_key="test", max_retries=0)`.
Fault kinds for `fail_next`: rate_limit (429 + retry-after), overloaded (529), server_error (500),
hang (never answer), stall (stop mid-stream), drop (close the connection mid-stream),
error_event (an SSE `error` event mid-stream), malformed_tool_json (invalid partial_json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import inspect
import json
import re
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.standins import HttpStandIn, json_response

FAULTS = {
    "rate_limit": (
        429,
        "rate_limit_error",
        "Number of request tokens has exceeded your rate limit.",
    ),
    "overloaded": (529, "overloaded_error", "Overloaded"),
    "server_error": (500, "api_error", "Internal server error"),
}
STREAM_FAULTS = {"hang", "stall", "drop", "error_event", "malformed_tool_json"}


@dataclass
class Text:
    text: str


@dataclass
class ToolUse:
    name: str
    input: dict[str, Any]
    id: str = field(default_factory=lambda: f"toolu_{uuid.uuid4().hex[:24]}")


Block = Text | ToolUse


@dataclass
class ScriptedReply:
    blocks: list[Block]
    stop_reason: str | None = None  # None: "tool_use" if there is a tool call, else "end_turn"

    @classmethod
    def text(cls, text: str) -> ScriptedReply:
        return cls([Text(text)])

    @property
    def effective_stop_reason(self) -> str:
        if self.stop_reason:
            return self.stop_reason
        return "tool_use" if any(isinstance(b, ToolUse) for b in self.blocks) else "end_turn"


Responder = Callable[[dict[str, Any]], "ScriptedReply | Awaitable[ScriptedReply]"]


def word_tokens(text: str) -> list[str]:
    """Split text the way the stand-in streams it: one word (with its leading space) per token."""
    return re.findall(r"\s*\S+|\s+$", text) or [text]


def json_tokens(payload: dict[str, Any], size: int = 12) -> list[str]:
    raw = json.dumps(payload)
    return [raw[i : i + size] for i in range(0, len(raw), size)]


class AnthropicStandIn(HttpStandIn):
    name = "anthropic"

    def __init__(
        self,
        *,
        port: int = 0,
        latency: float = 0.0,
        api_key: str | None = None,  # None: any non-empty key
        ttft: float = 0.0,  # seconds before the first content delta
        tokens_per_second: float = 0.0,  # 0: as fast as possible
        default_reply: str = "OK.",
    ) -> None:
        super().__init__(port=port, latency=latency)
        self.api_key = api_key
        self.ttft = ttft
        self.tokens_per_second = tokens_per_second
        self.default_reply = default_reply
        self.responder: Responder | None = None
        self.messages: list[dict[str, Any]] = []  # request bodies to /v1/messages, in order
        self._script: deque[ScriptedReply] = deque()
        self._stream_faults: deque[str] = deque()
        self._cached_prefixes: set[str] = set()

    # Test API -------------------------------------------------------------------------------

    def reply(self, *blocks: str | Block, stop_reason: str | None = None) -> None:
        """Queue one reply; strings become text blocks."""
        items = [Text(b) if isinstance(b, str) else b for b in blocks]
        self._script.append(ScriptedReply(items, stop_reason))

    def script(self, *replies: ScriptedReply) -> None:
        self._script.extend(replies)

    def fail_next(  # type: ignore[override]
        self,
        kind: str | int,
        *,
        count: int = 1,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """A named fault (see module doc) or a raw HTTP status for the next `count` requests."""
        if isinstance(kind, int):
            super().fail_next(kind, count=count, body=body, headers=headers)
        elif kind in FAULTS:
            status, _, _ = FAULTS[kind]
            extra = {"retry-after": "1"} if kind == "rate_limit" else {}
            extra |= {"request-id": f"req_{uuid.uuid4().hex[:24]}"}
            super().fail_next(status, count=count, body=body, headers=extra | (headers or {}))
        elif kind == "hang":
            self.hang_next(count)
        elif kind in STREAM_FAULTS:
            self._stream_faults.extend([kind] * count)
        else:
            raise ValueError(f"unknown fault {kind!r}")

    def error_body(self, status: int) -> Any:
        kind, message = "api_error", "Internal server error"
        for code, error_type, text in FAULTS.values():
            if code == status:
                kind, message = error_type, text
        if status == 401:
            kind, message = "authentication_error", "invalid x-api-key"
        if status == 400:
            kind, message = "invalid_request_error", "invalid request"
        return {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": f"req_{uuid.uuid4().hex[:24]}",
        }

    # Server ---------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)

    def _authorized(self, request: web.Request) -> bool:
        key = request.headers.get("x-api-key")
        if key is None:
            scheme, _, key = request.headers.get("Authorization", "").partition(" ")
            if scheme != "Bearer":
                return False
        return bool(key) and (self.api_key is None or key == self.api_key)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return json_response(self.error_body(401), 401)
        try:
            body = await request.json()
        except ValueError:
            return json_response(self.error_body(400), 400)
        missing = [k for k in ("model", "max_tokens", "messages") if k not in body]
        if missing:
            error = self.error_body(400)
            error["error"]["message"] = f"{missing[0]}: Field required"
            return json_response(error, 400)
        self.messages.append(body)
        reply = await self._next_reply(body)
        usage = self._usage(body)
        if body.get("stream"):
            fault = self._stream_faults.popleft() if self._stream_faults else None
            return await self._stream(request, body, reply, usage, fault)
        return json_response(self._message(body, reply, usage, complete=True))

    async def _next_reply(self, body: dict[str, Any]) -> ScriptedReply:
        if self._script:
            return self._script.popleft()
        if self.responder is not None:
            result = self.responder(body)
            return await result if inspect.isawaitable(result) else result
        return ScriptedReply.text(self.default_reply)

    def _usage(self, body: dict[str, Any]) -> dict[str, Any]:
        """Rough token counts; a cache_control prefix is 'written' once, then 'read'."""
        input_tokens = max(1, len(json.dumps(body.get("messages", []))) // 4)
        prefix = json.dumps([body.get("tools"), body.get("system")], sort_keys=True)
        usage = {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 0,
        }
        if "cache_control" in prefix or body.get("cache_control"):
            key = hashlib.sha256(prefix.encode()).hexdigest()
            field_name = "cache_read_input_tokens"
            if key not in self._cached_prefixes:
                self._cached_prefixes.add(key)
                field_name = "cache_creation_input_tokens"
            usage[field_name] = max(1, len(prefix) // 4)
        return usage

    def _message(
        self, body: dict[str, Any], reply: ScriptedReply, usage: dict[str, Any], *, complete: bool
    ) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        output_tokens = 0
        if complete:
            for block in reply.blocks:
                if isinstance(block, Text):
                    content.append({"type": "text", "text": block.text})
                    output_tokens += len(word_tokens(block.text))
                else:
                    content.append(
                        {
                            "type": "tool_use",
                            "id": block.id,
                            "name": block.name,
                            "input": block.input,
                        }
                    )
                    output_tokens += len(json_tokens(block.input))
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": reply.effective_stop_reason if complete else None,
            "stop_sequence": None,
            "usage": usage | {"output_tokens": output_tokens if complete else 1},
        }

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        reply: ScriptedReply,
        usage: dict[str, Any],
        fault: str | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "request-id": f"req_{uuid.uuid4().hex[:24]}",
            }
        )
        await response.prepare(request)

        async def event(name: str, data: dict[str, Any]) -> None:
            await response.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())

        gap = 1 / self.tokens_per_second if self.tokens_per_second else 0.0
        start_message = self._message(body, reply, usage, complete=False)
        await event("message_start", {"type": "message_start", "message": start_message})
        await event("ping", {"type": "ping"})
        await self.sleep_or_stop(self.ttft)
        output_tokens = 0
        max_tokens = int(body.get("max_tokens", 4096))
        stop_reason = reply.effective_stop_reason
        for index, block in enumerate(reply.blocks):
            start: dict[str, Any]
            if isinstance(block, Text):
                start = {"type": "text", "text": ""}
                delta_type, field_name = "text_delta", "text"
                tokens = word_tokens(block.text)
            else:
                start = {"type": "tool_use", "id": block.id, "name": block.name, "input": {}}
                delta_type, field_name = "input_json_delta", "partial_json"
                tokens = ["", *json_tokens(block.input)]
                if fault == "malformed_tool_json":
                    tokens = ["", '{"oops": ', "nope}"]
            await event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": start},
            )
            for i, token in enumerate(tokens):
                if output_tokens >= max_tokens:
                    stop_reason = "max_tokens"
                    break
                if fault in ("stall", "drop", "error_event") and output_tokens >= 1:
                    return await self._break_stream(request, response, fault, event)
                if i and gap:
                    await asyncio.sleep(gap)
                await event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": delta_type, field_name: token},
                    },
                )
                output_tokens += 1
            await event("content_block_stop", {"type": "content_block_stop", "index": index})
            if stop_reason == "max_tokens":
                break
        if fault in ("stall", "drop", "error_event"):  # a reply too short to break inside
            return await self._break_stream(request, response, fault, event)
        await event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
        )
        await event("message_stop", {"type": "message_stop"})
        await response.write_eof()
        return response

    async def _break_stream(
        self,
        request: web.Request,
        response: web.StreamResponse,
        fault: str,
        event: Callable[[str, dict[str, Any]], Awaitable[None]],
    ) -> web.StreamResponse:
        if fault == "stall":
            await self.sleep_or_stop(3600)
        elif fault == "error_event":
            await event("error", self.error_body(529))
            await response.write_eof()
        elif fault == "drop" and request.transport is not None:
            request.transport.abort()
        return response

    # Command line ---------------------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--api-key", default=None)
        parser.add_argument("--latency", type=float, default=0.0)
        parser.add_argument("--ttft", type=float, default=0.0)
        parser.add_argument("--tokens-per-second", type=float, default=0.0)
        parser.add_argument("--reply", default="OK.", help="text of every reply")

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> AnthropicStandIn:
        return cls(
            port=args.port,
            api_key=args.api_key,
            latency=args.latency,
            ttft=args.ttft,
            tokens_per_second=args.tokens_per_second,
            default_reply=args.reply,
        )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        AnthropicStandIn.main()
