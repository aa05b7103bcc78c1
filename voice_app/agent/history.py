"""Pure helpers on an Anthropic-format message list, keeping it valid for the next request.

The API wants user and assistant turns to alternate and every `tool_use` to be answered by a
`tool_result` in the next user message. Barge-ins and failures can stop a turn anywhere, so these
helpers close what was left open.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from voice_app.agent.toolbox import ToolResult

Message = dict[str, Any]

NOT_RUN = ToolResult("Not run: the turn was interrupted before this tool ran.", is_error=True)


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def tool_uses(message: Message) -> list[dict[str, Any]]:
    if message.get("role") != "assistant":
        return []
    return [b for b in message["content"] if b.get("type") == "tool_use"]


def message_text(message: Message) -> str:
    return "".join(b["text"] for b in message["content"] if b.get("type") == "text")


def tool_result_block(call_id: str, result: ToolResult) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": call_id,
        "content": [text_block(result.text or "(no output)")],
    }
    if result.is_error:
        block["is_error"] = True
    return block


def append(history: list[Message], role: str, blocks: list[dict[str, Any]]) -> Message:
    """Add blocks as a `role` turn, merging into the last message when it has the same role."""
    if history and history[-1]["role"] == role:
        history[-1]["content"] = history[-1]["content"] + blocks
        return history[-1]
    message = {"role": role, "content": list(blocks)}
    history.append(message)
    return message


def close_tool_uses(history: list[Message], done: Mapping[str, ToolResult]) -> Message | None:
    """Answer a trailing assistant `tool_use` turn: with the results that finished, else NOT_RUN."""
    if not history or not tool_uses(history[-1]):
        return None
    blocks = [
        tool_result_block(c["id"], done.get(c["id"], NOT_RUN)) for c in tool_uses(history[-1])
    ]
    return append(history, "user", blocks)


def replace_text(history: list[Message], message: Message, text: str) -> None:
    """Make `message`'s spoken text `text` (after a barge-in); drop it if nothing is left."""
    blocks = message["content"]
    first = next((i for i, b in enumerate(blocks) if b.get("type") == "text"), len(blocks))
    kept = [b for b in blocks if b.get("type") != "text"]
    message["content"] = kept[:first] + ([text_block(text)] if text else []) + kept[first:]
    if message["content"]:
        return
    index = next(i for i, m in enumerate(history) if m is message)
    del history[index]
    # The neighbours may now share a role: fold the later one into the earlier.
    if 0 < index < len(history) and history[index - 1]["role"] == history[index]["role"]:
        later = history.pop(index)
        history[index - 1]["content"] = history[index - 1]["content"] + later["content"]


def is_consistent(history: list[Message]) -> bool:
    """Alternating roles, starting with the user, every tool_use answered by the next turn."""
    for i, message in enumerate(history):
        if message["role"] != ("user" if i % 2 == 0 else "assistant") or not message["content"]:
            return False
        wanted = {c["id"] for c in tool_uses(message)}
        if wanted:
            if i + 1 >= len(history):
                return False
            answered = {
                b["tool_use_id"] for b in history[i + 1]["content"] if b["type"] == "tool_result"
            }
            if not wanted <= answered:
                return False
    return True


def split_heard(heard: str, pieces: list[str]) -> list[str]:
    """Share what the caller heard (a prefix of the whole reply) out over the reply's pieces."""
    rest = " ".join(heard.split())
    shares = []
    for piece in pieces:
        whole = " ".join(piece.split())
        if rest.startswith(whole):
            shares.append(piece)
            rest = rest[len(whole) :].lstrip()
        else:
            shares.append(rest)
            rest = ""
    return shares
