"""
Tests for L{sipxmpp.processes.gctuning}.
"""

from __future__ import annotations

import gc
import os

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from sipxmpp.processes.gctuning import (
    TRIM_EVERY,
    YOUNG_INTERVAL,
    YoungCollector,
    mallocTrim,
    tuneGarbageCollector,
)
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

    def test_trimEvery(self) -> None:
        """
        The heap is trimmed after every C{TRIM_EVERY}-th young collection,
        not after the others.
        """
        clock = Clock()
        trims: list[float] = []
        collector = YoungCollector(clock, trim=lambda: trims.append(clock.seconds()))
        collector.start()
        self.addCleanup(collector.stop)
        for _ in range(2 * TRIM_EVERY + 1):
            clock.advance(YOUNG_INTERVAL)
        self.assertEqual(trims, [TRIM_EVERY * YOUNG_INTERVAL, 2 * TRIM_EVERY * YOUNG_INTERVAL])

    def test_noTrim(self) -> None:
        """
        Without a trim function (a C library without C{malloc_trim}) the
        collector still collects.
        """
        clock = Clock()
        collector = YoungCollector(clock, trim=None)
        collector.start()
        self.addCleanup(collector.stop)
        cycle: list[object] = []
        cycle.append(cycle)
        garbage = id(cycle)
        del cycle
        for _ in range(TRIM_EVERY):
            clock.advance(YOUNG_INTERVAL)
        self.assertNotIn(garbage, {id(o) for o in gc.get_objects()})


class MallocTrimTests(TestCase):
    """
    L{mallocTrim} is glibc's C{malloc_trim(0)}.
    """

    def test_found(self) -> None:
        """
        On Linux with glibc it is found; elsewhere it may be L{None}.
        """
        try:
            glibc = os.confstr("CS_GNU_LIBC_VERSION")
        except (AttributeError, ValueError, OSError):
            glibc = None
        if not glibc:
            raise self.skipTest("not glibc")
        self.assertIsNotNone(mallocTrim)

    def test_freesPages(self) -> None:
        """
        Free chunks between live ones, each several pages long, are given
        back: C{malloc_trim} says it released memory.
        """
        if mallocTrim is None:
            raise self.skipTest("no malloc_trim in this C library")
        # 32 KB: from the heap, below glibc's mmap threshold (128 KB).
        blocks = [bytes(32 * 1024) for _ in range(512)]
        kept = blocks[::2]
        del blocks
        self.assertEqual(mallocTrim(), 1)
        self.assertEqual(len(kept), 256)
