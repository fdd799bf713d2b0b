"""
Tests for L{sipxmpp.sip.core.local}'s lifetime rules, shared by the PUBLISH
compositor and the presence agent.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.sip.core.local import checkLifetimes, grantedExpires


class LifetimeTests(SynchronousTestCase):
    def test_granted(self) -> None:
        """
        Absent: the default; 0: 0 (removal); between the bounds: as asked;
        above: the maximum; below the minimum: L{None} (423).
        """
        self.assertEqual([grantedExpires(r, 10, 600, 3600) for r in (None, 0, 10, 43201, 9)],
                         [600, 0, 10, 3600, None])  # fmt: skip

    def test_bounds(self) -> None:
        checkLifetimes("PUBLISH", 5, 3600, 3600)
        error = self.assertRaises(ValueError, checkLifetimes, "SUBSCRIBE", 60, 30, 3600)
        self.assertEqual(str(error), "SUBSCRIBE lifetimes must be 0 < min (60) <= default "
                                     "(30) <= max (3600)")  # fmt: skip
        self.assertRaises(ValueError, checkLifetimes, "PUBLISH", 0, 10, 20)
