"""
Tests for L{sipxmpp.sip.shell.transport}: the UDP, TCP and TLS shells, without
sockets (but L{NoDelayTests}, which asks a real loopback socket).  Stream connections run over L{StringTransport}, outbound ones are
made through L{MemoryReactorClock}, UDP writes go to a fake datagram
transport, and every timer runs on the reactor's clock.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionRefusedError, MessageLengthError
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sipxmpp.ops.metrics import Metrics
from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.shell import transport as transportModule
from sipxmpp.sip.shell.endpoints import parseListen
from sipxmpp.sip.shell.transport import (
    MAX_DATAGRAM,
    SIPDatagramProtocol,
    SIPStreamFactory,
    SIPStreamProtocol,
    SIPTransports,
    receiveBufferFill,
    setReceiveBuffer,
)
from sipxmpp.sip.wire.message import SIPRequest, SIPResponse
from sipxmpp.sip.wire.parser import parseMessage
from sipxmpp.testing.tls import TestCA

PHONE_ADDR = ("127.0.0.7", 5099)
UPSTREAM = Peer("TCP", "127.0.0.1", 5070)


def request(method: str = "OPTIONS", callID: str = "c1", cseq: str | None = None,
            body: bytes = b"", contentLength: int | None = None,
            via: str = "SIP/2.0/UDP 127.0.0.7:5099;branch=z9hG4bKabc;rport") -> bytes:
    """
    A small request; C{cseq} and C{contentLength} can be made malformed.
    """
    length = len(body) if contentLength is None else contentLength
    return (
        f"{method} sip:example.test SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.test>;tag=f1\r\n"
        "To: <sip:bob@example.test>\r\n"
        f"Call-ID: {callID}\r\n"
        f"CSeq: {cseq if cseq is not None else '1 ' + method}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode() + body


def response(code: int = 200, callID: str = "r1") -> bytes:
    return (
        f"SIP/2.0 {code} OK\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKxyz\r\n"
        "From: <sip:alice@example.test>;tag=f1\r\n"
        "To: <sip:bob@example.test>;tag=t1\r\n"
        f"Call-ID: {callID}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class FakeDatagramTransport:
    """
    What a listening UDP port offers the protocol: C{write(data, addr)};
    writes are recorded, or fail with C{error} when it is set.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 5060) -> None:
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.error: BaseException | None = None
        self._host = (host, port)

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.error is not None:
            raise self.error
        self.written.append((data, addr))

    def getHost(self) -> IPv4Address | IPv6Address:
        if ":" in self._host[0]:
            return IPv6Address("UDP", *self._host)
        return IPv4Address("UDP", *self._host)

    def stopListening(self) -> None:
        pass


class UDPMemoryReactor(MemoryReactorClock):
    """
    L{MemoryReactorClock} with C{listenUDP}: the protocol gets a
    L{FakeDatagramTransport} at once.
    """

    def __init__(self) -> None:
        super().__init__()
        self.udp: list[tuple[int, Any, str, FakeDatagramTransport]] = []

    def listenUDP(self, port: int, protocol: Any, interface: str = "",
                  maxPacketSize: int = 8192) -> FakeDatagramTransport:
        fake = FakeDatagramTransport(interface or "0.0.0.0", port or 40000 + len(self.udp))
        protocol.makeConnection(fake)
        self.udp.append((port, protocol, interface, fake))
        return fake


