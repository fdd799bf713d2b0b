"""
How often CPython's cyclic garbage collector ran and how long it stalled
the reactor, as metrics.

Under load tens of thousands of SIP transactions are alive, and a
collection of the older generations walks every tracked object they hold
while nothing else runs: an operator sees it here before phones see
retransmissions.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

from sipxmpp.ops.metrics import Metrics


class CollectorTimer:
    """
    Times each collection through C{gc.callbacks}; L{install} and
    L{uninstall} add and remove the callback.

    @ivar longest: the longest collection so far, seconds.
    """

    def __init__(self, metrics: Metrics, clock: Callable[[], float] = time.perf_counter) -> None:
        self._metrics = metrics
        self._clock = clock
        self._started = 0.0
        self.longest = 0.0
        metrics.describe("sipxmpp_gc_collections_total",
                         "Collections of the cyclic garbage collector, by generation.")
        metrics.describe("sipxmpp_gc_pause_seconds_total",
                         "Time spent in those collections (the reactor waits), by generation.")
        metrics.gauge("sipxmpp_gc_longest_pause_seconds", lambda: self.longest,
                      "The longest single collection since start.")

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = self._clock()
            return
        pause = self._clock() - self._started
        generation = str(info.get("generation", "?"))
        self._metrics.increment("sipxmpp_gc_collections_total", generation=generation)
        self._metrics.increment("sipxmpp_gc_pause_seconds_total", pause, generation=generation)
        if pause > self.longest:
            self.longest = pause

    def install(self) -> None:
        """
        Start timing collections.
        """
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def uninstall(self) -> None:
        """
        Stop timing collections.
        """
        while self in gc.callbacks:
            gc.callbacks.remove(self)
