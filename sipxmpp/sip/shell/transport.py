"""
Twisted shells that move SIP bytes: UDP, TCP and TLS.

They parse what arrives (L{sipxmpp.sip.wire.parser}, L{sipxmpp.sip.wire.framing}),
hand each message and the L{Peer} it came from to a handler (the proxy
core), and send what the core asks them to. Malformed input never gets
further: a request that can be answered gets its error response (sent back
to where it came from, never to an address named inside it), everything is
logged and counted, and a stream that can no longer be framed is closed.

Stream connections are kept per peer and reused for sending, both the ones
phones open to us and the ones we open to the upstream; idle ones are closed
and their number is capped.
"""

from __future__ import annotations

import errno
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import endpoints
from twisted.internet.defer import gatherResults, maybeDeferred
from twisted.internet.error import InvalidAddressError, MessageLengthError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from sipxmpp.sip.core.metrics import IMetrics
from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.shell.endpoints import ListenSpec
from sipxmpp.sip.wire.errors import SIPParseError
from sipxmpp.sip.wire.framing import StreamFramer
from sipxmpp.sip.wire.message import SIPRequest, SIPResponse
from sipxmpp.sip.wire.parser import DEFAULT_LIMITS, Limits, parseMessage
from sipxmpp.sip.wire.responses import errorResponse

Handler = Callable[[SIPRequest | SIPResponse, Peer], None]

# The largest payload one UDP datagram can carry.
MAX_DATAGRAM = 65507

# Send errors that a retransmission may overcome (a full socket buffer):
# counted, but the transaction is not failed for them.
_TRANSIENT_SEND_ERRORS = frozenset((errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS,
                                    errno.EINTR))


