"""
Tests for L{sipxmpp.sip.shell.overload.OverloadMonitor} on a L{Clock}: behind is
two samples in a row over a threshold (receive backlog or reactor lag), and
one sample under half of each ends it.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.ops.metrics import Metrics
from sipxmpp.sip.shell.overload import SAMPLE_INTERVAL, OverloadMonitor


class OverloadMonitorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.metrics = Metrics()
        self.fill = 0.0
        self.monitor = OverloadMonitor(self.clock, 0.3, 0.25, lambda: self.fill, self.metrics)
        self.monitor.startService()
        self.addCleanup(self.monitor.stopService)

    def sample(self, lag: float = 0.0, fill: float = 0.0) -> None:
        # The next sample runs lag seconds after it was due and sees fill.
        self.fill = fill
        self.clock.advance(SAMPLE_INTERVAL + lag)

    def test_onTimeIsNotOverloaded(self) -> None:
        for _ in range(20):
            self.sample(0.01, 0.1)
        self.assertFalse(self.monitor.isOverloaded())
        self.assertAlmostEqual(self.monitor.lag, 0.01)
        self.assertIn("sipxmpp_sip_receive_backlog_ratio 0.1", self.metrics.render())

    def test_onePauseIsNotOverload(self) -> None:
        self.sample(lag=2.0, fill=0.9)  # a long garbage collection, say
        self.assertFalse(self.monitor.isOverloaded())
        self.sample()
        self.assertFalse(self.monitor.isOverloaded())

    def test_backlogInTwoSamples(self) -> None:
        with capturedLogs() as events:
            self.sample(fill=0.3)
            self.sample(fill=0.5)
        self.assertTrue(self.monitor.isOverloaded())
        self.assertEqual(self.metrics.value("sipxmpp_sip_overload_episodes_total"), 1)
        self.assertIn("sipxmpp_sip_overloaded 1", self.metrics.render())
        self.assertEqual([e["log_level"].name for e in events], ["warn"])
        # Draining, not yet drained: stays overloaded, one episode.
        self.sample(fill=0.2)
        self.assertTrue(self.monitor.isOverloaded())
        self.sample(fill=0.1)
        self.assertFalse(self.monitor.isOverloaded())
        self.assertEqual(self.metrics.value("sipxmpp_sip_overload_episodes_total"), 1)

    def test_lagInTwoSamples(self) -> None:
        self.sample(lag=0.3)
        self.sample(lag=0.4, fill=0.1)
        self.assertTrue(self.monitor.isOverloaded())
        self.sample(lag=0.2)
        self.assertTrue(self.monitor.isOverloaded())
        self.sample(lag=0.1)
        self.assertFalse(self.monitor.isOverloaded())

    def test_eitherSignalKeepsIt(self) -> None:
        self.sample(lag=0.5)
        self.sample(fill=0.5)
        self.assertTrue(self.monitor.isOverloaded())
        self.sample(lag=0.0, fill=0.2)  # lag fine, backlog still over half
        self.assertTrue(self.monitor.isOverloaded())

    def test_stopEndsSampling(self) -> None:
        self.sample(fill=0.5)
        self.sample(fill=0.5)
        self.monitor.stopService()
        self.assertFalse(self.monitor.isOverloaded())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_zeroIgnoresASignal(self) -> None:
        clock = Clock()
        fill = [0.9]
        monitor = OverloadMonitor(clock, 0.3, 0, lambda: fill[0], Metrics())
        monitor.startService()
        self.addCleanup(monitor.stopService)
        clock.pump([SAMPLE_INTERVAL] * 5)
        self.assertFalse(monitor.isOverloaded())
        off = OverloadMonitor(clock, 0, 0, lambda: 1.0, Metrics())
        off.startService()
        self.addCleanup(off.stopService)
        self.assertEqual(len(clock.getDelayedCalls()), 1)  # only the first monitor's
