"""
Garbage-collector settings for a gateway process (main or SIP worker).
"""

from __future__ import annotations

import gc
import sys

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

# Under load tens of thousands of SIP transactions live for 64*T1 each, and
# CPython's default thresholds run a full collection over all of them every
# few thousand allocations: measured as about half the gateway's CPU per
# call. The code keeps reference cycles rare, so collecting less often costs
# little memory.
GC_THRESHOLDS = (50_000, 50, 100)

# The young generation's threshold counts objects made minus objects freed,
# so in a steady state only what stays alive crosses it -- mostly garbage
# cycles: Twisted's ThreadPool makes one per store job (a function that
# holds itself). At 50,000 they piled up for an hour or more and the RSS
# rose all the way (issue 16, bench/soak.py); a timer collects them.
YOUNG_INTERVAL = 5.0

# CPython collects the oldest generation once the objects moved into it
# since its last collection reach a quarter of what that collection left;
# the timer's explicit collections never do, so the garbage cycles of
# whatever lived long -- an XMPP connection that dropped -- stayed for
# good: about 150 objects per session per Prosody restart (issue 16). So
# the timer applies that rule after each middle collection, to the net
# growth since start-up of the blocks Python's allocator holds: reading
# that takes about 0.6 ms with 5 million blocks, where counting the oldest
# generation took 80-90 ms with 10,000 bindings. Below OLDEST_MINIMUM
# blocks of growth (a few MB) no full collection is worth its pause.
OLDEST_GROWTH = 0.25
OLDEST_MINIMUM = 20_000


def tuneGarbageCollector() -> None:
    """
    Move what start-up created out of the collector's sight (C{gc.freeze})
    and collect the young generation less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def collectYoung() -> int:
    """
    Collect the young generation, and the middle one as often as the
    thresholds would (every C{GC_THRESHOLDS[1]} young collections).

    @return: the oldest generation collected, 0 or 1.
    """
    _, collectedYoung, _ = gc.get_count()
    generation = 1 if collectedYoung >= GC_THRESHOLDS[1] else 0
    gc.collect(generation)
    return generation


class YoungCollector:
    """
    Runs L{collectYoung} every C{interval} seconds of C{clock} between
    L{start} and L{stop}; after a middle collection, collects the oldest
    generation too once the allocator's blocks have grown by
    C{OLDEST_GROWTH} (and at least C{OLDEST_MINIMUM}) since its last
    collection.
    """

    def __init__(self, clock: IReactorTime, interval: float = YOUNG_INTERVAL) -> None:
        self.interval = interval
        # What start-up holds (most of it frozen) is not the oldest
        # generation's: growth is counted from here.
        self._startBlocks = sys.getallocatedblocks()
        self._oldestLeft = 0
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock

    def _grown(self) -> int:
        return max(0, sys.getallocatedblocks() - self._startBlocks)

    def _tick(self) -> None:
        if collectYoung() == 1:
            growth = self._grown() - self._oldestLeft
            if growth > max(OLDEST_GROWTH * self._oldestLeft, OLDEST_MINIMUM):
                gc.collect(2)
                self._oldestLeft = self._grown()

    def start(self) -> None:
        if not self._loop.running:
            self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
