"""
Tests for L{sipxmpp.processes.gctuning}.
"""

from __future__ import annotations

import gc

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from sipxmpp.processes.gctuning import YOUNG_INTERVAL, YoungCollector, tuneGarbageCollector
from sipxmpp.store.runners import threadPoolRunner

JOB = "ThreadPool.callInThreadWithCallback.<locals>.inContext"


def finishedJobs() -> int:
    """
    How many of Twisted's per-job functions are still in memory.
    """
    return sum(1 for o in gc.get_objects()
               if type(o).__name__ == "function" and o.__qualname__ == JOB)


class YoungCollectorTests(TestCase):
    """
    L{YoungCollector} frees the garbage cycles the gateway's thresholds
    leave alone.
    """

    def setUp(self) -> None:
        self.addCleanup(gc.set_threshold, *gc.get_threshold())
        self.addCleanup(gc.unfreeze)
        tuneGarbageCollector()

    @inlineCallbacks
    def test_storeJobsFreed(self) -> object:
        """
        Each store job run in a thread pool leaves a reference cycle behind;
        with the gateway's thresholds they stay until the young collection
        on the timer.
        """
        pool = ThreadPool(1, 1, name="test-gctuning")
        pool.start()
        self.addCleanup(pool.stop)
        run = threadPoolRunner(reactor, pool)  # type: ignore[arg-type]
        for _ in range(20):
            yield run(lambda: None)
        self.assertGreaterEqual(finishedJobs(), 20)
        clock = Clock()
        collector = YoungCollector(clock)
        collector.start()
        self.addCleanup(collector.stop)
        clock.advance(YOUNG_INTERVAL)
        # The pool's thread holds its last job until it gets the next.
        self.assertLessEqual(finishedJobs(), 1)

    def test_middleGeneration(self) -> None:
        """
        Every C{GC_THRESHOLDS[1]}-th collection also collects the middle
        generation, whose garbage is then freed too.
        """
        clock = Clock()
        collector = YoungCollector(clock)
        collector.start()
        self.addCleanup(collector.stop)
        cycle: list[object] = []
        cycle.append(cycle)
        clock.advance(YOUNG_INTERVAL)  # survives: still referenced
        survivor = id(cycle)
        del cycle
        self.assertIn(survivor, {id(o) for o in gc.get_objects(generation=1)})
        for _ in range(gc.get_threshold()[1] + 1):
            clock.advance(YOUNG_INTERVAL)
        self.assertNotIn(survivor, {id(o) for o in gc.get_objects()})

    def test_stop(self) -> None:
        """
        After L{YoungCollector.stop} nothing is scheduled.
        """
        clock = Clock()
        collector = YoungCollector(clock)
        collector.start()
        collector.stop()
        self.assertEqual(clock.getDelayedCalls(), [])