class TransportTestCase(SynchronousTestCase):
    """
    A L{SIPTransports} on a memory reactor whose handler records what it
    is given.
    """

    def setUp(self) -> None:
        self.reactor = UDPMemoryReactor()
        self.metrics = Metrics()
        self.transports = SIPTransports(self.reactor, (), self.metrics,
                                        idleTimeout=30.0, maxConnections=3)
        self.received: list[tuple[SIPRequest | SIPResponse, Peer]] = []
        self.transports.handler = lambda message, peer: self.received.append((message, peer))
        self.failedPeers: list[Peer] = []
        self.transports.onDeliveryFailed = self.failedPeers.append

    def udp(self) -> tuple[SIPDatagramProtocol, FakeDatagramTransport]:
        protocol = SIPDatagramProtocol(self.transports)
        fake = FakeDatagramTransport()
        protocol.makeConnection(fake)  # type: ignore[arg-type]
        self.transports._udp[4] = protocol
        return protocol, fake

    def inbound(self, host: str = "127.0.0.7", port: int = 40001,
                transportName: str = "TCP") -> tuple[SIPStreamProtocol, StringTransport]:
        """
        A connection a phone opened to one of our stream listeners.
        """
        factory = SIPStreamFactory(self.transports, transportName)
        address = (IPv6Address if ":" in host else IPv4Address)("TCP", host, port)
        protocol = factory.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        return protocol, transport

    def completeConnection(self, index: int = 0) -> tuple[Any, StringTransport]:
        """
        Let the reactor's C{index}th outbound connection attempt succeed.
        """
        host, port, factory, _, _ = self.reactor.tcpClients[index]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        assert protocol is not None
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
        protocol.makeConnection(transport)
        return protocol, transport

    def counter(self, name: str, **labels: str) -> float:
        return self.metrics.value(name, **labels)


