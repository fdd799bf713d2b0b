"""
Tests for L{sipxmpp.sip.core.registrations}: how a registrar's answer is
read (L{grantedContacts}), and L{Registrations}' lazy expiry on a L{Clock}
(expired bindings neither count nor pile up).
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.core.registrations import (
    DEFAULT_EXPIRES,
    PURGE_INTERVAL,
    Binding,
    Registrations,
    contactKey,
    grantedContacts,
)
from sipxmpp.sip.wire.message import SIPResponse
from sipxmpp.sip.wire.parser import parseMessage
from sipxmpp.sip.wire.uri import parseURI

FLOW = Peer("UDP", "127.0.0.1", 5080)


def binding(user: str, expiresAt: float) -> tuple[tuple[str, str, int, str], Binding]:
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


def registerOK(*fields: str) -> SIPResponse:
    head = [
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1",
        "From: <sip:alice@example.test>;tag=a",
        "To: <sip:alice@example.test>;tag=r",
        "Call-ID: reg-1",
        "CSeq: 2 REGISTER",
        *fields,
        "Content-Length: 0",
    ]
    response = parseMessage(("\r\n".join(head) + "\r\n\r\n").encode())
    assert isinstance(response, SIPResponse)
    return response


class RetainTests(SynchronousTestCase):
    def test_keepsOnlyTheListedOfTheAoR(self) -> None:
        registrations = Registrations(Clock())
        for user in ("alice", "bob"):
            registrations.update(*binding(user, 60))
        key, alice2 = binding("alice2", 60)
        alice2.aor = "sip:alice@example.test"
        registrations.update(key, alice2)
        dropped = registrations.retain("sip:alice@example.test", {key})
        self.assertEqual([b.contact for b in dropped], ["sip:alice@127.0.0.1:5080"])
        self.assertEqual(sorted(b.contact for b in registrations),
                         ["sip:alice2@127.0.0.1:5080", "sip:bob@127.0.0.1:5080"])


    def test_contactMovedToAnotherAoR(self) -> None:
        """
        A contact registered again for another AoR is that AoR's: the
        first AoR's answer, which no longer lists it, does not drop it.
        """
        registrations = Registrations(Clock())
        key, alice = binding("phone", 60)
        registrations.update(key, alice)
        _, bob = binding("phone", 60)
        bob.aor = "sip:bob@example.test"
        registrations.update(key, bob)
        self.assertEqual(registrations.retain(alice.aor, set()), [])
        self.assertEqual(registrations.retain(bob.aor, {key}), [])
        self.assertIs(registrations.get(key), bob)
        self.assertEqual([b.contact for b in registrations.retain(bob.aor, set())],
                         [bob.contact])
        self.assertEqual(len(registrations), 0)

    def test_indexesEmptied(self) -> None:
        """
        Bindings removed, retained away or expired leave nothing behind in
        the indexes by source and by AoR.
        """
        clock = Clock()
        registrations = Registrations(clock)
        for n in range(3):
            registrations.update(*binding(f"u{n}", 10))
        registrations.remove(binding("u0", 10)[0])
        registrations.retain("sip:u1@example.test", set())
        clock.advance(10)
        self.assertEqual(registrations.purge(), 1)
        self.assertEqual(registrations._byAor, {})
        self.assertEqual(registrations._bySource, {})

class ContactKeyTests(SynchronousTestCase):
    def test_gruusOfTwoDevicesDiffer(self) -> None:
        """
        RFC 5627: the public GRUUs of two devices of one user differ only in
        C{gr}; they are two routes, and one GRUU is one route whatever the
        case of its C{gr} value.
        """
        a = contactKey(parseURI("sip:alice@example.test;gr=urn:uuid:A"))
        b = contactKey(parseURI("sip:alice@example.test;gr=urn:uuid:B"))
        self.assertNotEqual(a, b)
        self.assertEqual(a, contactKey(parseURI("sip:alice@example.test;GR=URN:UUID:a")))
        self.assertNotEqual(a, contactKey(parseURI("sip:alice@example.test")))


class GrantedContactsTests(SynchronousTestCase):
    """
    The one reading of a REGISTER answer that the proxy and the observer
    share.
    """

    def test_expiresParameterWins(self) -> None:
        response = registerOK("Contact: <sip:alice@127.0.0.1:5080>;expires=120",
                              "Expires: 600")  # fmt: skip
        [(contact, expires)] = grantedContacts(response)
        self.assertEqual((contact.uriText, expires), ("sip:alice@127.0.0.1:5080", 120))

    def test_expiresHeaderThenDefault(self) -> None:
        """
        A contact without C{expires} takes the Expires header, and without
        one the RFC 3261 default of 3600 s (not 0: the contact is bound).
        """
        withHeader = registerOK("Contact: <sip:alice@127.0.0.1:5080>", "Expires: 600")
        self.assertEqual([e for _, e in grantedContacts(withHeader)], [600])
        bare = registerOK("Contact: <sip:alice@127.0.0.1:5080>")
        self.assertEqual([e for _, e in grantedContacts(bare)], [DEFAULT_EXPIRES])
        self.assertEqual(DEFAULT_EXPIRES, 3600)

    def test_everyContactListedNoWildcard(self) -> None:
        response = registerOK("Contact: <sip:alice@127.0.0.1:5080>;expires=60, "
                              "<sip:alice@127.0.0.1:5090>;expires=0", "Contact: *")  # fmt: skip
        self.assertEqual([(c.uriText, e) for c, e in grantedContacts(response)],
                         [("sip:alice@127.0.0.1:5080", 60), ("sip:alice@127.0.0.1:5090", 0)])  # fmt: skip

    def test_noContacts(self) -> None:
        self.assertEqual(grantedContacts(registerOK()), [])
