"""Many sessions' deadlines on few event-loop timers.

A session files itself under the whole second its deadline falls in; that second's one timer
calls `expire()` on everything filed there, and each session then ends or files itself again
where its deadline has moved to. Activity only records the time, so a busy session costs no
timer work, and an idle one costs a set entry (tens of bytes) where a timer handle of its own
costs about 600. Deadlines are kept to within a second.
"""

from __future__ import annotations

import asyncio
import math
from typing import Protocol


class Expiring(Protocol):
    def expire(self) -> None: ...


class Deadlines:
    __slots__ = ("_loop", "_seconds")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._seconds: dict[int, set[Expiring]] = {}

    def add(self, item: Expiring, when: float) -> int:
        """File `item` to expire at `when` (loop time) or up to a second after; the key to
        `discard` it with."""
        second = math.ceil(when)
        filed = self._seconds.get(second)
        if filed is None:
            filed = self._seconds[second] = set()
            self._loop.call_at(second, self._fire, second)
        filed.add(item)
        return second

    def discard(self, item: Expiring, second: int) -> None:
        filed = self._seconds.get(second)
        if filed is not None:
            filed.discard(item)

    def _fire(self, second: int) -> None:
        # Popped first: what `expire` files again, or discards, touches other sets.
        for item in self._seconds.pop(second, ()):
            item.expire()
