"""Notices when this process stopped running for a while, so it writes no stale state.

A worker frozen past its group session (SIGSTOP, a paused VM, a stuck event loop) has lost
its partitions to another worker by the time it runs again, but it does not know yet: the
heartbeat that tells it comes a moment later, and meanwhile it would finish the batch it
was deciding and write that batch's state to the changelogs after its successor's writes.
A restore would then bring back the stale value. So after a pause, no batch writes state
until the group coordinator has confirmed that this worker still holds its generation
(``app.worker.transport.Consumer.still_a_member``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# A tick every half second: a gap of this much means the process did not run. Well below
# the group session (6 s), above the longest pause the event loop takes by itself.
PAUSE_S = 2.0

log = logging.getLogger(__name__)


@dataclass
class Liveness:
    clock: Callable[[], float] = time.monotonic
    pause_s: float = PAUSE_S
    last_tick: float = field(default=0.0)
    # A pause was seen and no membership check has cleared it since.
    suspect: bool = False

    def __post_init__(self) -> None:
        self.last_tick = self.clock()

    def tick(self) -> None:
        now = self.clock()
        if now - self.last_tick > self.pause_s and not self.suspect:
            self.suspect = True
            log.warning(
                "this process did not run for %.1f s: state is written again once the group"
                " confirms this worker still holds its partitions",
                now - self.last_tick,
            )
        self.last_tick = now

    def paused(self) -> bool:
        """Whether the process paused since the last confirmation. Ticks itself too: the
        code that runs first after a pause may run before the timer does."""
        self.tick()
        return self.suspect

    def confirmed(self) -> None:
        """The group confirmed the worker's generation after the pause."""
        self.suspect = False


liveness = Liveness()
