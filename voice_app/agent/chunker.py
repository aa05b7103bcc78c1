"""Turn a streaming reply into speakable pieces as early as they are complete.

The TTS should start on the first sentence (or a long first clause) while the model is still
writing the rest, but must not stop at "Dr.", "e.g.", "3.5", "10:30" or "...". `speakable`
strips the markdown a model writes out of habit and a voice should not read.
"""

from __future__ import annotations

import re

# Abbreviations that never end a sentence (compared without their final dot).
_NEVER_ENDS = frozenset(
    {
        "mr", "mrs", "ms", "dr", "prof", "st", "sr", "jr", "vs", "e.g", "i.e", "cf", "approx",
        "dept", "est", "fig", "mt", "tel",
    }
)  # fmt: skip
_CLOSERS = "\"'”’)]*_`"  # may follow a full stop: quotes, brackets, markdown emphasis
_CLOSE = f"[{re.escape(_CLOSERS)}]*"

# Candidate boundaries, left to right; each match ends where the chunk would end.
_BOUNDARY = re.compile(
    r"(?P<newline>\n)"
    rf"|(?P<stop>[.!?]+){_CLOSE}(?=\s)"
    rf"|(?P<clause>[,;:]){_CLOSE}(?=\s)"
    r"|(?P<dash>\s[-–]\s|\s?—\s?)"
)
_LIST_MARKER = re.compile(r"(?:\d+|[A-Za-z])")


class SentenceChunker:
    """Feed text deltas; get back speakable chunks, each as soon as it is complete.

    A chunk ends at a sentence end, at a line break, or at a comma, semicolon, colon or dash
    once the clause is `min_clause_chars` long. Text without any of those is cut at a space
    after `max_chars`, so a run-on reply still starts speaking.
    """

    def __init__(self, min_clause_chars: int = 40, max_chars: int = 300) -> None:
        self.min_clause_chars = min_clause_chars
        self.max_chars = max_chars
        self._buf = ""
        self._line_start = True  # the buffer starts a line: bullets and headings can appear

    def feed(self, delta: str) -> list[str]:
        self._buf += delta
        chunks: list[str] = []
        while (cut := self._next_cut()) is not None:
            raw, self._buf = self._buf[:cut], self._buf[cut:]
            if text := speakable(raw, line_start=self._line_start):
                chunks.append(text)
            self._line_start = raw.endswith("\n")
        return chunks

    def flush(self) -> str:
        """Whatever is left, when the reply is complete (may be "")."""
        raw, self._buf = self._buf, ""
        line_start, self._line_start = self._line_start, True
        return speakable(raw, line_start=line_start)

    def _next_cut(self) -> int | None:
        buf = self._buf
        for m in _BOUNDARY.finditer(buf):
            if m.end() > self.max_chars:
                break
            verdict = self._judge(m, buf)
            if verdict is None:
                break  # undecidable until more text arrives
            if verdict:
                return m.end()
        if len(buf) > self.max_chars:
            space = buf.rfind(" ", 0, self.max_chars)
            return space + 1 if space > 0 else self.max_chars
        return None

    def _judge(self, m: re.Match[str], buf: str) -> bool | None:
        """Whether the match ends a chunk; None if that depends on text not yet received."""
        if m["newline"]:
            return True
        if m["clause"] or m["dash"]:
            return len(buf[: m.start()].strip()) >= self.min_clause_chars
        stop = m["stop"]
        if stop.endswith(".."):
            return False  # an ellipsis is a pause, not an end
        if "." not in stop:
            return True  # "!" and "?"
        line = buf[: m.start()].rsplit("\n", 1)[-1]
        token = line.rsplit(None, 1)[-1].lstrip(_CLOSERS + "(") if line.strip() else ""
        if _LIST_MARKER.fullmatch(line.strip()):
            return False  # "1. Buy milk": a list number at the start of a line
        if token.lower() in _NEVER_ENDS:
            return False
        if token.isupper() and (len(token) == 1 or "." in token):
            return False  # "J. Smith", "U.S. Army": a name goes on more often than not
        if (rest := buf[m.end() :].lstrip()) == "":
            return None  # the next word decides: "at 9 a.m. Then" vs "at 9 a.m. tomorrow"
        if "." in token or len(token) == 1:  # "a.m.", "p.m.", "item 3."
            return rest[0].isupper()
        return not rest[0].islower()  # "approx. two": lower case goes on


_FENCE = re.compile(r"```[^\n`]*")
_IMAGE_OR_LINK = re.compile(r"!?\[([^\]\n]*)\]\([^)\n]*\)")
_RULE = re.compile(r"^[^\S\n]*(?:[-*_][^\S\n]*){3,}$", re.MULTILINE)
# Bold and italic markers; a lone "*" between spaces (3 * 4) and snake_case stay.
_EMPHASIS = re.compile(
    r"\*\*|__|(?<![\w*])\*(?=\S)|(?<=\S)\*(?![\w*])|(?<!\w)_(?=\S)|(?<=\S)_(?!\w)"
)
# Headings, quotes and bullets at the start of a line, nested ones too ("> - item").
_LINE_MARKUP = re.compile(r"^(?:[^\S\n]*(?:#{1,6}[^\S\n]+|>|[-*+•][^\S\n]+))+", re.MULTILINE)
_SPACES = re.compile(r"\s+")


def speakable(text: str, *, line_start: bool = True) -> str:
    """Plain words for the TTS: no markdown emphasis, headings, bullets, code ticks or links.

    `line_start=False` says the text continues a line, so a leading "-" or "#" is not markup.
    """
    text = _FENCE.sub(" ", text).replace("`", "").replace("|", " ")
    text = _IMAGE_OR_LINK.sub(r"\1", text)
    text = _EMPHASIS.sub("", text)
    head, newline, lines = ("", "", text) if line_start else text.partition("\n")
    text = head + newline + _LINE_MARKUP.sub("", _RULE.sub(" ", lines))
    return _SPACES.sub(" ", text).strip()
