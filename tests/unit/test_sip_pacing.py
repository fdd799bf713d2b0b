"""
Tests for L{sipxmpp.sip.core.pacing}: the pacer of the gateway's own
requests, on a L{Clock}, and the backoff formula.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.sip.core.pacing import Pacer, backoffDelay


class PacerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.started: list[int] = []
        self.inFlight = 0
        self.skip: set[int] = set()

        def start(item: int) -> bool:
            if item in self.skip:
                return False
            self.started.append(item)
            self.inFlight += 1
            return True

        self.pacer: Pacer[int] = Pacer(self.clock, 3, 2, lambda: self.inFlight, start)

    def test_nothingBeforeResume(self) -> None:
        self.pacer.add(1)
        self.assertEqual(self.started, [])
        self.pacer.resume()
        self.assertEqual(self.started, [1])

    def test_ratePerSecond(self) -> None:
        """
        At most C{perSecond} started a second; the rest when the window
        moves on.
        """
        self.pacer.resume()
        for n in range(4):
            self.inFlight = 0
            self.pacer.add(n)
        self.assertEqual(self.started, [0, 1])
        self.inFlight = 0
        self.clock.advance(1.0)
        self.assertEqual(self.started, [0, 1, 2, 3])

    def test_inFlightBound(self) -> None:
        """
        Nothing more while C{maxInFlight} are unanswered; an answer pumps
        again, in a later reactor turn.
        """
        self.pacer.perSecond = 100
        self.pacer.resume()
        for n in range(5):
            self.pacer.add(n)
        self.assertEqual(self.started, [0, 1, 2])
        self.inFlight -= 1
        self.pacer.answered()
        self.assertEqual(self.started, [0, 1, 2])
        self.clock.advance(0)
        self.assertEqual(self.started, [0, 1, 2, 3])

    def test_itemsNotSentDoNotCount(self) -> None:
        self.skip = {0, 1}
        self.pacer.resume()
        for n in range(3):
            self.pacer.add(n)
        self.assertEqual(self.started, [2])

    def test_stopForgetsTheQueue(self) -> None:
        self.pacer.resume()
        for n in range(4):
            self.pacer.add(n)
        self.pacer.stop()
        self.inFlight = 0
        self.pacer.resume()
        self.clock.advance(5)
        self.assertEqual(self.started, [0, 1])


class BackoffTests(SynchronousTestCase):
    def test_doublingCappedAndJittered(self) -> None:
        self.assertEqual([backoffDelay(n, 2, 10, lambda: 1.0) for n in (1, 2, 3, 4)],
                         [2, 4, 8, 10])  # fmt: skip
        self.assertEqual(backoffDelay(1, 2, 10, lambda: 0.0), 1.0)
        self.assertEqual(backoffDelay(0, 2, 10, lambda: 1.0), 2)