class StreamFramingTests(TransportTestCase):
    """
    Bytes from a stream become messages by Content-Length, whatever the
    chunks.
    """

    def test_messageAcrossChunks(self) -> None:
        """
        A message split anywhere, even inside the CRLFCRLF and inside the
        body, is handed over once, complete, with the connection's peer.
        """
        protocol, _ = self.inbound()
        data = request(method="MESSAGE", body=b"hello world")
        cut = data.index(b"\r\n\r\n") + 2
        for chunk in (data[:10], data[10:cut], data[cut:-4], data[-4:]):
            self.assertEqual(self.received, [])
            protocol.dataReceived(chunk)
        self.assertEqual(len(self.received), 1)
        message, peer = self.received[0]
        assert isinstance(message, SIPRequest)
        self.assertEqual((message.method, message.body), ("MESSAGE", b"hello world"))
        self.assertEqual(peer, Peer("TCP", "127.0.0.7", 40001))

    def test_severalMessagesInOneChunk(self) -> None:
        """
        Two messages and the start of a third in one chunk: two now, the
        third when its rest arrives, in order.
        """
        protocol, _ = self.inbound()
        third = request(callID="c3")
        protocol.dataReceived(request(callID="c1") + response(callID="c2") + third[:20])
        self.assertEqual([m.callID for m, _ in self.received], ["c1", "c2"])
        protocol.dataReceived(third[20:])
        self.assertEqual([m.callID for m, _ in self.received], ["c1", "c2", "c3"])

    def test_keepAlivePong(self) -> None:
        """
        Each CRLFCRLF ping between messages is answered with one CRLF (RFC
        5626 §3.5.1); a message after the pings is still framed.
        """
        protocol, transport = self.inbound()
        protocol.dataReceived(b"\r\n\r\n")
        self.assertEqual(transport.value(), b"\r\n")
        protocol.dataReceived(b"\r\n\r\n\r\n")
        protocol.dataReceived(b"\r\n" + request())
        self.assertEqual(transport.value(), b"\r\n" * 3)
        self.assertEqual(len(self.received), 1)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.counter("sipxmpp_sip_malformed_total", transport="TCP",
                                      kind="request"), 0)

    def test_unframeableStreamAnsweredThenClosed(self) -> None:
        """
        A request with a negative Content-Length cannot be framed: it is
        answered 400 with its Via, From, To, Call-ID and CSeq, counted, and
        the connection is closed; the handler never sees it.
        """
        protocol, transport = self.inbound()
        protocol.dataReceived(request(callID="neg-cl", contentLength=-5))
        answer = parseMessage(transport.value(), datagram=False)
        assert isinstance(answer, SIPResponse)
        self.assertEqual(answer.code, 400)
        self.assertEqual(answer.callID, "neg-cl")
        self.assertEqual(answer.topVia.branch, "z9hG4bKabc")
        self.assertEqual(tuple(answer.cseq), (1, "OPTIONS"))
        self.assertIsNotNone(answer.toTag)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.received, [])
        self.assertEqual(self.counter("sipxmpp_sip_malformed_total", transport="TCP",
                                      kind="request"), 1)

    def test_noContentLengthOnStream(self) -> None:
        """
        A request without Content-Length cannot be framed on a stream: 400,
        then close.
        """
        protocol, transport = self.inbound()
        data = request().replace(b"Content-Length: 0\r\n", b"")
        protocol.dataReceived(data)
        self.assertTrue(transport.value().startswith(b"SIP/2.0 400 "), transport.value())
        self.assertTrue(transport.disconnecting)

    def test_unframeableResponseClosedSilently(self) -> None:
        """
        A response that cannot be framed is not answered; the connection
        is closed.
        """
        protocol, transport = self.inbound()
        protocol.dataReceived(response().replace(b"Content-Length: 0", b"Content-Length: x"))
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.counter("sipxmpp_sip_malformed_total", transport="TCP",
                                      kind="response"), 1)

    def test_nothingAfterTheStreamBroke(self) -> None:
        """
        Once the stream could not be framed, bytes that still arrive (TLS
        delivers every record already decrypted even after loseConnection)
        are ignored: one answer, one count, nothing handled.
        """
        protocol, transport = self.inbound(transportName="TLS")
        protocol.dataReceived(request(callID="bad", contentLength=-1))
        first = transport.value()
        protocol.dataReceived(b"more of the same\r\n\r\n")
        protocol.dataReceived(request(callID="good"))
        self.assertEqual(transport.value(), first)
        self.assertEqual(first.count(b"SIP/2.0 400 "), 1)
        self.assertEqual(self.received, [])
        self.assertEqual(self.counter("sipxmpp_sip_malformed_total", transport="TLS",
                                      kind="request"), 1)

    def test_goodMessagesBeforeTheBreakThenClose(self) -> None:
        """
        A chunk with a good request and then one that breaks the framing:
        the good one is handled, then the bad one is answered 400 and the
        connection closed at once, without waiting for more bytes.
        """
        protocol, transport = self.inbound()
        protocol.dataReceived(request(callID="good") + request(callID="neg", contentLength=-3))
        self.assertEqual([m.callID for m, _ in self.received], ["good"])
        answer = transport.value()
        self.assertTrue(answer.startswith(b"SIP/2.0 400 "), answer)
        self.assertIn(b"\r\nCall-ID: neg\r\n", answer)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.counter("sipxmpp_sip_malformed_total", transport="TCP",
                                      kind="request"), 1)
        protocol.dataReceived(request(callID="late"))
        self.assertEqual(transport.value(), answer)
        self.assertEqual(len(self.received), 1)

    def test_framedMalformedRequestKeepsConnection(self) -> None:
        """
        A request that frames but does not parse (bad CSeq) is answered 400
        on the same connection, which stays open for the next message.
        """
        protocol, transport = self.inbound()
        protocol.dataReceived(request(callID="bad-cseq", cseq="one OPTIONS"))
        answer = transport.value()
        self.assertTrue(answer.startswith(b"SIP/2.0 400 "), answer)
        self.assertIn(b"\r\nCall-ID: bad-cseq\r\n", answer)
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(request(callID="next"))
        self.assertEqual([m.callID for m, _ in self.received], ["next"])

    def test_tlsPeerNamedTLS(self) -> None:
        """
        Messages from a TLS listener come from a TLS peer, IPv6 too.
        """
        protocol, _ = self.inbound(host="::1", port=40443, transportName="TLS")
        protocol.dataReceived(request())
        self.assertEqual(self.received[0][1], Peer("TLS", "::1", 40443))
        self.assertIs(self.transports.connections[Peer("TLS", "::1", 40443)], protocol)


