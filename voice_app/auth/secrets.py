"""Slow salted hashes for PINs and passwords (argon2id), and opaque random tokens."""

from __future__ import annotations

import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# Interactive-login parameters: ~20-40 ms per check on one core, 19 MiB (OWASP's argon2id floor).
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)

PIN_PATTERN = re.compile(r"^[0-9]{4,8}$")

# Verified against when the account does not exist, so a wrong account number costs the same time
# as a wrong PIN and the response cannot tell them apart.
_DUMMY_HASH = _hasher.hash("not-a-real-pin")


class WeakPinError(ValueError):
    pass


def check_pin_format(pin: str) -> str:
    if not PIN_PATTERN.fullmatch(pin):
        raise WeakPinError("a PIN is 4 to 8 digits")
    if len(set(pin)) == 1 or pin in "0123456789" or pin in "9876543210":
        raise WeakPinError("that PIN is too easy to guess")
    return pin


def hash_secret(secret: str) -> str:
    return _hasher.hash(secret)


def verify_secret(stored_hash: str | None, secret: str) -> bool:
    """Constant-time verification (argon2 compares digests in constant time)."""
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, secret) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_token(nbytes: int = 24) -> str:
    """An opaque URL-safe token (session ids, stream tokens, console context tokens)."""
    return secrets.token_urlsafe(nbytes)
