"""
Tests for L{sipxmpp.sip.core.registrations.Registrations}: lazy expiry on a
L{Clock}, and that expired bindings neither count nor pile up.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.core.registrations import PURGE_INTERVAL, Binding, Registrations, contactKey
from sipxmpp.sip.wire.uri import parseURI

FLOW = Peer("UDP", "127.0.0.1", 5080)


def binding(user: str, expiresAt: float) -> tuple[tuple[str, str, int], Binding]:
    uri = f"sip:{user}@127.0.0.1:5080"
    key = contactKey(parseURI(uri))
    assert key is not None
    return key, Binding(f"sip:{user}@example.test", uri, FLOW, expiresAt)


class RegistrationsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.registrations = Registrations(self.clock)

    def test_lookupExpires(self) -> None:
        key, alice = binding("alice", 60)
        self.registrations.update(key, alice)
        self.assertIs(self.registrations.lookup(parseURI(alice.contact)), alice)
        self.clock.advance(60)
        self.assertIsNone(self.registrations.lookup(parseURI(alice.contact)))

    def test_lengthCountsLiveBindingsOnly(self) -> None:
        """
        The C{sipxmpp_sip_bindings} gauge and C{/status} use C{len()}: a
        binding that expired is not counted, looked up or not.
        """
        self.registrations.update(*binding("alice", 60))
        self.registrations.update(*binding("bob", 120))
        self.assertEqual(len(self.registrations), 2)
        self.clock.advance(60)
        self.assertEqual(len(self.registrations), 1)
        self.assertEqual([b.aor for b in self.registrations], ["sip:bob@example.test"])
        self.clock.advance(60)
        self.assertEqual(len(self.registrations), 0)

    def test_expiredBindingsDoNotPileUp(self) -> None:
        """
        Contacts that are never looked up again (a phone that re-registered
        from another port) are dropped by later updates, at most one
        C{PURGE_INTERVAL} after they expired, without any C{len()} call.
        """
        for n in range(100):
            self.registrations.update(*binding(f"old{n}", 10))
        self.clock.advance(PURGE_INTERVAL + 10)
        self.registrations.update(*binding("new", PURGE_INTERVAL + 3600))
        self.assertEqual(len(self.registrations._bindings), 1)
