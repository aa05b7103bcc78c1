"""How many calls one process carries at once (MAX_LIVE_CALLS).

Past what its core can carry, every live call's audio breaks up together (bench/concurrency:
gaps from ~30 calls on one core of the benchmark machine). A limit keeps the calls already
talking clean: one call too many hears a busy line instead. Slots are counted from a stream's
`start` to its end; a call that is merely reconnecting its stream keeps its place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EXTRA = "admission"


@dataclass
class Admission:
    limit: int  # 0: no limit
    taken: int = 0

    @property
    def full(self) -> bool:
        return 0 < self.limit <= self.taken

    def try_take(self, *, keeps_place: bool = False) -> bool:
        """Take a slot if one is free (or the call already had one: `keeps_place`)."""
        if self.full and not keeps_place:
            return False
        self.taken += 1
        return True

    def release(self) -> None:
        self.taken = max(0, self.taken - 1)


def call_admission(services: Any) -> Admission:
    """The process's admission, made from its settings on first use."""
    admission = services.extras.get(EXTRA)
    if not isinstance(admission, Admission):
        admission = Admission(services.settings.max_live_calls)
        services.extras[EXTRA] = admission
    return admission
