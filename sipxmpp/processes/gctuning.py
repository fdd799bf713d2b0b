"""
Garbage-collector and heap settings for a gateway process (main or SIP
worker).
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable

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

# glibc keeps the free space inside its heap resident: the free chunks a
# call's messages leave between longer-lived ones grew the soak's RSS by
# about 1 KB per call with live memory flat (issue 16). malloc_trim(0)
# hands their whole pages back to the kernel. Every 12th young collection
# (60 s): its cost is paid once a minute, not per call.
TRIM_EVERY = 12


def _findMallocTrim() -> Callable[[], object] | None:
    """
    glibc's C{malloc_trim(0)} as a callable, or L{None} where the C library
    has none (musl, macOS, the BSDs): then the heap is left to the
    allocator.
    """
    try:
        function = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return lambda: function(0)


mallocTrim = _findMallocTrim()


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
    L{start} and L{stop}, and C{trim} (by default L{mallocTrim}) after every
    C{trimEvery}-th collection.
    """

    def __init__(self, clock: IReactorTime, interval: float = YOUNG_INTERVAL,
                 trim: Callable[[], object] | None = mallocTrim,
                 trimEvery: int = TRIM_EVERY) -> None:
        self.interval = interval
        self._trim = trim
        self._trimEvery = trimEvery
        self._ticks = 0
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock

    def _tick(self) -> None:
        collectYoung()
        self._ticks += 1
        if self._trim is not None and self._ticks % self._trimEvery == 0:
            self._trim()

    def start(self) -> None:
        if not self._loop.running:
            self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
