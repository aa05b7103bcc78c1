"""Changing a PIN on the keypad, during a call, without the model ever seeing a digit. Pure.

The `user_request_pin_change` tool only flags the call; once the assistant's reply has played,
the engine runs this flow: current PIN, new PIN, the new PIN again. Keys go here and nowhere
else (not to the agent, the transcript or the logs). Speech is refused: a PIN said aloud would
pass through the recogniser and the transcript.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MAX_SPOKEN = 2  # tries to say a PIN instead of typing it, before giving up
MAX_MISMATCH = 2

ASK_CURRENT = "Please type your current PIN on the keypad, then press pound."
ASK_NEW = "Now type your new PIN, 4 to 8 digits, then press pound."
ASK_AGAIN = "Type the new PIN once more to confirm, then press pound."
MISMATCH = "Those didn't match. " + ASK_NEW
USE_KEYPAD = "For your safety, please use the keypad, not your voice. "
GAVE_UP = "Let's leave your PIN as it is for now. What else can I do for you?"


@dataclass(frozen=True, slots=True)
class Say:
    """Say this and keep collecting keys."""

    text: str


@dataclass(frozen=True, slots=True)
class Submit:
    current: str
    new: str


@dataclass(frozen=True, slots=True)
class Stop:
    """The flow is over; say this and go back to the assistant."""

    text: str


Action = Say | Submit | Stop
Step = Literal["current", "new", "confirm"]


class PinChangeFlow:
    def __init__(self) -> None:
        self.step: Step = "current"
        self._current = ""
        self._new = ""
        self._spoken = 0
        self._mismatches = 0

    def start(self) -> Say:
        return Say(ASK_CURRENT)

    def keys(self, digits: str) -> Action:
        digits = digits.strip("#*")
        if self.step == "current":
            self._current, self.step = digits, "new"
            return Say(ASK_NEW)
        if self.step == "new":
            self._new, self.step = digits, "confirm"
            return Say(ASK_AGAIN)
        if digits == self._new:
            return Submit(self._current, self._new)
        self._mismatches += 1
        if self._mismatches >= MAX_MISMATCH:
            return Stop(GAVE_UP)
        self.step = "new"
        return Say(MISMATCH)

    def speech(self) -> Action:
        self._spoken += 1
        if self._spoken > MAX_SPOKEN:
            return Stop(GAVE_UP)
        prompt = {"current": ASK_CURRENT, "new": ASK_NEW, "confirm": ASK_AGAIN}[self.step]
        return Say(USE_KEYPAD + prompt)
