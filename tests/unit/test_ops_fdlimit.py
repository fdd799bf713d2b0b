"""
Tests for L{sipxmpp.ops.fdlimit}: raising the open-file limit at start,
the warning near it, and the C{fds} health check.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.ops.fdlimit import FDMonitor, SystemLimits, openFileCount


class FakeLimits:
    def __init__(self, soft: int, hard: int, refuse: bool = False) -> None:
        self.soft = soft
        self.hard = hard
        self.refuse = refuse

    def get(self) -> tuple[int, int]:
        return self.soft, self.hard

    def setSoft(self, soft: int, hard: int) -> None:
        if self.refuse:
            raise ValueError("not allowed")
        assert hard == self.hard
        self.soft = soft


def lines(events: list[dict[str, Any]], level: LogLevel | None = None) -> list[str]:
    return [formatEvent(e) for e in events if level is None or e["log_level"] == level]


class FDMonitorTests(SynchronousTestCase):
    def start(self, limits: FakeLimits, used: list[int | None]) -> tuple[FDMonitor, Clock,
                                                                         list[dict[str, Any]]]:
        clock = Clock()
        monitor = FDMonitor(clock, limits, count=lambda: used[0], interval=10)
        with capturedLogs() as events:
            monitor.startService()
        self.addCleanup(monitor.stopService)
        return monitor, clock, events

    def test_raisesSoftToHard(self) -> None:
        """
        At start the soft limit becomes the hard limit, and the log says so.
        """
        limits = FakeLimits(1024, 65536)
        monitor, _, events = self.start(limits, [10])
        self.assertEqual((limits.soft, monitor.limit), (65536, 65536))
        self.assertEqual(lines(events, LogLevel.info),
                         ["open-file limit raised from 1024 to 65536 (hard limit 65536)"])
        self.assertEqual(lines(events, LogLevel.warn), [])

    def test_lowHardLimitWarns(self) -> None:
        """
        A hard limit too low for a gateway is a warning naming the remedy.
        """
        monitor, _, events = self.start(FakeLimits(1024, 1024), [10])
        self.assertEqual(monitor.limit, 1024)
        [warning] = lines(events, LogLevel.warn)
        self.assertIn("open-file limit is only 1024", warning)
        self.assertIn("LimitNOFILE", warning)

    def test_refusedAndUnlimited(self) -> None:
        """
        A refused raise is logged and the old limit kept; an unlimited hard
        limit gets a large finite soft one.
        """
        monitor, _, events = self.start(FakeLimits(8192, 65536, refuse=True), [1])
        self.assertEqual(monitor.limit, 8192)
        self.assertIn("raising it to 65536 failed (not allowed)", lines(events)[0])
        limits = FakeLimits(8192, -1)
        monitor, _, events = self.start(limits, [1])
        self.assertEqual(limits.soft, 1_048_576)
        self.assertIn("(hard limit unlimited)", lines(events)[0])

    def test_warnsNearLimitOnce(self) -> None:
        """
        Above 80 % of the limit a warning is logged once, and again only
        after the use fell below 75 %.
        """
        used: list[int | None] = [100]
        monitor, clock, _ = self.start(FakeLimits(10000, 10000), used)
        with capturedLogs() as events:
            used[0] = 8001
            clock.advance(10)
            clock.advance(10)
            used[0] = 7600
            clock.advance(10)
            used[0] = 7000
            clock.advance(10)
            used[0] = 9000
            clock.advance(10)
        warnings = lines(events, LogLevel.warn)
        self.assertEqual(len(warnings), 2)
        self.assertIn("8001 of 10000 open files in use (80%)", warnings[0])
        self.assertIn("LimitNOFILE", warnings[0])
        self.assertIn("9000 of 10000", warnings[1])
        self.assertEqual(lines(events, LogLevel.info),
                         ["7000 of 10000 open files in use (70%)"])

    def test_check(self) -> None:
        """
        The fds check fails above 95 % of the limit, and passes when the
        descriptors cannot be counted.
        """
        used: list[int | None] = [9500]
        monitor, _, _ = self.start(FakeLimits(10000, 10000), used)
        self.assertEqual(monitor.check().ok, True)
        self.assertEqual(monitor.check().detail, "9500 of 10000 open files (95%)")
        used[0] = 9501
        result = monitor.check()
        self.assertFalse(result.ok)
        self.assertIn("(more than 95%)", result.detail)
        used[0] = None
        self.assertTrue(monitor.check().ok)

    def test_stopStopsWatching(self) -> None:
        clock = Clock()
        monitor = FDMonitor(clock, FakeLimits(10, 10), count=lambda: 1)
        monitor.startService()
        monitor.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])


class SystemTests(SynchronousTestCase):
    def test_openFileCount(self) -> None:
        """
        The count follows descriptors opened and closed.
        """
        before = openFileCount()
        if before is None:
            self.skipTest("open descriptors cannot be listed here")
        with open(__file__):
            self.assertEqual(openFileCount(), before + 1)
        self.assertEqual(openFileCount(), before)

    def test_systemLimits(self) -> None:
        """
        The soft limit read back is the one set (here: the same value).
        """
        limits = SystemLimits()
        soft, hard = limits.get()
        limits.setSoft(soft, hard)
        self.assertEqual(limits.get(), (soft, hard))
