"""
Tests for L{sipxmpp.xmpp.tls.ResumingTLSOptions}: handshakes in memory
against a pyOpenSSL server that issues session tickets.
"""

from __future__ import annotations

from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _openssl
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from sipxmpp.testing.tls import TestCA
from sipxmpp.xmpp.tls import ResumingTLSOptions, clientTLSOptions, loadTrustRoot, tlsConnection

DOMAIN = "example.test"
X25519 = 0x001D
KEY_SHARE = 0x0033


def keyShares(record: bytes) -> list[int]:
    """
    Return the groups of the key shares in the ClientHello that starts
    the TLS C{record} (RFC 8446 4.1.2, 4.2.8).
    """
    at = 5 + 4 + 2 + 32  # record and handshake headers, version, random
    at += 1 + record[at]  # session id
    at += 2 + int.from_bytes(record[at:at + 2])  # cipher suites
    at += 1 + record[at]  # compression methods
    end = at + 2 + int.from_bytes(record[at:at + 2])
    at += 2
    while at < end:
        kind, size = int.from_bytes(record[at:at + 2]), int.from_bytes(record[at + 2:at + 4])
        if kind == KEY_SHARE:
            shares, share = [], at + 6
            while share < at + 4 + size:
                shares.append(int.from_bytes(record[share:share + 2]))
                share += 4 + int.from_bytes(record[share + 2:share + 4])
            return shares
        at += 4 + size
    return []


def group(protocol: TLSMemoryBIOProtocol) -> bytes:
    connection = tlsConnection(protocol)
    assert connection is not None
    name = _openssl.SSL_get0_group_name(connection._ssl)
    return bytes(_ffi.string(name)) if name else b""


class TLSCase(SynchronousTestCase):
    """
    Handshakes of a session's TLS options with an in-memory server.
    """

    def setUp(self) -> None:
        ca = TestCA(self.mktemp())
        self.certificate = ca.issue([DOMAIN], self.mktemp(), "server")
        self.context = self.serverContext()
        self.options = ResumingTLSOptions(clientTLSOptions(DOMAIN, loadTrustRoot(ca.caFile)))

    def serverContext(self, maxVersion: int | None = None, groups: bytes = b"") -> SSL.Context:
        """
        A server's context: one per server, as its ticket key is what lets
        it resume.
        """
        context = SSL.Context(SSL.TLS_METHOD)
        context.use_certificate_file(self.certificate.certFile)
        context.use_privatekey_file(self.certificate.keyFile)
        if maxVersion is not None:
            context.set_max_proto_version(maxVersion)
        if groups and not _openssl.SSL_CTX_set1_curves_list(context._context, groups):
            raise SkipTest(f"this OpenSSL does not know the groups {groups!r}")
        return context

    def connect(self) -> tuple[TLSMemoryBIOProtocol, StringTransport]:
        """
        Run a handshake (and the server's session tickets) in memory with
        the options; return the client's TLS protocol and TCP transport.
        """
        factory = TLSMemoryBIOFactory(self.options, True, Factory.forProtocol(Protocol))
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        server = SSL.Connection(self.context, None)
        server.set_accept_state()
        self.clientHello = transport.value()
        for _ in range(20):
            data, _ = transport.value(), transport.clear()
            if data:
                server.bio_write(data)
            try:
                server.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                protocol.dataReceived(server.bio_read(65536))
            except SSL.WantReadError:
                pass
        self.assertFalse(transport.disconnecting)
        return protocol, transport

    def resumed(self, protocol: TLSMemoryBIOProtocol) -> bool:
        connection = tlsConnection(protocol)
        assert connection is not None
        # pyOpenSSL has no SSL_session_reused.
        return bool(_openssl.SSL_session_reused(connection._ssl))


class ResumingTLSOptionsTests(TLSCase):
    def test_resumes(self) -> None:
        """
        The session of a connection remembered is offered by the next one,
        and the server resumes it; each one remembered replaces the last.
        """
        first, _ = self.connect()
        self.assertFalse(self.resumed(first))
        self.assertIsNone(self.options.session)
        self.options.remember(first)
        self.assertIsNotNone(self.options.session)
        second, _ = self.connect()
        self.assertTrue(self.resumed(second))
        kept = self.options.session
        self.options.remember(second)
        self.assertIsNot(self.options.session, kept)
        third, _ = self.connect()
        self.assertTrue(self.resumed(third))

    def test_notRemembered(self) -> None:
        """
        Without a session remembered, every handshake is a full one.
        """
        self.connect()
        second, _ = self.connect()
        self.assertFalse(self.resumed(second))

    def test_notTLS12(self) -> None:
        """
        A TLS 1.2 session is not kept (resuming would change tls-unique),
        and remembering one forgets a session kept before.
        """
        first, _ = self.connect()
        self.options.remember(first)
        self.context = self.serverContext(SSL.TLS1_2_VERSION)
        old, _ = self.connect()
        self.options.remember(old)
        self.assertIsNone(self.options.session)
        again, _ = self.connect()
        self.assertFalse(self.resumed(again))

    def test_notTLS(self) -> None:
        """
        A transport without TLS (BOSH, a test stub) changes nothing.
        """
        first, _ = self.connect()
        self.options.remember(first)
        kept = self.options.session
        self.options.remember(StringTransport())
        self.assertIs(self.options.session, kept)


class KeyExchangeTests(TLSCase):
    """
    L{clientTLSOptions} sends one key share, X25519's, and still offers
    the hybrid post-quantum group.
    """

    def test_oneKeyShare(self) -> None:
        """
        A server without X25519MLKEM768 (Prosody 0.12's list) gets X25519.
        """
        self.context = self.serverContext(groups=b"X25519:P-384:P-256:P-521")
        protocol, _ = self.connect()
        self.assertEqual(keyShares(self.clientHello), [X25519])
        self.assertEqual(group(protocol), b"x25519")

    def test_postQuantum(self) -> None:
        """
        A server that prefers X25519MLKEM768 (in a tuple of its own, as in
        OpenSSL 3.5's default list) asks for its share and gets it.
        """
        self.context = self.serverContext(groups=b"X25519MLKEM768 / X25519")
        protocol, _ = self.connect()
        self.assertEqual(group(protocol), b"X25519MLKEM768")