class ConnectionLimitTests(TransportTestCase):
    """
    Connections are capped, time out when idle, and are forgotten when lost.
    """

    def test_capRefusesConnections(self) -> None:
        """
        With three open, a fourth inbound connection is aborted and counted;
        once one closes, a new one is accepted.
        """
        opened = [self.inbound(port=40001 + i) for i in range(3)]
        refusedProtocol, refused = self.inbound(port=40100)
        self.assertTrue(refused.disconnected)
        self.assertFalse(any(t.disconnected or t.disconnecting for _, t in opened))
        self.assertEqual(len(self.transports.connections), 3)
        self.assertNotIn(Peer("TCP", "127.0.0.7", 40100), self.transports.connections)
        self.assertEqual(self.counter("sipxmpp_sip_connections_refused_total"), 1)
        refusedProtocol.connectionLost(Failure(ConnectionRefusedError()))
        self.assertEqual(len(self.transports.connections), 3)
        opened[0][0].connectionLost(Failure(ConnectionRefusedError()))
        _, accepted = self.inbound(port=40101)
        self.assertFalse(accepted.disconnected)
        self.assertEqual(len(self.transports.connections), 3)

    def test_idleTimeoutOnTheReactorClock(self) -> None:
        """
        A connection with no traffic for C{idleTimeout} seconds of the
        injected reactor's clock is closed; traffic restarts the count.
        """
        protocol, transport = self.inbound()
        self.reactor.advance(29)
        protocol.dataReceived(b"\r\n\r\n")
        self.reactor.advance(29)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(1.5)
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionRefusedError()))
        self.assertEqual(self.transports.connections, {})
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_closeAbortsAfterGrace(self) -> None:
        """
        A connection we close (idle, or its stream broke) is aborted if it
        is not gone C{closeGrace} seconds later: a TLS peer that never
        answers close_notify, or a TCP peer that stops reading, cannot keep
        it (and its place under the cap) forever.
        """
        idle, idleTransport = self.inbound(port=40001)
        broken, brokenTransport = self.inbound(port=40002)
        self.reactor.advance(29)
        broken.dataReceived(request(contentLength=-1))
        self.reactor.advance(1)
        self.assertTrue(idleTransport.disconnecting and brokenTransport.disconnecting)
        self.assertFalse(idleTransport.disconnected or brokenTransport.disconnected)
        self.reactor.advance(self.transports.closeGrace)
        self.assertTrue(idleTransport.disconnected)
        self.assertTrue(brokenTransport.disconnected)

    def test_noAbortOnceClosed(self) -> None:
        """
        A connection that closes within the grace is not aborted, and
        leaves no timer behind.
        """
        protocol, transport = self.inbound()
        protocol.dataReceived(request(contentLength=-1))
        protocol.connectionLost(Failure(ConnectionRefusedError()))
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.reactor.advance(self.transports.closeGrace + 1)
        self.assertFalse(transport.disconnected)

    def test_outboundConnectionIdleTimeout(self) -> None:
        """
        Our own connections to the upstream time out on the same clock.
        """
        self.transports.send(b"x", UPSTREAM)
        _, transport = self.completeConnection()
        self.reactor.advance(31)
        self.assertTrue(transport.disconnecting)

    def test_stopServiceClosesConnections(self) -> None:
        """
        Stopping the service closes every connection it holds, aborting
        those still there after the grace.
        """
        self.transports.startService()
        _, transport = self.inbound()
        self.transports.stopService()
        self.assertTrue(transport.disconnecting)
        self.reactor.advance(self.transports.closeGrace)
        self.assertTrue(transport.disconnected)


