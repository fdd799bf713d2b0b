"""
Tests for L{sipxmpp.xmpp.endpoints}: the server forms, the merge of
C{_xmpp-client} and C{_xmpps-client} SRV records (XEP-0368), and which
endpoint a session gets, with a fake resolver and a memory reactor (no
sockets, no DNS).
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.names import dns
from twisted.names.error import DNSNameError, DNSServerError
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.xish.xmlstream import XmlStreamFactory

from sipxmpp.testing.tls import TestCA
from sipxmpp.xmpp.endpoints import (
    SRV,
    SRVEndpoint,
    Target,
    canonicalServer,
    makeEndpoint,
    mergeSRV,
    parseServer,
)
from sipxmpp.xmpp.tls import ALPN_XMPP_CLIENT, clientTLSOptions, loadTrustRoot

DOMAIN = "example.test"
STARTTLS = f"_xmpp-client._tcp.{DOMAIN}"
DIRECT = f"_xmpps-client._tcp.{DOMAIN}"

Records = list[tuple[int, int, str, int]]


def srv(priority: int, weight: int, target: str, port: int) -> dns.Record_SRV:
    return dns.Record_SRV(priority, weight, port, target)


class FakeResolver:
    """
    Answers SRV lookups from C{answers} (name -> records); a name absent
    does not exist; an exception instance is raised.
    """

    def __init__(self, answers: dict[str, Records | Exception]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def lookupService(self, name: str) -> Deferred[Any]:
        self.asked.append(name)
        answer = self.answers.get(name)
        if answer is None:
            return defer.fail(DNSNameError(name))
        if isinstance(answer, Exception):
            return defer.fail(answer)
        records = [dns.RRHeader(name, dns.SRV, payload=srv(*r)) for r in answer]
        return defer.succeed((records, [], []))


class ServerFormTests(SynchronousTestCase):
    def test_forms(self) -> None:
        self.assertEqual(parseServer("127.0.0.1:5222"), Target("127.0.0.1", 5222, False))
        self.assertEqual(parseServer("tls:xmpp.example.test:5223"),
                         Target("xmpp.example.test", 5223, True))  # fmt: skip
        self.assertEqual(parseServer(" TLS:[::1]:443 "), Target("::1", 443, True))
        self.assertEqual(str(Target("::1", 443, True)), "tls:[::1]:443")
        self.assertEqual(str(Target("h.test", 5222)), "h.test:5222")

    def test_malformed(self) -> None:
        for text in ("", "host", "tls:host", "::1:5222", "h:0", "h:65536", "a b:1",
                     "starttls:h:5222", "tls:tls:h:1", "u@h:1", "h:5222/x"):
            e = self.assertRaises(ValueError, parseServer, text)
            self.assertIn("HOST:PORT (STARTTLS) or tls:HOST:PORT (Direct TLS", str(e))

    def test_canonical(self) -> None:
        """
        A per-account server: C{srv} or one of the two forms, spelled one
        way; anything else is refused naming the value.
        """
        self.assertEqual(canonicalServer("SRV"), SRV)
        self.assertEqual(canonicalServer("Tls:H.test:5223"), "tls:H.test:5223")
        self.assertEqual(canonicalServer("[::1]:5222"), "[::1]:5222")
        e = self.assertRaises(ValueError, canonicalServer, "default")
        self.assertIn("or srv for DNS SRV", str(e))
        self.assertIn("'default'", str(e))


class MergeTests(SynchronousTestCase):
    """
    L{mergeSRV}: RFC 6120 3.2 with XEP-0368's records mixed in.
    """

    def test_priorityFirst(self) -> None:
        self.assertEqual(
            mergeSRV(DOMAIN, [srv(20, 0, "b.test", 5222), srv(10, 0, "a.test", 5222)],
                     [srv(30, 0, "c.test", 5223), srv(5, 0, "d.test", 443)]),
            [Target("d.test", 443, True), Target("a.test", 5222, False),
             Target("b.test", 5222, False), Target("c.test", 5223, True)],
        )  # fmt: skip

    def test_directTLSPreferredOnEqualPriority(self) -> None:
        """
        On equal priority Direct TLS comes first, even against a heavier
        STARTTLS record; among one kind, heavier weight first.
        """
        self.assertEqual(
            mergeSRV(DOMAIN, [srv(10, 90, "s.test", 5222), srv(10, 10, "t.test", 5222)],
                     [srv(10, 1, "d.test", 5223), srv(10, 50, "e.test", 5223)]),
            [Target("e.test", 5223, True), Target("d.test", 5223, True),
             Target("s.test", 5222, False), Target("t.test", 5222, False)],
        )  # fmt: skip

    def test_onlyOneKind(self) -> None:
        self.assertEqual(mergeSRV(DOMAIN, None, [srv(0, 0, "d.test", 5223)]),
                         [Target("d.test", 5223, True)])  # fmt: skip
        self.assertEqual(mergeSRV(DOMAIN, [srv(0, 0, "s.test", 5222)], None),
                         [Target("s.test", 5222, False)])  # fmt: skip

    def test_noRecordFallsBackToTheDomain(self) -> None:
        self.assertEqual(mergeSRV(DOMAIN, None, None), [Target(DOMAIN, 5222, False)])
        self.assertEqual(mergeSRV(DOMAIN, [], []), [Target(DOMAIN, 5222, False)])

    def test_decidedlyNotAvailable(self) -> None:
        """
        A lone "." target: that service is not offered, and there is no
        fallback to the domain (XEP-0368 5); the other service still is.
        """
        dot = [srv(0, 0, "", 0)]  # "." on the wire: the root, an empty name
        self.assertEqual(mergeSRV(DOMAIN, dot, None), [])
        self.assertEqual(mergeSRV(DOMAIN, None, dot), [])
        self.assertEqual(mergeSRV(DOMAIN, dot, dot), [])
        self.assertEqual(mergeSRV(DOMAIN, [srv(0, 0, "s.test", 5222)], dot),
                         [Target("s.test", 5222, False)])  # fmt: skip
        self.assertEqual(mergeSRV(DOMAIN, dot, [srv(0, 0, "d.test", 5223)]),
                         [Target("d.test", 5223, True)])  # fmt: skip


class SRVEndpointTests(SynchronousTestCase):
    def setUp(self) -> None:
        ca = TestCA(self.mktemp())
        self.options = clientTLSOptions(DOMAIN, loadTrustRoot(ca.caFile))

    def targets(self, resolver: FakeResolver, tls: bool = True) -> list[Target]:
        endpoint = SRVEndpoint(MemoryReactorClock(), DOMAIN, resolver,
                               self.options if tls else None)  # fmt: skip
        result: list[Target] = self.successResultOf(Deferred.fromCoroutine(endpoint._targets()))
        return result

    def test_bothLookedUp(self) -> None:
        resolver = FakeResolver({STARTTLS: [(10, 0, "s.test", 5222)],
                                 DIRECT: [(10, 0, "d.test", 5223)]})  # fmt: skip
        self.assertEqual(self.targets(resolver),
                         [Target("d.test", 5223, True), Target("s.test", 5222, False)])
        self.assertEqual(sorted(resolver.asked), [STARTTLS, DIRECT])

    def test_withoutTLSOptionsNoDirectTLS(self) -> None:
        """
        Without TLS options to verify with, Direct TLS is never looked up.
        """
        resolver = FakeResolver({STARTTLS: [(10, 0, "s.test", 5222)],
                                 DIRECT: [(0, 0, "d.test", 5223)]})  # fmt: skip
        self.assertEqual(self.targets(resolver, tls=False), [Target("s.test", 5222, False)])
        self.assertEqual(resolver.asked, [STARTTLS])

    def test_nothing(self) -> None:
        self.assertEqual(self.targets(FakeResolver({})), [Target(DOMAIN, 5222, False)])

    def test_oneLookupFails(self) -> None:
        """
        A lookup that fails (not "no such name") leaves the other's
        records; with none, the failure, not a guessed fallback.
        """
        resolver = FakeResolver({STARTTLS: DNSServerError("timeout"),
                                 DIRECT: [(0, 0, "d.test", 5223)]})  # fmt: skip
        self.assertEqual(self.targets(resolver), [Target("d.test", 5223, True)])
        endpoint = SRVEndpoint(MemoryReactorClock(), DOMAIN,
                               FakeResolver({DIRECT: DNSServerError("timeout")}), self.options)
        self.failureResultOf(Deferred.fromCoroutine(endpoint._targets()), DNSServerError)

    def test_skipsATargetThatOpenedNoStream(self) -> None:
        """
        A target that took the connection but lost it before the server
        opened its stream is skipped at the next attempt; once a stream
        opened, attempts start at the top of the order again.
        """
        reactor = MemoryReactorClock()
        resolver = FakeResolver({STARTTLS: [(5, 0, "127.0.0.1", 5222)],
                                 DIRECT: [(10, 0, "127.0.0.2", 5223)]})  # fmt: skip
        endpoint = SRVEndpoint(reactor, DOMAIN, resolver, self.options)

        def attempt() -> tuple[int, Any]:
            # (The memory reactor's resolver gives 127.0.0.1 for any name:
            # the ports tell the targets apart.)
            connected = endpoint.connect(XmlStreamFactory())
            host, port, factory, _, _ = reactor.tcpClients[-1]
            factory.buildProtocol(IPv4Address("TCP", host, port)).makeConnection(
                StringTransport())
            return port, self.successResultOf(connected)

        port, stream = attempt()
        self.assertEqual(port, 5222)
        stream.connectionLost(Failure(ConnectionDone()))
        port, stream = attempt()
        self.assertEqual(port, 5223)
        stream.dataReceived(b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>")
        stream.connectionLost(Failure(ConnectionDone()))
        port, _ = attempt()
        self.assertEqual(port, 5222)

    def test_refusedWhenDeclined(self) -> None:
        endpoint = SRVEndpoint(MemoryReactorClock(), DOMAIN,
                               FakeResolver({STARTTLS: [(0, 0, "", 0)]}), self.options)
        failure = self.failureResultOf(endpoint.connect(Factory.forProtocol(Protocol)),
                                       ConnectionRefusedError)  # fmt: skip
        self.assertIn("offers no XMPP client service", str(failure.value))


class MakeEndpointTests(SynchronousTestCase):
    """
    Which endpoint a session connects with, and that Direct TLS runs over
    the session's own (verifying) TLS options.
    """

    def setUp(self) -> None:
        self.ca = TestCA(self.mktemp())
        self.options = clientTLSOptions(DOMAIN, loadTrustRoot(self.ca.caFile))
        self.reactor = MemoryReactorClock()

    def test_startTLS(self) -> None:
        endpoint = makeEndpoint(self.reactor, "xmpp.example.com:5222", DOMAIN,
                                tlsOptions=self.options)  # fmt: skip
        self.assertIsInstance(endpoint, HostnameEndpoint)

    def test_address(self) -> None:
        """
        An address is connected to without a name resolution.
        """
        endpoint = makeEndpoint(self.reactor, "127.0.0.1:5222", DOMAIN, tlsOptions=self.options)
        self.assertIsInstance(endpoint, TCP4ClientEndpoint)
        endpoint = makeEndpoint(self.reactor, "[::1]:5222", DOMAIN, tlsOptions=self.options)
        self.assertIsInstance(endpoint, TCP6ClientEndpoint)
        endpoint.connect(Factory.forProtocol(Protocol))
        [(host, port, _, _, _)] = self.reactor.tcpClients
        self.assertEqual((host, port), ("::1", 5222))

    def handshake(self, names: list[str]) -> tuple[list[bytes], Any, StringTransport]:
        """
        Connect to C{tls:127.0.0.1:5223} and run the TLS handshake in memory
        against a server holding a certificate for C{names} from the trusted
        CA; return the ALPN protocols offered, the application's protocol,
        and the TCP transport.
        """
        endpoint = makeEndpoint(self.reactor, "tls:127.0.0.1:5223", DOMAIN,
                                tlsOptions=self.options)  # fmt: skip
        connected = endpoint.connect(Factory.forProtocol(Protocol))
        [(host, port, factory, _, _)] = self.reactor.tcpClients
        self.assertEqual((host, port), ("127.0.0.1", 5223))
        certificate = self.ca.issue(names, self.mktemp(), "server")
        context = SSL.Context(SSL.TLS_METHOD)
        context.use_certificate_file(certificate.certFile)
        context.use_privatekey_file(certificate.keyFile)
        offered: list[bytes] = []

        def select(connection: SSL.Connection, protocols: list[bytes]) -> bytes:
            offered.extend(protocols)
            return protocols[0]

        context.set_alpn_select_callback(select)
        server = SSL.Connection(context, None)
        server.set_accept_state()
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport()
        protocol.makeConnection(transport)
        for _ in range(20):
            data, _ = transport.value(), transport.clear()
            if data:
                server.bio_write(data)
            try:
                server.do_handshake()
            except SSL.WantReadError:
                pass
            except SSL.Error:
                break
            try:
                protocol.dataReceived(server.bio_read(65536))
            except SSL.WantReadError:
                pass
        self.assertEqual(server.get_servername(), DOMAIN.encode())
        return offered, self.successResultOf(connected), transport

    def test_directTLS(self) -> None:
        """
        C{tls:HOST:PORT} connects there, TLS from the first byte with the
        session's options: the JID's domain as SNI and verified, ALPN
        xmpp-client; the stream sees an ISSLTransport (so no STARTTLS).
        """
        offered, app, transport = self.handshake([DOMAIN])
        # Once per ClientHello: this server prefers X25519MLKEM768, for
        # which the client sent no key share (a HelloRetryRequest).
        self.assertEqual(set(offered), {ALPN_XMPP_CLIENT})
        self.assertTrue(ISSLTransport.providedBy(app.transport))
        self.assertEqual(app.transport.negotiatedProtocol, ALPN_XMPP_CLIENT)
        self.assertFalse(transport.disconnecting)

    def test_directTLSVerifies(self) -> None:
        """
        A certificate for another name is refused: never unverified.
        """
        _, _, transport = self.handshake(["other.test"])
        self.assertTrue(transport.disconnecting)

    def test_directTLSNeedsOptions(self) -> None:
        e = self.assertRaises(ValueError, makeEndpoint, self.reactor, "tls:h.test:5223", DOMAIN)
        self.assertIn("needs the session's TLS options", str(e))

    def test_srv(self) -> None:
        for server in ("", "srv", "SRV"):
            self.assertIsInstance(makeEndpoint(self.reactor, server, DOMAIN,
                                               resolver=FakeResolver({})), SRVEndpoint)
