"""
Garbage-collector settings for a gateway process (main or SIP worker).
"""

from __future__ import annotations

import gc

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


def tuneGarbageCollector() -> None:
    """
    Move what start-up created out of the collector's sight (C{gc.freeze})
    and collect the young generation less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def collectYoung() -> None:
    """
    Collect the young generation, and the middle one as often as the
    thresholds would (every C{GC_THRESHOLDS[1]} young collections).
    """
    _, collectedYoung, _ = gc.get_count()
    gc.collect(1 if collectedYoung >= GC_THRESHOLDS[1] else 0)


class YoungCollector:
    """
    Runs L{collectYoung} every C{interval} seconds of C{clock} between
    L{start} and L{stop}.
    """

    def __init__(self, clock: IReactorTime, interval: float = YOUNG_INTERVAL) -> None:
        self.interval = interval
        self._loop = LoopingCall(collectYoung)
        self._loop.clock = clock

    def start(self) -> None:
        if not self._loop.running:
            self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