class ContainmentTests(TransportTestCase):
    """
    Nothing a peer sends, and no bug behind the handler, escapes the shells.
    """

    def test_handlerExceptionContainedUDP(self) -> None:
        """
        A handler that raises costs that one datagram: it is counted and
        logged, and the next datagram is handled.
        """
        protocol, _ = self.udp()
        calls: list[str] = []

        def handler(message: SIPRequest | SIPResponse, peer: Peer) -> None:
            calls.append(message.callID)
            if len(calls) == 1:
                raise ZeroDivisionError("handler bug")

        self.transports.handler = handler
        protocol.datagramReceived(request(callID="boom"), PHONE_ADDR)
        protocol.datagramReceived(request(callID="after"), PHONE_ADDR)
        self.assertEqual(calls, ["boom", "after"])
        self.assertEqual(self.counter("sipxmpp_sip_handler_errors_total"), 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_handlerExceptionContainedStream(self) -> None:
        """
        Over a stream, the connection survives a handler that raises.
        """
        protocol, transport = self.inbound()
        def handler(message: SIPRequest | SIPResponse, peer: Peer) -> None:
            raise ZeroDivisionError("handler bug")

        self.transports.handler = handler
        protocol.dataReceived(request() + request(callID="c2"))
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.counter("sipxmpp_sip_handler_errors_total"), 2)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)

    def test_parserBugContained(self) -> None:
        """
        Should the parser itself raise something other than SIPParseError,
        the message is counted as malformed and dropped; the UDP listener
        and the stream connection go on.
        """
        def broken(data: bytes, *args: Any, **kwargs: Any) -> Any:
            raise IndexError("parser bug")

        self.patch(transportModule, "parseMessage", broken)
        protocol, fake = self.udp()
        protocol.datagramReceived(request(), PHONE_ADDR)
        stream, transport = self.inbound()
        stream.dataReceived(request())
        self.assertEqual(fake.written, [])
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.counter("sipxmpp_sip_malformed_total", transport="UDP",
                                      kind="unknown"), 1)
        self.assertEqual(self.counter("sipxmpp_sip_malformed_total", transport="TCP",
                                      kind="unknown"), 1)
        self.assertEqual(len(self.flushLoggedErrors(IndexError)), 2)


class DatagramTests(TransportTestCase):
    """
    UDP: one datagram, one message; answers go back to the source address.
    """

    def test_messageHandedOverWithPeer(self) -> None:
        protocol, fake = self.udp()
        protocol.datagramReceived(request(), PHONE_ADDR)
        self.assertEqual(self.received[0][1], Peer("UDP", *PHONE_ADDR))
        self.assertEqual(fake.written, [])
        self.assertEqual(self.counter("sipxmpp_sip_messages_received_total", transport="UDP"), 1)

    def test_malformedRequestAnsweredToSource(self) -> None:
        """
        A request with a bad CSeq is answered 400 to the address it came
        from (not to its Via's sent-by), with its Via and Call-ID, and
        counted; the handler never sees it.
        """
        protocol, fake = self.udp()
        data = request(callID="bad-cseq@x", cseq="99999999999999999999 OPTIONS",
                       via="SIP/2.0/UDP 127.0.0.99:6000;branch=z9hG4bKviaA")
        protocol.datagramReceived(data, PHONE_ADDR)
        self.assertEqual(len(fake.written), 1)
        answer, addr = fake.written[0]
        self.assertEqual(addr, PHONE_ADDR)
        # The CSeq is echoed as received, so the answer does not parse either.
        self.assertTrue(answer.startswith(b"SIP/2.0 400 "), answer)
        self.assertIn(b"\r\nVia: SIP/2.0/UDP 127.0.0.99:6000;branch=z9hG4bKviaA\r\n", answer)
        self.assertIn(b"\r\nCall-ID: bad-cseq@x\r\n", answer)
        self.assertIn(b"\r\nCSeq: 99999999999999999999 OPTIONS\r\n", answer)
        self.assertEqual(self.received, [])
        self.assertEqual(self.counter("sipxmpp_sip_malformed_total", transport="UDP",
                                      kind="request"), 1)

    def test_malformedResponseDropped(self) -> None:
        protocol, fake = self.udp()
        protocol.datagramReceived(response(code=2000), PHONE_ADDR)
        protocol.datagramReceived(b"SIP/2.0 200 OK\r\ngarbage\r\n\r\n", PHONE_ADDR)
        self.assertEqual(fake.written, [])
        self.assertEqual(self.received, [])
        self.assertEqual(self.counter("sipxmpp_sip_malformed_total", transport="UDP",
                                      kind="response"), 2)

    def test_malformedACKNotAnswered(self) -> None:
        protocol, fake = self.udp()
        protocol.datagramReceived(request(method="ACK", cseq="x ACK"), PHONE_ADDR)
        self.assertEqual(fake.written, [])
        self.assertEqual(self.counter("sipxmpp_sip_malformed_total", transport="UDP",
                                      kind="request"), 1)

    def test_keepAliveIgnored(self) -> None:
        protocol, fake = self.udp()
        for ping in (b"\r\n\r\n", b"\r\n", b"\x00", b""):
            protocol.datagramReceived(ping, PHONE_ADDR)
        self.assertEqual((fake.written, self.received), ([], []))
        self.assertEqual(self.counter("sipxmpp_sip_messages_received_total", transport="UDP"), 0)

    def test_answerWriteFailureContained(self) -> None:
        """
        If the error response itself cannot be sent, that is logged and
        counted; nothing is raised into the reactor.
        """
        protocol, fake = self.udp()
        fake.error = OSError(errno.EINVAL, "Invalid argument")
        with capturedLogs() as events:
            protocol.datagramReceived(request(cseq="x OPTIONS"), ("127.0.0.7", 0))
        self.assertEqual(self.counter("sipxmpp_sip_send_failures_total", transport="UDP"), 1)
        self.assertTrue(any("cannot send" in e.get("log_format", "") for e in events))


