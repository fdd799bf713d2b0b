"""
Tests for L{sipxmpp.ops.gcstats}: collections counted and timed.
"""

from __future__ import annotations

import gc

from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.ops.gcstats import CollectorTimer
from sipxmpp.ops.metrics import Metrics


class CollectorTimerTests(SynchronousTestCase):
    def test_timesCollections(self) -> None:
        now = [10.0]
        metrics = Metrics()
        timer = CollectorTimer(metrics, clock=lambda: now[0])
        timer("start", {"generation": 1})
        now[0] += 0.25
        timer("stop", {"generation": 1, "collected": 3})
        timer("start", {"generation": 0})
        now[0] += 0.01
        timer("stop", {"generation": 0})
        self.assertEqual(metrics.value("sipxmpp_gc_collections_total", generation="1"), 1)
        self.assertEqual(metrics.value("sipxmpp_gc_collections_total", generation="0"), 1)
        self.assertAlmostEqual(
            metrics.value("sipxmpp_gc_pause_seconds_total", generation="1"), 0.25)
        self.assertAlmostEqual(timer.longest, 0.25)
        self.assertIn("sipxmpp_gc_longest_pause_seconds 0.25", metrics.render())

    def test_installedOnce(self) -> None:
        metrics = Metrics()
        timer = CollectorTimer(metrics)
        self.addCleanup(timer.uninstall)
        timer.install()
        timer.install()
        self.assertEqual(gc.callbacks.count(timer), 1)
        gc.collect(0)
        self.assertEqual(metrics.value("sipxmpp_gc_collections_total", generation="0"), 1)
        timer.uninstall()
        gc.collect(0)
        self.assertEqual(metrics.value("sipxmpp_gc_collections_total", generation="0"), 1)
        self.assertNotIn(timer, gc.callbacks)
