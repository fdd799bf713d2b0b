"""
Tests for L{sipxmpp.processes.gctuning}.
"""

from __future__ import annotations

import gc
import weakref

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from sipxmpp.processes.gctuning import (
    GC_THRESHOLDS,
    OLDEST_MINIMUM,
    YOUNG_INTERVAL,
    YoungCollector,
    tuneGarbageCollector,
)
from sipxmpp.store.runners import threadPoolRunner


class Node:
    """
    An object that can be in a reference cycle and weakly referenced.
    """

    me: Node


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

    def test_oldestGeneration(self) -> None:
        """
        Garbage cycles in the oldest generation (what lived long, such as a
        dropped XMPP connection) are freed once enough newer objects have
        moved there since its last collection; before, they stay.
        """
        clock = Clock()
        collector = YoungCollector(clock)
        collector.start()
        self.addCleanup(collector.stop)

        def middleCollection() -> None:
            for _ in range(GC_THRESHOLDS[1]):
                clock.advance(YOUNG_INTERVAL)

        def cycles(n: int) -> list[Node]:
            made = [Node() for _ in range(n)]
            for node in made:
                node.me = node
            return made

        # Each node is two allocator blocks or more (itself, its dict).
        n = OLDEST_MINIMUM
        old = cycles(n)
        refs = [weakref.ref(node) for node in old]
        middleCollection()  # moves them, alive, to the oldest generation
        middleCollection()
        del old
        clock.advance(YOUNG_INTERVAL)
        middleCollection()
        self.assertEqual(sum(1 for r in refs if r() is not None), n)
        newer = cycles(n)
        middleCollection()  # their replacements moved there: collected
        self.assertEqual(sum(1 for r in refs if r() is not None), 0)
        self.assertEqual(len(newer), n)

    def test_oldestGenerationSmallGrowth(self) -> None:
        """
        A growth under C{OLDEST_MINIMUM} blocks is not worth a full
        collection's pause: its garbage cycles wait for more.
        """
        clock = Clock()
        collector = YoungCollector(clock)
        collector.start()
        self.addCleanup(collector.stop)
        old = [Node() for _ in range(100)]
        for node in old:
            node.me = node
        refs = [weakref.ref(node) for node in old]
        for _ in range(2 * GC_THRESHOLDS[1]):  # alive to the oldest generation
            clock.advance(YOUNG_INTERVAL)
        del old, node
        for _ in range(2 * GC_THRESHOLDS[1]):
            clock.advance(YOUNG_INTERVAL)
        self.assertEqual(sum(1 for r in refs if r() is not None), 100)
        gc.collect()
        self.assertEqual(sum(1 for r in refs if r() is not None), 0)

    def test_stop(self) -> None:
        """
        After L{YoungCollector.stop} nothing is scheduled.
        """
        clock = Clock()
        collector = YoungCollector(clock)
        collector.start()
        collector.stop()
        self.assertEqual(clock.getDelayedCalls(), [])