class SendTests(TransportTestCase):
    """
    Sending: UDP from the listening socket of the peer's IP version, stream
    connections reused per peer, opened when there is none.
    """

    def test_udpFromTheListenerOfTheRightFamily(self) -> None:
        """
        With listeners on 127.0.0.1 and ::1 (from udp: descriptions), IPv4
        peers get datagrams from the first and IPv6 peers from the second.
        """
        specs = (parseListen("udp:5060:interface=127.0.0.1"),
                 parseListen("udp:5062:interface=\\:\\:1"))
        transports = SIPTransports(self.reactor, specs, self.metrics)
        transports.startService()
        v4 = self.reactor.udp[0][3]
        v6 = self.reactor.udp[1][3]
        self.assertEqual([(p, i) for p, _, i, _ in self.reactor.udp],
                         [(5060, "127.0.0.1"), (5062, "::1")])
        transports.send(b"four", Peer("UDP", "127.0.0.7", 5080))
        transports.send(b"six", Peer("UDP", "::1", 5080))
        self.assertEqual(v4.written, [(b"four", ("127.0.0.7", 5080))])
        self.assertEqual(v6.written, [(b"six", ("::1", 5080))])
        self.assertEqual(transports.localPorts(), {"UDP": 5060})

    def test_udpWithoutListenerOfThatFamily(self) -> None:
        _, fake = self.udp()
        self.transports.send(b"six", Peer("UDP", "::1", 5080))
        self.assertEqual(fake.written, [])
        self.assertEqual(self.counter("sipxmpp_sip_send_failures_total", transport="UDP"), 1)

    def test_udpTooLarge(self) -> None:
        _, fake = self.udp()
        self.transports.send(b"x" * (MAX_DATAGRAM + 1), Peer("UDP", "127.0.0.7", 5080))
        self.assertEqual(fake.written, [])
        self.assertEqual(self.counter("sipxmpp_sip_send_failures_total", transport="UDP"), 1)

    def test_udpSendErrorContained(self) -> None:
        """
        A socket error on send (ENETUNREACH, EACCES for a broadcast address,
        EMSGSIZE) does not escape into the proxy or the reactor: it is
        logged as "cannot send", counted, and reported as a delivery failure
        (in the next turn of the reactor).
        """
        _, fake = self.udp()
        peer = Peer("UDP", "127.0.0.7", 5080)
        for error in (OSError(errno.ENETUNREACH, "Network is unreachable"),
                      OSError(errno.EACCES, "Permission denied"),
                      MessageLengthError("message too long")):
            fake.error = error
            with capturedLogs() as events:
                self.transports.send(b"data", peer)
            self.assertTrue(any("cannot send" in e.get("log_format", "") for e in events),
                            events)
        self.assertEqual(self.counter("sipxmpp_sip_send_failures_total", transport="UDP"), 3)
        self.assertEqual(self.failedPeers, [])
        self.reactor.advance(0)
        self.assertEqual(self.failedPeers, [peer] * 3)

    def test_replyOverTheInboundConnection(self) -> None:
        """
        Sending to a phone's peer writes on the connection it opened; no
        new connection is made.
        """
        _, transport = self.inbound()
        self.transports.send(b"reply", Peer("TCP", "127.0.0.7", 40001))
        self.assertEqual(transport.value(), b"reply")
        self.assertEqual(self.reactor.tcpClients, [])

    def test_pendingQueueThenReuse(self) -> None:
        """
        Messages for a peer with no connection wait while one connection is
        opened, go out in order once it is up, and later messages reuse it.
        """
        self.transports.send(b"one", UPSTREAM)
        self.transports.send(b"two", UPSTREAM)
        self.assertEqual([(h, p) for h, p, *_ in self.reactor.tcpClients], [("127.0.0.1", 5070)])
        protocol, transport = self.completeConnection()
        self.assertEqual(transport.value(), b"onetwo")
        self.transports.send(b"three", UPSTREAM)
        self.assertEqual(transport.value(), b"onetwothree")
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertIn(UPSTREAM, self.transports.connections)
        # What the upstream sends back comes from the upstream's own peer.
        self.transports.connections[UPSTREAM].dataReceived(response())
        self.assertEqual(self.received[0][1], UPSTREAM)

    def test_connectFailureReportsDelivery(self) -> None:
        """
        When the connection cannot be made, the queued messages are dropped,
        the failure is counted and the handler is told; the next message
        tries again.
        """
        self.transports.send(b"one", UPSTREAM)
        self.transports.send(b"two", UPSTREAM)
        factory = self.reactor.tcpClients[0][2]
        factory.clientConnectionFailed(self.reactor.connectors[0], Failure(ConnectionRefusedError()))
        self.assertEqual(self.failedPeers, [UPSTREAM])
        self.assertEqual(self.counter("sipxmpp_sip_send_failures_total", transport="TCP"), 1)
        self.transports.send(b"three", UPSTREAM)
        self.assertEqual(len(self.reactor.tcpClients), 2)
        _, transport = self.completeConnection(1)
        self.assertEqual(transport.value(), b"three")

    def test_ipv6Upstream(self) -> None:
        peer = Peer("TCP", "::1", 5070)
        self.transports.send(b"six", peer)
        self.assertEqual(self.reactor.tcpClients[0][:2], ("::1", 5070))

    def test_noTLSConnectionReportsDelivery(self) -> None:
        """
        We never open TLS connections: a TLS peer without one is a delivery
        failure, reported in the next turn.
        """
        peer = Peer("TLS", "127.0.0.7", 40443)
        self.transports.send(b"x", peer)
        self.assertEqual(self.reactor.tcpClients, [])
        self.reactor.advance(0)
        self.assertEqual(self.failedPeers, [peer])
        self.assertEqual(self.counter("sipxmpp_sip_send_failures_total", transport="TLS"), 1)


