"""The server's deadlines: many sessions on one timer per second."""

from __future__ import annotations

import asyncio
import math

from pop3d.server.deadlines import Deadlines


class Item:
    def __init__(self, loop: asyncio.AbstractEventLoop, deadlines: Deadlines) -> None:
        self.loop, self.deadlines = loop, deadlines
        self.expired_at: list[float] = []
        self.again: float | None = None  # file again this far ahead when first expired

    def expire(self) -> None:
        self.expired_at.append(self.loop.time())
        if self.again is not None:
            again, self.again = self.again, None
            self.deadlines.add(self, self.loop.time() + again)


def test_items_expire_within_a_second_of_their_deadline_and_discarded_ones_never() -> None:
    async def go() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop)
        due = loop.time() + 0.2
        items = [Item(loop, deadlines) for _ in range(3)]
        keys = [deadlines.add(item, due) for item in items]
        assert keys[0] == keys[1] == keys[2] == math.ceil(due)  # one timer for all three
        deadlines.discard(items[2], keys[2])
        items[1].again = 0.5
        await asyncio.sleep(math.ceil(due) - loop.time() + 1.6)
        assert len(items[0].expired_at) == 1
        assert due <= items[0].expired_at[0] < due + 1.1
        assert len(items[1].expired_at) == 2  # filed again from inside expire()
        assert items[2].expired_at == []

    asyncio.run(go())