def setReceiveBuffer(sock: socket.socket, size: int) -> int:
    """
    Ask for a kernel receive buffer of C{size} bytes on C{sock}; return
    what the kernel granted (Linux reports twice the usable size, and caps
    the request at net.core.rmem_max).
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    except OSError:
        pass
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    return granted // 2 if sys.platform.startswith("linux") else granted


# Linux: getsockopt(SOL_SOCKET, SO_MEMINFO) gives the socket's memory
# counters, the first two being the receive queue and the receive buffer.
_SO_MEMINFO = 55
_MEMINFO = struct.Struct("9I")


def receiveBufferFill(sock: socket.socket) -> float:
    """
    How full the receive buffer of C{sock} is, 0 to 1 (the kernel drops
    datagrams at 1); 0 where the kernel does not tell.
    """
    if not sys.platform.startswith("linux"):
        return 0.0
    try:
        queued, size = _MEMINFO.unpack(
            sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, _MEMINFO.size))[:2]
    except (OSError, struct.error):
        return 0.0
    return min(1.0, queued / size) if size else 0.0


def _sharedSocket(spec: ListenSpec, kind: int) -> socket.socket:
    """
    Bind C{spec} with C{SO_REUSEPORT}, for every worker process to bind
    too (Twisted's own listeners cannot set it), for the reactor to adopt.
    """
    family = socket.AF_INET6 if ":" in spec.interface else socket.AF_INET
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if kind == socket.SOCK_STREAM:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((spec.interface or ("::" if family == socket.AF_INET6 else "0.0.0.0"), spec.port))
    if kind == socket.SOCK_STREAM:
        sock.listen(int(spec.option("backlog", "50")))
    sock.setblocking(False)
    return sock


def _peerOf(transport: str, address: Any) -> Peer:
    return Peer(transport, address.host, address.port)


class SIPTransports(Service):
    """
    All listeners and stream connections of the gateway.

    @param reactor: provides IReactorUDP, IReactorTCP, IReactorTime and
        whatever the ssl: endpoints need.
    @param specs: the C{[sip] listen} endpoints.
    @param ownSpecs: in a worker process (C{[sip] workers}), the worker's
        own listeners; C{specs} are then shared with the other workers
        (bound with C{SO_REUSEPORT}: the kernel hashes each UDP source and
        each new connection to one worker). UDP requests leave from the
        own socket, so that their answers (RFC 3581 C{rport}) come back to
        this worker; responses leave from the socket the phones send to.
    @ivar handler: receives each parsed message (set by the composition root).
    @ivar onDeliveryFailed: told when a stream peer cannot be reached.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        specs: tuple[ListenSpec, ...],
        metrics: IMetrics,
        limits: Limits = DEFAULT_LIMITS,
        idleTimeout: float = 600.0,
        maxConnections: int = 1024,
        closeGrace: float = 2.0,
        udpReceiveBuffer: int = 4 * 2**20,
        ownSpecs: tuple[ListenSpec, ...] = (),
    ) -> None:
        self._reactor = reactor
        self.specs = specs
        self.metrics = metrics
        self.limits = limits
        self.idleTimeout = idleTimeout
        self.closeGrace = closeGrace
        self.maxConnections = maxConnections
        self.udpReceiveBuffer = udpReceiveBuffer
        self.handler: Handler = lambda message, peer: None
        self.onDeliveryFailed: Callable[[Peer], None] = lambda peer: None
        self.ports: list[tuple[ListenSpec, IListeningPort]] = []
        self.ownSpecs = ownSpecs
        self._udp: dict[int, SIPDatagramProtocol] = {}  # by IP version
        self._udpOwn: dict[int, SIPDatagramProtocol] = {}  # a worker's own, by IP version
        self.connections: dict[Peer, SIPStreamProtocol] = {}
        self._pending: dict[Peer, list[bytes]] = {}
        metrics.gauge("sipxmpp_sip_connections", lambda: len(self.connections),
                      "Open SIP stream connections (TCP and TLS).")

    # --- life cycle ---

    def startService(self) -> None:
        super().startService()
        shared = bool(self.ownSpecs)
        for spec in (*self.specs, *self.ownSpecs):
            own = spec in self.ownSpecs
            if spec.transport == "UDP":
                protocol = SIPDatagramProtocol(self)
                if shared and not own:
                    with _sharedSocket(spec, socket.SOCK_DGRAM) as sock:
                        # The reactor adopts a duplicate of the descriptor.
                        port = self._reactor.adoptDatagramPort(sock.fileno(), sock.family,
                                                               protocol)
                else:
                    port = self._reactor.listenUDP(spec.port, protocol,
                                                   interface=spec.interface)
                self._sizeReceiveBuffer(port)
                version = 6 if spec.interface and ":" in spec.interface else 4
                (self._udpOwn if own else self._udp).setdefault(version, protocol)
            elif shared and not own:
                with _sharedSocket(spec, socket.SOCK_STREAM) as sock:
                    port = self._reactor.adoptStreamPort(
                        sock.fileno(), sock.family, SIPStreamFactory(self, spec.transport))
            else:
                endpoint = endpoints.serverFromString(self._reactor, spec.description)
                # Listening on a loopback or local socket completes at once;
                # the Deferred has fired by the time listen() returns.
                listening: list[IListeningPort] = []
                failures: list[Failure] = []
                endpoint.listen(SIPStreamFactory(self, spec.transport)).addCallbacks(
                    listening.append, failures.append)
                if failures:
                    failures[0].raiseException()
                port = listening[0]
            self.ports.append((spec, port))
            self.log.info("SIP listening on {transport} {address}",
                          transport=spec.transport, address=port.getHost())

    def receiveBacklog(self) -> float:
        """
        The fill of the fullest UDP receive buffer, 0 to 1: datagrams that
        arrived and wait to be read (0 where the kernel does not tell).
        """
        fullest = 0.0
        for spec, port in self.ports:
            sock = getattr(port, "socket", None)
            if spec.transport == "UDP" and sock is not None:
                fullest = max(fullest, receiveBufferFill(sock))
        return fullest

    def _sizeReceiveBuffer(self, port: Any) -> None:
        sock = getattr(port, "socket", None)  # a real socket, not a test double
        if sock is None:
            return
        granted = setReceiveBuffer(sock, self.udpReceiveBuffer)
        if granted < self.udpReceiveBuffer:
            self.log.warn(
                "UDP receive buffer of {address} is {granted} bytes, not the {wanted} asked "
                "for ([sip] udp_receive_buffer): raise net.core.rmem_max to allow it",
                address=port.getHost(), granted=granted, wanted=self.udpReceiveBuffer)

    def stopService(self) -> Any:
        super().stopService()
        for connection in list(self.connections.values()):
            connection.close()
        ports, self.ports = self.ports, []
        return gatherResults([maybeDeferred(port.stopListening) for _, port in ports])

    def localPorts(self) -> dict[str, int]:
        """
        The port actually bound per transport (the first listener of each).
        """
        result: dict[str, int] = {}
        for spec, port in self.ports:
            result.setdefault(spec.transport, port.getHost().port)  # type: ignore[attr-defined]
        return result

    # --- receiving ---

    def messageReceived(self, data: bytes, peer: Peer, datagram: bool) -> bytes | None:
        """
        Parse C{data} from C{peer} and hand it to the handler.

        @return: the error response to send back, if the message was a
            malformed request that can be answered.
        """
        self.metrics.increment("sipxmpp_sip_messages_received_total", transport=peer.transport)
        try:
            message = parseMessage(data, self.limits, datagram=datagram)
        except SIPParseError as error:
            return self.malformed(error, peer)
        except Exception:
            # The parser promises SIPParseError only; should a bug break
            # that promise, it costs this message, never the listener.
            self.metrics.increment("sipxmpp_sip_malformed_total", transport=peer.transport,
                                   kind="unknown")
            self.log.failure("parser failed on {size} bytes from {peer}; dropped",
                             size=len(data), peer=peer)
            return None
        try:
            self.handler(message, peer)
        except Exception:
            # A bug must cost one message, never the listener.
            self.metrics.increment("sipxmpp_sip_handler_errors_total")
            self.log.failure("failed handling {message!r} from {peer}",
                             message=message, peer=peer)
        return None

    def malformed(self, error: SIPParseError, peer: Peer) -> bytes | None:
        """
        Log and count malformed input; return the answer to send, if any.
        """
        kind = "request" if error.isRequest else "response" if error.isRequest is False else "unknown"
        self.metrics.increment("sipxmpp_sip_malformed_total", transport=peer.transport, kind=kind)
        answer = errorResponse(error)
        self.log.info(
            "malformed SIP {kind} from {peer}: {error}; {action}",
            kind=kind, peer=peer, error=error,
            action=f"answered {error.code}" if answer is not None else "dropped",
        )
        return answer

    # --- sending ---

    def send(self, data: bytes, peer: Peer) -> None:
        """
        Send C{data} to C{peer}: UDP from our listening socket, TCP over the
        peer's connection (opened when there is none).
        """
        if peer.transport == "UDP":
            # A Peer's host is an IP literal: only IPv6 ones hold a colon.
            version = 6 if ":" in peer.host else 4
            protocol = self._udp.get(version)
            if self._udpOwn and not data.startswith(b"SIP/2.0 "):
                protocol = self._udpOwn.get(version, protocol)
            if protocol is None or protocol.transport is None or len(data) > MAX_DATAGRAM:
                reason = "message too large" if len(data) > MAX_DATAGRAM else (
                    f"no IPv{version} UDP listener")
                self.sendFailed(peer, len(data), reason, report=True)
                return
            protocol.sendDatagram(data, peer, report=True)
            return
        connection = self.connections.get(peer)
        if connection is not None and connection.transport is not None:
            connection.transport.write(data)
            return
        if peer in self._pending:
            self._pending[peer].append(data)
            return
        if peer.transport != "TCP":
            # TLS is served to phones over the connections they open; we do
            # not open TLS connections ourselves.
            self.log.warn("no {transport} connection to {peer}; cannot send",
                          transport=peer.transport, peer=peer)
            self.metrics.increment("sipxmpp_sip_send_failures_total", transport=peer.transport)
            self._reactor.callLater(0, self.onDeliveryFailed, peer)
            return
        self._connect(peer, data)

    def sendFailed(self, peer: Peer, size: int, reason: str, report: bool) -> None:
        """
        Log and count a message that could not be sent to C{peer}; with
        C{report}, tell L{onDeliveryFailed} in the next turn of the reactor
        (never from inside the caller's own send).
        """
        self.log.warn("cannot send {size} bytes over {transport} to {peer}: {reason}",
                      size=size, transport=peer.transport, peer=peer, reason=reason)
        self.metrics.increment("sipxmpp_sip_send_failures_total", transport=peer.transport)
        if report:
            self._reactor.callLater(0, self.onDeliveryFailed, peer)

    def _connect(self, peer: Peer, data: bytes) -> None:
        self._pending[peer] = [data]
        endpointType = (endpoints.TCP6ClientEndpoint if ":" in peer.host
                        else endpoints.TCP4ClientEndpoint)
        endpoint = endpointType(self._reactor, peer.host, peer.port, timeout=10)

        def connected(protocol: SIPStreamProtocol) -> None:
            for chunk in self._pending.pop(peer, []):
                protocol.transport.write(chunk)  # type: ignore[union-attr]

        def failed(reason: Failure) -> None:
            self._pending.pop(peer, None)
            self.metrics.increment("sipxmpp_sip_send_failures_total", transport=peer.transport)
            self.log.warn("cannot connect to {peer}: {reason}", peer=peer,
                          reason=reason.getErrorMessage())
            self.onDeliveryFailed(peer)

        endpoint.connect(SIPStreamFactory(self, peer.transport, peer)).addCallbacks(
            connected, failed)