class ReceiveBufferTests(SynchronousTestCase):
    """
    The UDP receive buffer: asked for, capped by the kernel, and a warning
    when capped. Real sockets, bound to loopback and never used.
    """

    def rmemMax(self) -> int:
        with open("/proc/sys/net/core/rmem_max", encoding="ascii") as f:
            return int(f.read())

    def socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(("127.0.0.1", 0))
        return sock

    def test_granted(self) -> None:
        size = min(256 * 1024, self.rmemMax())
        self.assertEqual(setReceiveBuffer(self.socket(), size), size)

    def test_cappedByTheKernel(self) -> None:
        cap = self.rmemMax()
        self.assertEqual(setReceiveBuffer(self.socket(), 4 * cap), cap)

    def test_warnedWhenCapped(self) -> None:
        class Port:
            def __init__(self, sock: socket.socket) -> None:
                self.socket = sock

            def getHost(self) -> IPv4Address:
                return IPv4Address("UDP", *self.socket.getsockname())

        transports = SIPTransports(UDPMemoryReactor(), (), Metrics(),
                                   udpReceiveBuffer=4 * self.rmemMax())
        with capturedLogs() as events:
            transports._sizeReceiveBuffer(Port(self.socket()))
        self.assertEqual([e["log_format"].split(" of ")[0] for e in events],
                         ["UDP receive buffer"])
        transports.udpReceiveBuffer = 65536
        with capturedLogs() as events:
            transports._sizeReceiveBuffer(Port(self.socket()))
        self.assertEqual(list(events), [])


