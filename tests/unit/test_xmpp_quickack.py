"""
Tests for L{sipxmpp.xmpp.quickack}: which socket gets C{TCP_QUICKACK} and
when. The kernel does not report the option reliably (it is not sticky), so
the sockets here record the calls instead; a live session over STARTTLS and
Direct TLS is L{tests.integration.test_xmpp_quickack}.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import xmlstream
from zope.interface import implementer

from sipxmpp.xmpp import quickack
from sipxmpp.xmpp.quickack import QuickAck, ackEachRead
from sipxmpp.xmpp.session import SessionSettings, XMPPSession
from tests.unit.test_xmpp_session import PASSWORD, Server

SET = (socket.IPPROTO_TCP, getattr(socket, "TCP_QUICKACK", -1), 1)


class RecordingSocket:
    """
    Stands in for the connection's socket: records C{setsockopt}.
    """

    def __init__(self, error: OSError | None = None) -> None:
        self.calls: list[tuple[int, int, int]] = []
        self.error = error

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.calls.append((level, option, value))
        if self.error is not None:
            raise self.error


class TCP(StringTransport):
    """
    A TCP transport whose handle is C{sock}.
    """

    def __init__(self, sock: Any) -> None:
        super().__init__()
        self.sock = sock

    def getHandle(self) -> Any:
        return self.sock


class TLS(StringTransport):
    """
    Twisted's TLS layer as a stream sees it: its handle is the OpenSSL
    connection (no socket), the TCP transport is under it.
    """

    def __init__(self, tcp: TCP) -> None:
        super().__init__()
        self.transport = tcp

    def getHandle(self) -> object:
        return object()


def stream(transport: Any) -> tuple[xmlstream.XmlStream, list[str]]:
    xs = xmlstream.XmlStream()
    elements: list[str] = []
    xs.addObserver("/*", lambda element: elements.append(element.name))
    xs.makeConnection(transport)
    return xs, elements


class AckEachReadTests(SynchronousTestCase):
    if quickack.TCP_QUICKACK is None:
        skip = "TCP_QUICKACK is Linux only"

    def test_setAfterEachRead(self) -> None:
        """
        Every read sets the option once, and the data is still parsed.
        """
        sock = RecordingSocket()
        xs, elements = stream(TCP(sock))
        hook = ackEachRead(xs)
        self.assertIsInstance(hook, QuickAck)
        self.assertEqual(sock.calls, [])
        xs.dataReceived(b"<stream>")
        xs.dataReceived(b"<a/><b/>")
        xs.dataReceived(b"<c")
        self.assertEqual(sock.calls, [SET] * 3)
        self.assertEqual(elements, ["a", "b"])

    def test_socketUnderTLS(self) -> None:
        """
        Under TLS the option goes on the TCP connection's socket.
        """
        sock = RecordingSocket()
        xs, _ = stream(TLS(TCP(sock)))
        hook = ackEachRead(xs)
        assert hook is not None
        self.assertIs(hook.socket, sock)
        xs.dataReceived(b"<stream>")
        self.assertEqual(sock.calls, [SET])

    def test_noSocket(self) -> None:
        """
        A transport without a socket (BOSH's) is left as it was.
        """
        xs, _ = stream(StringTransport())
        self.assertIsNone(ackEachRead(xs))
        self.assertIsNone(xs.rawDataInFn)

    def test_previousRawDataInFn(self) -> None:
        """
        A C{rawDataInFn} already set (traffic logging) still gets the data,
        after the option is set.
        """
        sock = RecordingSocket()
        xs, _ = stream(TCP(sock))
        seen: list[tuple[bytes, int]] = []
        xs.rawDataInFn = lambda data: seen.append((data, len(sock.calls)))
        ackEachRead(xs)
        xs.dataReceived(b"<stream>")
        self.assertEqual(seen, [(b"<stream>", 1)])

    def test_once(self) -> None:
        """
        Asked again for the same stream, it keeps the one hook.
        """
        sock = RecordingSocket()
        xs, _ = stream(TCP(sock))
        first = ackEachRead(xs)
        self.assertIs(ackEachRead(xs), first)
        xs.dataReceived(b"<stream>")
        self.assertEqual(sock.calls, [SET])

    def test_closedSocket(self) -> None:
        """
        A socket closed meanwhile (EBADF) does not stop the data.
        """
        sock = RecordingSocket(OSError(9, "Bad file descriptor"))
        xs, elements = stream(TCP(sock))
        ackEachRead(xs)
        xs.dataReceived(b"<stream><a/>")
        self.assertEqual(elements, ["a"])

    def test_notLinux(self) -> None:
        """
        Where the option does not exist, nothing is changed.
        """
        self.patch(quickack, "TCP_QUICKACK", None)
        sock = RecordingSocket()
        xs, _ = stream(TCP(sock))
        self.assertIsNone(ackEachRead(xs))
        xs.dataReceived(b"<stream>")
        self.assertEqual(sock.calls, [])


@implementer(IStreamClientEndpoint)
class SocketEndpoint:
    def __init__(self, sock: RecordingSocket) -> None:
        self.sock = sock
        self.protocols: list[Any] = []

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        protocol.makeConnection(TCP(self.sock))
        self.protocols.append(protocol)
        return defer.succeed(protocol)


class SessionTests(SynchronousTestCase):
    if quickack.TCP_QUICKACK is None:
        skip = "TCP_QUICKACK is Linux only"

    def test_sessionStreamAcksEachRead(self) -> None:
        """
        The gateway's session arms its stream when it connects: each read
        from the server sets the option on the connection's socket.
        """
        sock = RecordingSocket()
        endpoint = SocketEndpoint(sock)
        session = XMPPSession(Clock(), JID("alice@example.test"), PASSWORD,
                              SessionSettings(requireTLS=False, failedRetryDelay=600),
                              tlsOptions=object(),  # type: ignore[arg-type]
                              endpoint=endpoint, jitter=lambda: 0.5)  # fmt: skip
        session.start()
        [protocol] = endpoint.protocols
        server = Server(protocol, protocol.transport)
        server.authenticate()
        server.bind()
        self.assertEqual(session.state, "connected")
        # authenticate's three reads and bind's two.
        self.assertEqual(sock.calls, [SET] * 5)