class SIPDatagramProtocol(DatagramProtocol):
    """
    One UDP listener: each datagram is one message.
    """

    def __init__(self, transports: SIPTransports) -> None:
        self._transports = transports
        self._sendto: Callable[[bytes, tuple[str, int]], object] | None = None

    def startProtocol(self) -> None:
        # Twisted's Port.write parses the address up to three times per
        # datagram (isIPAddress) to check that it is a literal of the
        # socket's family; a Peer's host always is one, and send() picks
        # the listener by family. The socket's own sendto skips that: 6-8 us
        # of 24-31 per datagram relayed, measured. A transport without a
        # socket (the tests' fakes) is written to as usual.
        transport = self.transport
        assert transport is not None  # started by a listening port
        sock = getattr(transport, "socket", None)
        self._sendto = sock.sendto if sock is not None else transport.write

    def stopProtocol(self) -> None:
        self._sendto = None

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if not datagram.strip(b"\r\n\x00 "):
            return  # a keep-alive (RFC 5626 §3.5.1 over UDP is CRLF or empty)
        peer = Peer("UDP", addr[0], addr[1])
        answer = self._transports.messageReceived(datagram, peer, datagram=True)
        if answer is not None:
            self.sendDatagram(answer, peer, report=False)

    def sendDatagram(self, data: bytes, peer: Peer, report: bool) -> None:
        """
        Send C{data} to C{peer} from this socket.  Socket errors (an
        unreachable network, a broadcast address, a datagram too large)
        are logged and counted, never raised; permanent ones are reported
        as delivery failures when C{report} is set.
        """
        sendto = self._sendto
        if sendto is None:  # not started yet, or the listener stopped
            self._transports.sendFailed(peer, len(data), "UDP listener closed", report)
            return
        try:
            sendto(data, (peer.host, peer.port))
        except OSError as error:
            transient = error.errno in _TRANSIENT_SEND_ERRORS
            self._transports.sendFailed(peer, len(data), str(error), report and not transient)
        except (MessageLengthError, InvalidAddressError) as error:
            self._transports.sendFailed(peer, len(data), str(error) or type(error).__name__,
                                        report)