class ReceiveBacklogTests(SynchronousTestCase):
    """
    How full a UDP receive buffer is: datagrams sent on loopback to a
    socket that does not read them.
    """

    def test_fillGrowsWithQueuedDatagrams(self) -> None:
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(receiver.close)
        receiver.bind(("127.0.0.1", 0))
        setReceiveBuffer(receiver, 65536)
        self.assertEqual(receiveBufferFill(receiver), 0.0)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sender.close)
        for _ in range(20):
            sender.sendto(b"x" * 1000, receiver.getsockname())
        fill = receiveBufferFill(receiver)
        self.assertGreater(fill, 0.1)
        self.assertLessEqual(fill, 1.0)
        receiver.setblocking(False)
        while True:
            try:
                receiver.recv(2048)
            except BlockingIOError:
                break
        self.assertEqual(receiveBufferFill(receiver), 0.0)

    def test_transportsReportTheFullest(self) -> None:
        class Port:
            def __init__(self, fill: int) -> None:
                self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self.socket.bind(("127.0.0.1", 0))
                setReceiveBuffer(self.socket, 65536)
                sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                for _ in range(fill):
                    sender.sendto(b"x" * 1000, self.socket.getsockname())
                sender.close()

        transports = SIPTransports(UDPMemoryReactor(), (), Metrics())
        quiet, busy = Port(0), Port(30)
        self.addCleanup(quiet.socket.close)
        self.addCleanup(busy.socket.close)
        udp = parseListen("udp:5060:interface=127.0.0.1")
        tcp = parseListen("tcp:5060:interface=127.0.0.1")
        transports.ports = [(udp, quiet), (udp, busy), (tcp, object())]  # type: ignore[list-item]
        self.assertEqual(transports.receiveBacklog(), receiveBufferFill(busy.socket))
        self.assertGreater(transports.receiveBacklog(), 0.1)


class NoDelayTests(TestCase):
    """
    SIP stream connections, accepted or opened, TCP or TLS, have
    C{TCP_NODELAY} set: a real loopback connection, its socket asked.
    """

    def setUp(self) -> None:
        ca = TestCA(self.mktemp())
        certificate = ca.issue(["localhost"])
        self.transports = SIPTransports(reactor, (
            parseListen("tcp:0:interface=127.0.0.1"),
            parseListen(f"ssl:0:interface=127.0.0.1:privateKey={certificate.keyFile}"
                        f":certKey={certificate.certFile}"),
        ), Metrics())
        self.transports.startService()
        self.addCleanup(self.transports.stopService)

    def port(self, transport: str) -> int:
        [port] = [p for spec, p in self.transports.ports if spec.transport == transport]
        return int(port.getHost().port)  # type: ignore[attr-defined]

    async def waitForConnections(self, count: int) -> list[SIPStreamProtocol]:
        for _ in range(200):
            if len(self.transports.connections) >= count:
                break
            await deferLater(reactor, 0.01)
        return list(self.transports.connections.values())

    @staticmethod
    def noDelay(protocol: SIPStreamProtocol) -> int:
        transport: Any = protocol.transport
        while not isinstance(transport.getHandle(), socket.socket):
            transport = transport.transport  # TLS: the TCP transport underneath
        return int(transport.getHandle().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    async def test_tcpAcceptedAndOpened(self) -> None:
        # The gateway connects to its own listener: one outbound, one inbound.
        self.transports.send(request(),
                             Peer("TCP", "127.0.0.1", self.port("TCP")))
        connections = await self.waitForConnections(2)
        self.assertEqual(len(connections), 2)
        self.assertEqual([self.noDelay(c) for c in connections], [1, 1])

    async def test_tlsAccepted(self) -> None:
        client = socket.create_connection(("127.0.0.1", self.port("TLS")))
        self.addCleanup(client.close)
        [connection] = await self.waitForConnections(1)
        self.assertEqual(connection.peer.transport, "TLS")
        self.assertEqual(self.noDelay(connection), 1)
