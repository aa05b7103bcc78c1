"""Every Redis key and channel name, in one place, so nothing else spells them."""

from __future__ import annotations

PREFIX = "va:"


def session(token: str) -> str:
    """A signed-in browser session or a call session (hash), with TTL."""
    return f"{PREFIX}session:{token}"


def call_session(token: str) -> str:
    """The opaque token a Media Stream carries as a <Parameter>, bound to one call."""
    return f"{PREFIX}callsession:{token}"


def call_state(call_sid: str) -> str:
    """Live state of one call (hash): phase, transfer status, stream token, process id."""
    return f"{PREFIX}call:{call_sid}"


def call_tries(call_sid: str) -> str:
    """PIN tries made during one call (counter with TTL)."""
    return f"{PREFIX}pin-tries:{call_sid}"


def pin_failures(account_number: str) -> str:
    """Failures for one account within the policy window (sorted set of timestamps)."""
    return f"{PREFIX}pin-fail:{account_number}"


def pin_lock(account_number: str) -> str:
    return f"{PREFIX}pin-lock:{account_number}"


def sign_in_attempts(client: str, window: int) -> str:
    """Sign-in attempts (PIN or console password) from one client address in one window."""
    return f"{PREFIX}sign-in:{client}:{window}"


def pending_account(call_sid: str) -> str:
    """The account number a PSTN caller is signing in to, between Gather round trips."""
    return f"{PREFIX}pending-account:{call_sid}"


def console_context(token: str) -> str:
    """The short-lived X-Call-Context token → tenant and call (hash)."""
    return f"{PREFIX}console-ctx:{token}"


def transcript_channel(call_sid: str) -> str:
    """Pub/sub: live transcript lines of one call, for the caller page."""
    return f"{PREFIX}chan:transcript:{call_sid}"


def console_channel(tenant_id: str) -> str:
    """Pub/sub: caller cards pushed to a tenant's agent consoles."""
    return f"{PREFIX}chan:console:{tenant_id}"


def call_commands_channel(call_sid: str) -> str:
    """Pub/sub: commands for the process that holds a call's stream (e.g. hang up)."""
    return f"{PREFIX}chan:call:{call_sid}"