class SIPStreamProtocol(Protocol, TimeoutMixin):
    """
    One TCP or TLS connection, framed by Content-Length.
    """

    peer: Peer

    def __init__(self, transports: SIPTransports, transportName: str,
                 remote: Peer | None = None) -> None:
        self._transports = transports
        self._transportName = transportName
        self._remote = remote
        self._framer = StreamFramer(transports.limits)
        # Set once the stream cannot be framed: nothing more is read from it.
        self._broken = False
        # Aborts the connection if a close does not complete in time.
        self._abortCall: Any = None

    def callLater(self, period: float, func: Callable[[], None]) -> Any:
        """
        Run the idle timer on the injected reactor (L{TimeoutMixin} would
        use the global one).
        """
        return self._transports._reactor.callLater(period, func)

    def connectionMade(self) -> None:
        transports = self._transports
        assert self.transport is not None
        self.peer = self._remote or _peerOf(self._transportName, self.transport.getPeer())
        if self._remote is None and len(transports.connections) >= transports.maxConnections:
            transports.metrics.increment("sipxmpp_sip_connections_refused_total")
            transports.log.warn("refused a connection from {peer}: {count} open is the cap",
                                peer=self.peer, count=len(transports.connections))
            self.transport.abortConnection()  # type: ignore[attr-defined]
            return
        transports.connections[self.peer] = self
        # Messages are written whole: Nagle would hold a small one back until
        # the peer acknowledges the last (a phone's delayed ACK, ~40 ms).
        # Through TLS this reaches the TCP transport underneath.
        setNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setNoDelay is not None:
            setNoDelay(True)
        self.setTimeout(transports.idleTimeout)

    def dataReceived(self, data: bytes) -> None:
        if self._broken:
            # TLS hands over every record it already decrypted, even after
            # loseConnection; the framer must not be fed again.
            return
        self.resetTimeout()
        transport = self.transport
        assert transport is not None
        try:
            messages = self._framer.feed(data)
        except SIPParseError as error:
            self._streamBroken(error)
            return
        for _ in range(self._framer.keepAlives):
            transport.write(b"\r\n")  # RFC 5626 §3.5.1: pong
        self._framer.keepAlives = 0
        for message in messages:
            answer = self._transports.messageReceived(message, self.peer, datagram=False)
            if answer is not None:
                transport.write(answer)
        # The messages before a framing error in the same chunk were
        # returned; the error waits in the framer: act on it now.
        pending = self._framer.pendingError
        if pending is not None:
            self._streamBroken(pending)

    def _streamBroken(self, error: SIPParseError) -> None:
        """
        The stream cannot be framed any more: answer if the error can be
        addressed, then close, and read nothing more.
        """
        self._broken = True
        transport = self.transport
        assert transport is not None
        answer = self._transports.malformed(error, self.peer)
        if answer is not None:
            transport.write(answer)
        self.close()

    def close(self) -> None:
        """
        Close the connection after what was written, and abort it if it is
        still there C{closeGrace} seconds later: a TLS close waits for the
        peer's close_notify and a TCP close for the peer to read what is
        left, and a peer must not hold a connection (and its place under
        the cap) by doing neither.
        """
        transport = self.transport
        if transport is None:
            return
        transport.loseConnection()
        if self._abortCall is None:
            self._abortCall = self.callLater(self._transports.closeGrace, self._abort)

    def _abort(self) -> None:
        self._abortCall = None
        self._transports.log.info("aborting {peer}: not closed {grace} s after we closed it",
                                  peer=self.peer, grace=self._transports.closeGrace)
        self.transport.abortConnection()  # type: ignore[union-attr]

    def timeoutConnection(self) -> None:
        self._transports.log.debug("closing idle connection {peer}", peer=self.peer)
        self.close()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.setTimeout(None)
        if self._abortCall is not None:
            self._abortCall.cancel()
            self._abortCall = None
        peer = getattr(self, "peer", None)
        if peer is not None and self._transports.connections.get(peer) is self:
            del self._transports.connections[peer]


class SIPStreamFactory(Factory):
    """
    Builds L{SIPStreamProtocol}s for a listener or an outbound connection.
    """

    noisy = False

    def __init__(self, transports: SIPTransports, transportName: str,
                 remote: Peer | None = None) -> None:
        self._transports = transports
        self._transportName = transportName
        self._remote = remote

    def buildProtocol(self, addr: Any) -> SIPStreamProtocol:
        return SIPStreamProtocol(self._transports, self._transportName, self._remote)
