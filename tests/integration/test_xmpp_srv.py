"""
DNS SRV (RFC 6120 3.2, XEP-0368) over the wire: a DNS server of our own
(twisted.names) on a free 127.0.0.1 UDP port answers the
C{_xmpp-client._tcp} and C{_xmpps-client._tcp} lookups of a real
L{SRVEndpoint}, whose session logs in to a real Prosody with STARTTLS and
Direct TLS ports.

The resolver is given to the endpoint, so the machine's
C{/etc/resolv.conf} is neither read nor touched; what this leaves out is
only how the gateway finds its system resolver.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.names import client, dns, server
from twisted.names.common import ResolverBase
from twisted.names.error import DNSNameError
from twisted.trial.unittest import TestCase
from twisted.words.protocols.jabber.jid import JID

from sipxmpp.testing.ports import LOOPBACK
from sipxmpp.testing.process import SharedServer, requireBinaries
from sipxmpp.testing.prosody import ProsodyServer
from sipxmpp.xmpp.endpoints import SRVEndpoint
from sipxmpp.xmpp.session import SessionSettings, XMPPSession
from sipxmpp.xmpp.tls import clientTLSOptions, loadTrustRoot
from tests.integration.test_xmpp_publisher import deferred, sleep

reactor: Any = _reactor

DOMAIN = "example.test"
STARTTLS = f"_xmpp-client._tcp.{DOMAIN}"
DIRECT = f"_xmpps-client._tcp.{DOMAIN}"
USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw", "dave": "dave-pw"}
WAIT = 20.0


class SRVRecords(ResolverBase):
    """
    An authority for SRV records only: C{records} name -> [(priority,
    weight, port, target)]; any other name does not exist (NXDOMAIN).
    """

    def __init__(self) -> None:
        super().__init__()
        self.records: dict[str, list[tuple[int, int, int, str]]] = {}
        self.asked: list[str] = []

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> Deferred[Any]:
        text = name.decode()
        self.asked.append(text)
        if type != dns.SRV or text not in self.records:
            return defer.fail(DNSNameError(text))
        answers = [dns.RRHeader(name, dns.SRV, auth=True, payload=dns.Record_SRV(*r))
                   for r in self.records[text]]  # fmt: skip
        return defer.succeed((answers, [], []))


class Accepts(Protocol):
    """
    A TCP listener that counts the connections it gets and drops them:
    where a session must not go.
    """

    accepted = 0

    def connectionMade(self) -> None:
        type(self).accepted += 1
        assert self.transport is not None
        self.transport.loseConnection()


class SRVTests(TestCase):
    timeout = 60
    prosody = SharedServer(lambda: ProsodyServer(users=USERS, directTLS=True))

    def setUp(self) -> None:
        requireBinaries("prosody", "prosodyctl", "openssl")
        self.server = self.prosody.get(self)
        self.records = SRVRecords()
        factory = server.DNSServerFactory(clients=[self.records])
        udp = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface=LOOPBACK)
        self.addCleanup(udp.stopListening)
        self.resolver = client.Resolver(servers=[(LOOPBACK, udp.getHost().port)],
                                        reactor=reactor)  # fmt: skip
        Accepts.accepted = 0
        trap = reactor.listenTCP(0, Factory.forProtocol(Accepts), interface=LOOPBACK)
        self.addCleanup(trap.stopListening)
        self.trapPort = trap.getHost().port

    async def logIn(self, user: str) -> XMPPSession:
        options = clientTLSOptions(DOMAIN, loadTrustRoot(self.server.caFile))
        session = XMPPSession(reactor, JID(f"{user}@{DOMAIN}"), USERS[user],
                              SessionSettings(requireTLS=True, failedRetryDelay=600),
                              tlsOptions=options,
                              endpoint=SRVEndpoint(reactor, DOMAIN, self.resolver, options))
        session.start()
        self.addCleanup(session.stop)
        waited = 0.0
        while session.state != "connected":
            if waited > WAIT:
                self.fail(f"{user}'s session did not log in within {WAIT:g} s: {session.state}; "
                          f"DNS asked: {self.records.asked}")
            await sleep(0.05)
            waited += 0.05
        return session

    @deferred
    async def test_directTLSPreferredOnEqualPriority(self) -> None:
        """
        Both services at priority 10, the STARTTLS one heavier and pointing
        at a port that only drops connections: the session goes to the
        Direct TLS port first and never to the other.
        """
        self.records.records = {
            STARTTLS: [(10, 90, self.trapPort, LOOPBACK)],
            DIRECT: [(10, 10, self.server.directTLSPort, LOOPBACK)],
        }
        session = await self.logIn("alice")
        self.assertEqual(Accepts.accepted, 0)
        self.assertEqual(sorted(set(self.records.asked)), sorted([DIRECT, STARTTLS]))
        self.assertTrue(session._encrypted())

    @deferred
    async def test_lowerPriorityWins(self) -> None:
        """
        STARTTLS at a lower priority value than Direct TLS (pointing at the
        dropping port) is taken first: priorities mix across the services.
        """
        self.records.records = {
            STARTTLS: [(5, 0, self.server.port, LOOPBACK)],
            DIRECT: [(10, 0, self.trapPort, LOOPBACK)],
        }
        await self.logIn("bob")
        self.assertEqual(Accepts.accepted, 0)

    @deferred
    async def test_targetWithoutStreamSkipped(self) -> None:
        """
        The first target takes the connection and drops it before any
        stream (as a port speaking something else, or a failed Direct TLS
        handshake, would): the next attempt goes to the next target,
        instead of to the same one for ever.
        """
        self.records.records = {
            STARTTLS: [(5, 0, self.trapPort, LOOPBACK)],
            DIRECT: [(10, 0, self.server.directTLSPort, LOOPBACK)],
        }
        await self.logIn("dave")
        self.assertEqual(Accepts.accepted, 1)

    @deferred
    async def test_directTLSDeclined(self) -> None:
        """
        C{_xmpps-client} says "." (no Direct TLS): STARTTLS records are
        used.
        """
        self.records.records = {
            STARTTLS: [(10, 0, self.server.port, LOOPBACK)],
            DIRECT: [(0, 0, 0, "")],
        }
        await self.logIn("carol")
