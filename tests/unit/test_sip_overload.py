"""
Tests for L{sipxmpp.sip.overload.LagMonitor} on a L{Clock}: a late reactor
is two late samples in a row, and one on-time sample ends it.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.ops.metrics import Metrics
from sipxmpp.sip.overload import SAMPLE_INTERVAL, LagMonitor


class LagMonitorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.metrics = Metrics()
        self.monitor = LagMonitor(self.clock, 0.3, self.metrics)
        self.monitor.startService()
        self.addCleanup(self.monitor.stopService)

    def late(self, lag: float) -> None:
        # The next sample runs lag seconds after it was due.
        self.clock.advance(SAMPLE_INTERVAL + lag)

    def test_onTimeIsNotOverloaded(self) -> None:
        for _ in range(20):
            self.late(0.01)
        self.assertFalse(self.monitor.isOverloaded())
        self.assertAlmostEqual(self.monitor.lag, 0.01)

    def test_onePauseIsNotOverload(self) -> None:
        self.late(2.0)  # a long garbage collection, say
        self.assertFalse(self.monitor.isOverloaded())
        self.late(0.0)
        self.assertFalse(self.monitor.isOverloaded())

    def test_twoLateSamplesInARow(self) -> None:
        with capturedLogs() as events:
            self.late(0.3)
            self.late(0.4)
        self.assertTrue(self.monitor.isOverloaded())
        self.assertEqual(self.metrics.value("sipxmpp_sip_overload_episodes_total"), 1)
        self.assertIn("sipxmpp_sip_overloaded 1", self.metrics.render())
        self.assertEqual([e["log_level"].name for e in events], ["warn"])
        # Still late, not yet back: stays overloaded, one episode.
        self.late(0.2)
        self.assertTrue(self.monitor.isOverloaded())
        self.late(0.1)
        self.assertFalse(self.monitor.isOverloaded())
        self.assertEqual(self.metrics.value("sipxmpp_sip_overload_episodes_total"), 1)

    def test_stopEndsSampling(self) -> None:
        self.late(0.5)
        self.late(0.5)
        self.monitor.stopService()
        self.assertFalse(self.monitor.isOverloaded())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_zeroDisables(self) -> None:
        clock = Clock()
        monitor = LagMonitor(clock, 0, Metrics())
        monitor.startService()
        self.addCleanup(monitor.stopService)
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(10)
        self.assertFalse(monitor.isOverloaded())
