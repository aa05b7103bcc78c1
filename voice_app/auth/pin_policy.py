"""PIN entry rules as pure functions: normalising spoken or keyed digits, and the lockout policy."""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_TRIES_PER_CALL = 3
LOCK_AFTER_FAILURES = 5
FAILURE_WINDOW_SECONDS = 15 * 60
LOCK_SECONDS = 15 * 60

_WORDS = {
    "zero": "0",
    "oh": "0",
    "o": "0",
    "nought": "0",
    "one": "1",
    "won": "1",
    "two": "2",
    "to": "2",
    "too": "2",
    "three": "3",
    "tree": "3",
    "four": "4",
    "for": "4",
    "fore": "4",
    "five": "5",
    "six": "6",
    "sex": "6",
    "seven": "7",
    "eight": "8",
    "ate": "8",
    "nine": "9",
    "niner": "9",
}
_MULTIPLIERS = {"double": 2, "triple": 3}
_TOKEN = re.compile(r"[a-z]+|[0-9]")


def normalise_digits(heard: str) -> str:
    """Digits from keypad input or speech: "1 2 3 4.", "one two three four", "double five 7".

    Anything that is not a digit word is ignored, so "my pin is 1234" gives "1234".
    """
    digits: list[str] = []
    repeat = 1
    for token in _TOKEN.findall(heard.lower()):
        if token in _MULTIPLIERS:
            repeat = _MULTIPLIERS[token]
            continue
        digit = token if token.isdigit() else _WORDS.get(token)
        if digit is None:
            repeat = 1
            continue
        digits.append(digit * repeat)
        repeat = 1
    return "".join(digits)


def normalise_account_number(heard: str) -> str:
    return normalise_digits(heard)


@dataclass(frozen=True, slots=True)
class LockVerdict:
    locked: bool
    failures: int
    retry_after_seconds: int = 0


def verdict_after_failure(failures_in_window: int) -> LockVerdict:
    """The policy: after LOCK_AFTER_FAILURES failures within the window, lock for LOCK_SECONDS."""
    if failures_in_window >= LOCK_AFTER_FAILURES:
        return LockVerdict(True, failures_in_window, LOCK_SECONDS)
    return LockVerdict(False, failures_in_window)
