"""The garbage collector's settings for the worker's processes (the worker, the archive's).

CPython collects its youngest generation every 700 net new container objects. A batch of a
few hundred to 2 000 records keeps more than that alive at once (records, payments, states,
alerts), so each batch set off collections, their survivors (the batch still being decided)
were promoted, and the promoted batches, freed by reference counting soon after, made the
older generations look busy: a worker draining a backlog with the default rules spent some
1.8 s of each 15 in the collector, 34 full collections of up to 85 ms among them. Waiting for
``YOUNG_THRESHOLD`` net new objects, a batch comes and goes between two collections: three
young and one full collection in the same drain (70 ms in all), capacity up by about a tenth
(``docs/performance.md``). Cyclic garbage waits at most that many allocations longer.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000


def tune() -> None:
    """The collector's thresholds for a process that decides or archives in batches."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
