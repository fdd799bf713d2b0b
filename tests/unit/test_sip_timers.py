"""
Tests for L{sipxmpp.sip.core.timers.TimerQueue}: timers multiplexed onto one
call of an underlying L{Clock}.
"""

from __future__ import annotations

import gc
import os
import random
import weakref
from collections.abc import Callable
from typing import cast

from twisted.internet.error import AlreadyCalled, AlreadyCancelled
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from sipxmpp.config import loadSettings
from sipxmpp.ops.metrics import Metrics
from sipxmpp.sip.core.timers import TimerQueue
from sipxmpp.sip.shell.service import buildSIP
from sipxmpp.store.addresses import aorOfURI
from sipxmpp.telephony.state import TelephonyStateMachine


def entryCount(queue: TimerQueue) -> int:
    """
    Heap and bucket entries, live or dead: what the queue holds in memory.
    """
    return len(queue._heap) + sum(len(bucket) for bucket in queue._buckets.values())


def runOnePass(clock: Clock, until: float) -> None:
    """
    Set C{clock} to C{until} and run its one due call once, unlike
    L{Clock.advance}, which keeps running calls made meanwhile.
    """
    clock.rightNow = until
    [call] = clock.getDelayedCalls()
    assert call.getTime() <= until
    clock.calls.remove(call)  # type: ignore[arg-type]
    call.called = 1  # type: ignore[attr-defined]
    call.func(*call.args, **call.kw)  # type: ignore[attr-defined]


class Target:
    """
    A callable that can be watched with a weak reference.
    """

    def __init__(self, log: list[str], name: str) -> None:
        self.log = log
        self.name = name

    def __call__(self, *args: object) -> None:
        self.log.append(self.name)


class TimerQueueTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.queue = TimerQueue(self.clock)
        self.ran: list[tuple[object, float]] = []

    def record(self, value: object) -> None:
        self.ran.append((value, self.clock.seconds()))

    def test_interfaces(self) -> None:
        self.assertTrue(verifyObject(IReactorTime, self.queue))
        call = self.queue.callLater(1, self.record, "a")
        self.assertTrue(verifyObject(IDelayedCall, call))

    def test_seconds(self) -> None:
        self.clock.advance(12.5)
        self.assertEqual(self.queue.seconds(), 12.5)

    def test_order(self) -> None:
        """
        Calls run at their time, earliest first, whatever order they were
        made in, in the heap (under a second) or in buckets.
        """
        for delay in (3.0, 0.25, 181.0, 1.5, 0.75, 32.0):
            self.queue.callLater(delay, self.record, delay)
        self.clock.pump([0.25, 0.5, 0.25])
        self.assertEqual(self.ran, [(0.25, 0.25), (0.75, 0.75)])
        self.clock.pump([0.5, 1.5, 29, 149])
        self.assertEqual(
            self.ran,
            [(0.25, 0.25), (0.75, 0.75), (1.5, 1.5), (3.0, 3.0), (32.0, 32.0), (181.0, 181.0)],
        )

    def test_notEarly(self) -> None:
        """
        A call on a whole second, kept in that second's bucket, runs at that
        second and not before.
        """
        self.clock.advance(0.5)
        self.queue.callLater(1.5, self.record, "two")
        self.clock.advance(1.4)
        self.assertEqual(self.ran, [])
        self.clock.advance(0.1)
        self.assertEqual(self.ran, [("two", 2.0)])

    def test_oneLongAdvance(self) -> None:
        """
        An advance past several buckets runs everything due in time order.
        """
        for delay in (3.2, 0.7, 2.5, 1.5, 7.0):
            self.queue.callLater(delay, self.record, delay)
        self.clock.advance(5)
        self.assertEqual([value for value, _ in self.ran], [0.7, 1.5, 2.5, 3.2])
        self.clock.advance(2)
        self.assertEqual(self.ran[-1], (7.0, 7.0))

    def test_sameTimeInOrderMade(self) -> None:
        for name in "abcdef":
            self.queue.callLater(0.5, self.record, name)
        for name in "ghij":
            self.queue.callLater(2, self.record, name)
        self.clock.advance(5)
        self.assertEqual([name for name, _ in self.ran], list("abcdefghij"))

    def test_keywordArguments(self) -> None:
        got: list[tuple[object, ...]] = []
        self.queue.callLater(1, lambda *a, **kw: got.append((a, kw)), 1, 2, x=3)
        self.clock.advance(1)
        self.assertEqual(got, [((1, 2), {"x": 3})])

    def test_cancel(self) -> None:
        """
        A cancelled call does not run; the others do, on time, including
        when the cancelled one was the earliest.
        """
        first = self.queue.callLater(1, self.record, "first")
        self.queue.callLater(2, self.record, "second")
        middle = self.queue.callLater(2, self.record, "middle")
        self.queue.callLater(2, self.record, "third")
        first.cancel()
        middle.cancel()
        self.assertFalse(first.active())
        self.clock.advance(1.9)
        self.assertEqual(self.ran, [])
        self.clock.advance(0.1)
        self.assertEqual(self.ran, [("second", 2.0), ("third", 2.0)])

    def test_cancelFromCallback(self) -> None:
        """
        A callback can cancel a call due in the same pass.
        """
        calls: list[IDelayedCall] = []

        def cancelNext() -> None:
            self.record("canceller")
            calls[0].cancel()

        self.queue.callLater(1, cancelNext)
        calls.append(self.queue.callLater(1, self.record, "victim"))
        self.queue.callLater(1, self.record, "after")
        self.clock.advance(1)
        self.assertEqual([name for name, _ in self.ran], ["canceller", "after"])

    def test_reset(self) -> None:
        """
        C{reset} moves a call to a time from now, later or earlier, in and
        out of the buckets.
        """
        later = self.queue.callLater(0.5, self.record, "later")
        sooner = self.queue.callLater(181, self.record, "sooner")
        self.clock.advance(0.25)
        later.reset(10)
        sooner.reset(0.5)
        self.assertEqual(later.getTime(), 10.25)
        self.assertEqual(sooner.getTime(), 0.75)
        self.clock.advance(0.5)
        self.assertEqual(self.ran, [("sooner", 0.75)])
        self.clock.advance(9.4)
        self.assertEqual(self.ran, [("sooner", 0.75)])
        self.clock.advance(0.1)
        self.assertEqual(self.ran, [("sooner", 0.75), ("later", 10.25)])
        self.clock.advance(200)
        self.assertEqual(len(self.ran), 2)

    def test_resetGoesLastAtItsTime(self) -> None:
        """
        A call moved to a time shared with others runs after those made
        before the move.
        """
        moved = self.queue.callLater(1, self.record, "moved")
        self.queue.callLater(3, self.record, "other")
        moved.reset(3)
        self.queue.callLater(3, self.record, "newer")
        self.clock.advance(3)
        self.assertEqual([name for name, _ in self.ran], ["other", "moved", "newer"])

    def test_delay(self) -> None:
        call = self.queue.callLater(2, self.record, "x")
        self.clock.advance(1)
        call.delay(1.5)
        self.assertEqual(call.getTime(), 3.5)
        self.clock.advance(2.4)
        self.assertEqual(self.ran, [])
        self.clock.advance(0.1)
        self.assertEqual(self.ran, [("x", 3.5)])

    def test_delayEarlier(self) -> None:
        call = self.queue.callLater(100, self.record, "x")
        call.delay(-99.5)
        self.clock.advance(0.5)
        self.assertEqual(self.ran, [("x", 0.5)])

    def test_activeAndGetTime(self) -> None:
        self.clock.advance(5)
        fired = self.queue.callLater(1.5, self.record, "fired")
        cancelled = self.queue.callLater(2.5, self.record, "cancelled")
        self.assertTrue(fired.active())
        self.assertTrue(cancelled.active())
        self.assertEqual(fired.getTime(), 6.5)
        self.assertEqual(cancelled.getTime(), 7.5)
        cancelled.cancel()
        self.clock.advance(2)
        self.assertFalse(fired.active())
        self.assertFalse(cancelled.active())
        self.assertEqual(fired.getTime(), 6.5)
        self.assertTrue(fired.called)  # type: ignore[attr-defined]
        self.assertTrue(cancelled.cancelled)  # type: ignore[attr-defined]

    def test_inactiveWhileRunning(self) -> None:
        states: list[bool] = []
        calls: list[IDelayedCall] = []
        calls.append(self.queue.callLater(1, lambda: states.append(calls[0].active())))
        self.clock.advance(1)
        self.assertEqual(states, [False])

    def test_alreadyCalled(self) -> None:
        call = self.queue.callLater(1, self.record, "x")
        self.clock.advance(1)
        self.assertRaises(AlreadyCalled, call.cancel)
        self.assertRaises(AlreadyCalled, call.reset, 1)
        self.assertRaises(AlreadyCalled, call.delay, 1)

    def test_alreadyCalledFromItself(self) -> None:
        errors: list[type[BaseException]] = []
        calls: list[IDelayedCall] = []

        def cancelSelf() -> None:
            try:
                calls[0].cancel()
            except AlreadyCalled as e:
                errors.append(type(e))

        calls.append(self.queue.callLater(1, cancelSelf))
        self.clock.advance(1)
        self.assertEqual(errors, [AlreadyCalled])

    def test_alreadyCancelled(self) -> None:
        call = self.queue.callLater(1, self.record, "x")
        call.cancel()
        self.assertRaises(AlreadyCancelled, call.cancel)
        self.assertRaises(AlreadyCancelled, call.reset, 1)
        self.assertRaises(AlreadyCancelled, call.delay, 1)
        self.clock.advance(2)
        self.assertEqual(self.ran, [])

    def test_exceptionIsolatedAndLogged(self) -> None:
        """
        A failing callback is logged; the calls due with it still run and
        the queue keeps working.
        """
        events: list[LogEvent] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.queue.callLater(1, self.record, "before")
        self.queue.callLater(1, lambda: 1 // 0)
        self.queue.callLater(1, self.record, "after")
        self.queue.callLater(2, self.record, "later")
        self.clock.advance(1)
        self.assertEqual(self.ran, [("before", 1.0), ("after", 1.0)])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        [failure] = [e for e in events if "log_failure" in e]
        self.assertEqual(failure["log_namespace"], "sipxmpp.sip.core.timers.TimerQueue")
        self.clock.advance(1)
        self.queue.callLater(1, self.record, "new")
        self.clock.advance(1)
        self.assertEqual(self.ran[2:], [("later", 2.0), ("new", 3.0)])

    def test_baseExceptionLeavesQueueUsable(self) -> None:
        """
        A C{BaseException} goes on to the clock's caller (the reactor logs
        it); the other due calls run on the next pass.
        """

        def escape() -> None:
            raise KeyboardInterrupt()

        self.queue.callLater(1, escape)
        self.queue.callLater(1, self.record, "after")
        self.assertRaises(KeyboardInterrupt, self.clock.advance, 1)
        self.assertEqual(self.ran, [])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0)
        self.assertEqual(self.ran, [("after", 1.0)])

    def test_callbackSchedules(self) -> None:
        """
        Callbacks can schedule, in the heap and in buckets; a call made for
        a time already due runs after the calls that were already due.
        """

        def first() -> None:
            self.record("first")
            self.queue.callLater(0, self.record, "zero")
            self.queue.callLater(0.5, self.record, "half")
            self.queue.callLater(100, self.record, "hundred")

        self.queue.callLater(1, first)
        self.queue.callLater(1, self.record, "second")
        self.clock.advance(1)
        self.assertEqual(self.ran, [("first", 1.0), ("second", 1.0), ("zero", 1.0)])
        self.clock.advance(0.5)
        self.assertEqual(self.ran[-1], ("half", 1.5))
        self.clock.advance(99.5)
        self.assertEqual(self.ran[-1], ("hundred", 101.0))

    def test_dueCallMadeInPassWaitsForNextPass(self) -> None:
        """
        As in the reactor's C{runUntilCurrent}, one pass runs only the calls
        made before it; a call made for now runs in the next reactor turn.
        """

        def first() -> None:
            self.record("first")
            self.queue.callLater(0, self.record, "zero")

        self.queue.callLater(1, first)
        self.queue.callLater(1, self.record, "second")
        runOnePass(self.clock, 1.0)
        self.assertEqual(self.ran, [("first", 1.0), ("second", 1.0)])
        [pending] = self.clock.getDelayedCalls()
        self.assertEqual(pending.getTime(), 1.0)
        self.clock.advance(0)
        self.assertEqual(self.ran[-1], ("zero", 1.0))

    def test_oneUnderlyingCall(self) -> None:
        """
        Whatever is scheduled, moved or cancelled, the clock has at most one
        call from the queue, never later than the earliest live call, and
        none once nothing is live.
        """
        rng = random.Random(4)
        calls: list[IDelayedCall] = []

        def check() -> None:
            underlying = self.clock.getDelayedCalls()
            live = [c for c in calls if c.active()]
            self.assertLessEqual(len(underlying), 1)
            if live:
                self.assertEqual(len(underlying), 1)
                self.assertLessEqual(underlying[0].getTime(), min(c.getTime() for c in live))
            else:
                self.assertEqual(underlying, [])

        for _ in range(2000):
            live = [c for c in calls if c.active()]
            action = rng.random()
            if action < 0.4 or not live:
                calls.append(self.queue.callLater(rng.choice((0, 0.5, 2, 32, 181)) * rng.random(),
                                                  self.record, len(calls)))
            elif action < 0.7:
                rng.choice(live).cancel()
            elif action < 0.8:
                rng.choice(live).reset(rng.random() * 40)
            else:
                self.clock.advance(rng.random() * 3)
            check()
        for call in calls:
            if call.active():
                call.cancel()
        check()

    def test_getDelayedCalls(self) -> None:
        fired = self.queue.callLater(1, self.record, "fired")
        cancelled = self.queue.callLater(2, self.record, "cancelled")
        near = self.queue.callLater(1.5, self.record, "near")
        far = self.queue.callLater(181, self.record, "far")
        moved = self.queue.callLater(3, self.record, "moved")
        moved.reset(100)
        cancelled.cancel()
        self.clock.advance(1)
        self.assertFalse(fired.active())
        pending = self.queue.getDelayedCalls()
        self.assertEqual(len(pending), 3)
        self.assertEqual({id(c) for c in pending}, {id(near), id(far), id(moved)})

    def test_compactionBoundsMemory(self) -> None:
        """
        With almost every call cancelled long before its time, the queue
        holds no more than about twice the live calls, and those still run.
        """
        queue = TimerQueue(self.clock, compactMinimum=50)
        keep = [queue.callLater(181 + i, self.record, i) for i in range(100)]
        for i in range(10000):
            queue.callLater(181, self.record, "cancelled").cancel()
            queue.callLater(0.5, self.record, "cancelled too").cancel()
            if i % 100 == 0:
                self.clock.advance(0.25)
            self.assertLessEqual(entryCount(queue), 2 * 101 + 50 + 2)
        self.assertEqual(len(queue.getDelayedCalls()), 100)
        self.clock.pump([1] * 300)
        self.assertEqual([value for value, _ in self.ran], list(range(100)))
        self.assertEqual([when for _, when in self.ran], [c.getTime() for c in keep])
        self.assertEqual(entryCount(queue), 0)

    def test_compactionByResets(self) -> None:
        """
        Moving a call leaves a dead entry; repeated resets (an idle timer
        pushed back on every packet) do not pile them up.
        """
        queue = TimerQueue(self.clock, compactMinimum=10)
        call = queue.callLater(30, self.record, "idle")
        for _ in range(1000):
            self.clock.advance(0.01)
            call.reset(30)
            self.assertLessEqual(entryCount(queue), 12)
        self.clock.advance(29.99)
        self.assertEqual(self.ran, [])
        self.clock.advance(0.01)
        self.assertEqual(self.ran, [("idle", call.getTime())])

    def test_allCancelledEmptiesQueue(self) -> None:
        calls = [self.queue.callLater(d, self.record, d) for d in (0.5, 5, 181)]
        for call in calls:
            call.cancel()
        self.assertEqual(entryCount(self.queue), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.queue.callLater(2, self.record, "again")
        self.clock.advance(2)
        self.assertEqual(self.ran, [("again", 2.0)])

    def test_releasesCallbacks(self) -> None:
        """
        A call that ran or was cancelled holds neither its callable nor its
        arguments, though its handle is still referenced.
        """
        log: list[str] = []
        targets = [Target(log, "ran"), Target(log, "cancelled")]
        argument = Target(log, "argument")
        refs = [weakref.ref(t) for t in (*targets, argument)]
        ran = self.queue.callLater(1, targets[0], argument)
        cancelled = self.queue.callLater(2, targets[1], key=argument)
        del targets, argument
        self.clock.advance(1)
        cancelled.cancel()
        gc.collect()
        self.assertEqual(log, ["ran"])
        self.assertEqual([ref() for ref in refs], [None, None, None])
        self.assertFalse(ran.active())

    def test_sameAsClock(self) -> None:
        """
        Random schedules, cancels, moves and advances give the same calls at
        the same times as L{Clock} itself (times are random, so no ties).
        """
        for seed in range(3):
            self.assertEqual(self._script(seed, TimerQueue), self._script(seed, None))

    def _script(
        self, seed: int, wrap: Callable[[Clock], TimerQueue] | None
    ) -> list[tuple[int, float]]:
        rng = random.Random(seed)
        clock = Clock()
        clock.advance(1000 * rng.random())
        timers: IReactorTime = clock if wrap is None else wrap(clock)
        fired: list[tuple[int, float]] = []
        calls: list[IDelayedCall] = []

        def fire(n: int) -> None:
            fired.append((n, clock.seconds()))
            if n % 5 == 0:
                calls.append(timers.callLater(rng.random() * 3, fire, len(calls)))

        for _ in range(3000):
            live = [c for c in calls if c.active()]
            action = rng.random()
            if action < 0.35 or not live:
                scale = rng.choice((0.1, 1, 4, 32, 181))
                calls.append(timers.callLater(rng.random() * scale, fire, len(calls)))
            elif action < 0.6:
                rng.choice(live).cancel()
            elif action < 0.7:
                rng.choice(live).reset(rng.random() * 40)
            elif action < 0.75:
                rng.choice(live).delay(rng.random() * 10 - 2)
            else:
                clock.advance(rng.random() * rng.choice((0.1, 1, 10)))
        clock.advance(400)
        self.assertGreater(len(fired), 300)
        return fired


class CompositionTests(TestCase):
    def test_proxyTimersOnQueue(self) -> None:
        """
        The proxy L{buildSIP} composes runs its timers on a L{TimerQueue}
        over the reactor it was given.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "sipxmpp.conf")
        with open(path, "w", encoding="utf-8") as f:
            f.write("[sip]\nupstream = sip:127.0.0.1:5070;transport=udp\n"
                    "domain = example.test\n")
        settings = loadSettings(path).sip
        reactor = MemoryReactorClock()
        _, proxy = buildSIP(settings, reactor, Metrics(), TelephonyStateMachine(reactor),
                            aorOfURI)
        clock = proxy._clock
        self.assertIsInstance(clock, TimerQueue)
        ran: list[float] = []
        for delay in (0.5, 32, 181):
            clock.callLater(delay, lambda: ran.append(reactor.seconds()))
        self.assertEqual(len(reactor.getDelayedCalls()), 1)
        reactor.pump([0.5, 31.5, 149])
        self.assertEqual(ran, [0.5, 32.0, 181.0])
