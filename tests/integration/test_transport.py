"""
The gateway's SIP transports over real sockets: a real gateway process
(twistd child) in front of a real Kamailio, driven by sipp and by raw
Python sockets (UDP, TCP, TLS, IPv6).

Debian's sipp 3.6.1 is built without OpenSSL (C{-t l1} answers "To use a
TLS transport you must compile SIPp with OpenSSL"), so TLS is driven by
Python's C{ssl} module sending real SIP.

Everything stays on loopback; every wait is bounded and says what it waited
for when it gives up.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Self

from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.sip.wire.errors import SIPParseError
from sipxmpp.sip.wire.framing import StreamFramer
from sipxmpp.sip.wire.message import SIPRequest, SIPResponse
from sipxmpp.sip.wire.parser import parseMessage
from sipxmpp.testing.gateway import GatewayServer
from sipxmpp.testing.kamailio import KamailioServer
from sipxmpp.testing.ports import LOOPBACK, freeSIPPort, freeTCPPort
from sipxmpp.testing.process import SharedServer, requireBinaries
from sipxmpp.testing.sipp import SippResult, SippRunner
from sipxmpp.testing.tls import TestCA

DOMAIN = "example.test"
TLS_NAME = "sip.example.test"
WAIT = 5.0


# --- building messages -------------------------------------------------------


def newTag() -> str:
    return uuid.uuid4().hex[:12]


def sipRequest(method: str, uri: str, via: str, callID: str, *, cseq: str | None = None,
               fromUser: str = "probe", toURI: str | None = None, toTag: str = "",
               extra: tuple[str, ...] = (), body: bytes = b"",
               contentLength: str | None = None) -> bytes:
    """
    A request as bytes; C{cseq} and C{contentLength} may be made malformed.
    """
    to = toURI or uri
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: {via}",
        "Max-Forwards: 70",
        f"From: <sip:{fromUser}@{DOMAIN}>;tag=f{callID[:8]}",
        f"To: <{to}>" + (f";tag={toTag}" if toTag else ""),
        f"Call-ID: {callID}",
        f"CSeq: {cseq if cseq is not None else '1 ' + method}",
        *extra,
        f"Content-Length: {contentLength if contentLength is not None else len(body)}",
    ]
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + body


def garbageResponse(via: str) -> bytes:
    """
    A response whose CSeq is nonsense: the gateway must drop it.
    """
    return (
        "SIP/2.0 200 OK\r\n"
        f"Via: {via}\r\n"
        f"From: <sip:probe@{DOMAIN}>;tag=g1\r\n"
        f"To: <sip:probe@{DOMAIN}>;tag=g2\r\n"
        "Call-ID: garbage-response\r\n"
        "CSeq: banana OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def responseTo(request: SIPRequest, code: int, reason: str, toTag: str) -> bytes:
    """
    A minimal response to C{request} (what a phone answers).
    """
    lines = [f"SIP/2.0 {code} {reason}"]
    lines += [f"Via: {value}" for value in request.getHeaders("Via")]
    to = request.getHeader("To") or ""
    if request.toTag is None:
        to += f";tag={toTag}"
    lines += [f"From: {request.getHeader('From')}", f"To: {to}",
              f"Call-ID: {request.callID}", f"CSeq: {request.getHeader('CSeq')}",
              "Content-Length: 0"]
    return "\r\n".join(lines).encode() + b"\r\n\r\n"


SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


# --- clients -----------------------------------------------------------------


class SIPClient:
    """
    One SIP socket of a test phone; L{receive} returns whole messages.

    @ivar transport: C{"UDP"}, C{"TCP"} or C{"TLS"}, as written in Via.
    @ivar log: every message received, for failure messages.
    """

    transport = "UDP"

    def __init__(self) -> None:
        self.log: list[bytes] = []
        self.host = LOOPBACK
        self.port = 0

    def via(self, branch: str | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (f"SIP/2.0/{self.transport} {host}:{self.port};"
                f"branch=z9hG4bK{branch or newTag()};rport")

    def send(self, data: bytes) -> None:
        raise NotImplementedError()

    def receiveRaw(self, timeout: float) -> bytes | None:
        raise NotImplementedError()

    def close(self) -> None:
        raise NotImplementedError()

    def receive(self, timeout: float = WAIT) -> bytes | None:
        data = self.receiveRaw(timeout)
        if data is not None:
            self.log.append(data)
        return data

    def expect(self, what: str, match: Callable[[bytes], bool],
               timeout: float = WAIT) -> bytes:
        """
        Read messages until one satisfies C{match}, skipping 100 Trying;
        fail naming C{what} and what came instead.
        """
        deadline = time.monotonic() + timeout
        seen: list[bytes] = []
        while True:
            left = deadline - time.monotonic()
            data = self.receive(max(left, 0.01)) if left > 0 else None
            if data is None:
                raise AssertionError(f"{self.transport} client: no {what} within {timeout} s; "
                                     f"received instead: {seen!r}")
            if match(data):
                return data
            if not data.startswith(b"SIP/2.0 100 "):
                seen.append(data)

    def expectResponse(self, callID: str, code: int | None = None, method: str | None = None,
                       timeout: float = WAIT) -> SIPResponse:
        """
        The next final (or C{code}) response for C{callID} (and C{method}).
        """
        def match(data: bytes) -> bool:
            first = data.split(b"\r\n", 1)[0]
            if not first.startswith(b"SIP/2.0 ") or f"\r\nCall-ID: {callID}\r\n".encode() not in data:
                return False
            status = int(first.split()[1])
            if method is not None and not re.search(
                    rf"\r\nCSeq: *\d+ {method}\r\n".encode(), data):
                return False
            return status == code if code is not None else status >= 200

        what = f"{code or 'final'} response to {method or ''} {callID}"
        message = parseMessage(self.expect(what, match, timeout), datagram=False)
        assert isinstance(message, SIPResponse)
        return message

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class UDPClient(SIPClient):
    """
    A UDP socket on loopback (IPv4 or IPv6) talking to C{target}.
    """

    transport = "UDP"

    def __init__(self, target: tuple[str, int], host: str = LOOPBACK) -> None:
        super().__init__()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.host, self.port = self.sock.getsockname()[:2]
        self.target = target
        self.sources: list[tuple[str, int]] = []

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.target)

    def sendTo(self, data: bytes, address: tuple[str, int]) -> None:
        self.sock.sendto(data, address)

    def receiveRaw(self, timeout: float) -> bytes | None:
        self.sock.settimeout(timeout)
        try:
            data, source = self.sock.recvfrom(65536)
        except TimeoutError:
            return None
        self.sources.append(source[:2])
        return data

    def close(self) -> None:
        self.sock.close()


class StreamClient(SIPClient):
    """
    A TCP or TLS connection to C{target}, framed by Content-Length.
    """

    def __init__(self, target: tuple[str, int], context: ssl.SSLContext | None = None,
                 serverName: str | None = None) -> None:
        super().__init__()
        self.transport = "TLS" if context is not None else "TCP"
        family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
        raw = socket.create_connection(target, timeout=WAIT)
        assert raw.family == family
        self.sock: socket.socket = (context.wrap_socket(raw, server_hostname=serverName)
                                    if context is not None else raw)
        self.host, self.port = self.sock.getsockname()[:2]
        self.framer = StreamFramer()
        self.ready: list[bytes] = []
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receiveRaw(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        while not self.ready:
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            except (ConnectionResetError, ssl.SSLError, OSError):
                data = b""
            if not data:
                self.closed = True
                return None
            try:
                self.ready.extend(self.framer.feed(data))
            except SIPParseError as error:
                raise AssertionError(f"the gateway sent an unframeable stream: {error}") from None
        return self.ready.pop(0)

    def waitClosed(self, timeout: float = WAIT) -> bool:
        """
        Tell whether the gateway closes the connection within C{timeout}
        (anything it sends meanwhile is kept in the log).
        """
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self.receive(deadline - time.monotonic())
        return self.closed

    def close(self) -> None:
        self.sock.close()


class RawTLSClient:
    """
    TLS over memory BIOs on a plain socket: the test decides what goes on
    the wire in one segment, and it never answers the gateway's
    close_notify (as a careless or hostile peer would not).
    """

    def __init__(self, target: tuple[str, int], context: ssl.SSLContext,
                 serverName: str) -> None:
        self.sock = socket.create_connection(target, timeout=WAIT)
        self.host, self.port = self.sock.getsockname()[:2]
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=serverName)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(self.outgoing.read())
                self.incoming.write(self.sock.recv(65536))
        self.sock.sendall(self.outgoing.read())

    def sendRecords(self, *records: bytes) -> None:
        """
        Each of C{records} in its own TLS record, all in one write.
        """
        for record in records:
            self.tls.write(record)
        self.sock.sendall(self.outgoing.read())

    def readUntilTCPClosed(self, timeout: float) -> tuple[bytes, bool]:
        """
        Decrypt what arrives until the gateway closes the TCP connection
        (then C{True}) or C{timeout} passes (C{False}).
        """
        deadline = time.monotonic() + timeout
        closed = False
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                closed = True
                break
            self.incoming.write(chunk)
        plain = b""
        try:
            while piece := self.tls.read(65536):
                plain += piece
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            pass
        return plain, closed

    def close(self) -> None:
        self.sock.close()


# --- the gateway's side ------------------------------------------------------

_METRIC = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def metricValue(text: str, name: str, **labels: str) -> float:
    """
    The value of C{name} with exactly C{labels} in Prometheus text C{text}
    (0 when absent, as for a counter never incremented).
    """
    for line in text.splitlines():
        match = _METRIC.match(line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if found == labels:
            return float(match.group(3))
    return 0.0


def establishedTo(pid: int, port: int, host: str = LOOPBACK) -> list[int]:
    """
    The local ports of the established TCP connections process C{pid} has
    to C{host:port}, from C{ss}.
    """
    result = subprocess.run(["ss", "-Htnp", "state", "established", "dst", f"{host}:{port}"],
                            capture_output=True, text=True, timeout=10, check=True)
    ports = []
    for line in result.stdout.splitlines():
        if f"pid={pid}," not in line:
            continue
        # Recv-Q, Send-Q, local address:port, peer address:port, process.
        ports.append(int(line.split()[2].rsplit(":", 1)[1]))
    return ports


def traced(trace: str, direction: str) -> list[str]:
    """
    The messages sipp's C{-trace_msg} log shows as C{"sent"} or
    C{"received"}, each stripped of surrounding blank lines.
    """
    messages = []
    for block in re.split(r"^-{20,}.*$", trace, flags=re.M):
        head, _, rest = block.strip("\n").partition("\n")
        if re.match(rf"^\w+ message {direction}\b", head):
            messages.append(rest.strip("\n"))
    return messages


def hasIPv6Loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def freeIPv6Port() -> int:
    """
    A port free for UDP and TCP on ::1.
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as tcp:
            tcp.bind(("::1", 0))
            port: int = tcp.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as udp:
                    udp.bind(("::1", port))
            except OSError:
                continue
            return port
    raise OSError("no port free for UDP and TCP on ::1")


class TransportGateway(GatewayServer):
    """
    A gateway with more listen endpoints than L{GatewayServer}'s UDP and TCP
    on one port: TLS (with a certificate from L{TestCA}) and/or IPv6 on ::1.
    Ports are chosen again with the others when a start attempt fails.
    """

    def __init__(self, upstreamPort: int, upstreamTransport: str = "udp",
                 tls: bool = False, ipv6: bool = False) -> None:
        self.tls = tls
        self.ipv6 = ipv6
        super().__init__(upstreamPort, upstreamTransport)
        if tls:
            ca = TestCA(os.path.join(self.baseDir, "ca"))
            self.caFile = ca.caFile
            self.certificate = ca.issue([TLS_NAME])

    def choosePorts(self) -> None:
        super().choosePorts()
        self.tlsPort = freeTCPPort() if self.tls else 0
        self.ipv6Port = freeIPv6Port() if self.ipv6 else 0

    def configText(self) -> str:
        listen = [f"udp:{self.sipPort}:interface={LOOPBACK}",
                  f"tcp:{self.sipPort}:interface={LOOPBACK}"]
        if self.tls:
            cert = self.certificate
            listen.append(f"ssl:{self.tlsPort}:interface={LOOPBACK}:"
                          f"privateKey={cert.keyFile}:certKey={cert.certFile}")
        if self.ipv6:
            listen += [f"udp:{self.ipv6Port}:interface=\\:\\:1",
                       f"tcp:{self.ipv6Port}:interface=\\:\\:1"]
        self.settings[("sip", "listen")] = " ".join(listen)
        return super().configText()

    def listenPorts(self) -> list[tuple[str, str, int]]:
        ports = super().listenPorts()
        if self.tls:
            ports.append(("tcp", LOOPBACK, self.tlsPort))
        return ports

    @property
    def udpTarget(self) -> tuple[str, int]:
        return (LOOPBACK, self.sipPort)

    def tlsContext(self) -> ssl.SSLContext:
        """
        A client context that trusts only the test CA, and checks the name.
        """
        context = ssl.create_default_context(cafile=self.caFile)
        return context

    def logText(self) -> str:
        with open(self.consoleLog, encoding="utf-8", errors="replace") as f:
            return f.read()


class SharedGateway(SharedServer[TransportGateway]):
    """
    One gateway per test class, built for that class's Kamailio.
    """

    def __init__(self, **options: object) -> None:
        super().__init__(self._make)
        self.options = options
        self.upstreamPort = 0

    def _make(self) -> TransportGateway:
        return TransportGateway(self.upstreamPort, **self.options)  # type: ignore[arg-type]

    def forUpstream(self, testCase: SynchronousTestCase, port: int) -> TransportGateway:
        self.upstreamPort = port
        return self.get(testCase)


class GatewayTestCase(SynchronousTestCase):
    """
    A Kamailio and a gateway in front of it, shared by the class's tests.
    """

    kamailio = SharedServer(KamailioServer)
    gateways = SharedGateway()

    def setUp(self) -> None:
        requireBinaries("kamailio", "sipp", "openssl", "ss")
        self.registrar = self.kamailio.get(self)
        self.gateway = self.gateways.forUpstream(self, self.registrar.port)
        self.sipp = SippRunner(self.mktemp())
        self.addCleanup(self.sipp.stopAll)

    def metrics(self) -> str:
        return self.gateway.metrics()

    def assertSipp(self, result: SippResult, what: str) -> None:
        self.assertTrue(result.ok, f"{what}: {result.describe()}\n--- gateway log ---\n"
                                   f"{self.gateway.logTail(40)}")

    def assertAlive(self, client: SIPClient) -> None:
        """
        The gateway still relays a good request on C{client}: an OPTIONS
        to the registrar's domain is answered 200 by Kamailio.
        """
        callID = f"alive-{newTag()}"
        client.send(sipRequest("OPTIONS", f"sip:{DOMAIN}", client.via(), callID))
        reply = client.expectResponse(callID)
        self.assertEqual(reply.code, 200, reply.toBytes())
        self.assertIn("sipxmpp-test-registrar", reply.getHeader("Server") or "")

    @contextmanager
    def counting(self, *keys: tuple[str, dict[str, str]]) -> Iterator[dict[tuple[str, str], float]]:
        """
        Yield a dict that, after the block, holds how much each metric grew.
        """
        before = self.metrics()
        deltas: dict[tuple[str, str], float] = {}
        yield deltas
        after = self.metrics()
        for name, labels in keys:
            deltas[(name, repr(sorted(labels.items())))] = (
                metricValue(after, name, **labels) - metricValue(before, name, **labels))

    def checkMalformed(self, client: SIPClient) -> None:
        """
        Over C{client}: a request with a bad CSeq is answered 400 with its
        own Via and Call-ID; a garbage response is dropped (the next answer
        is the one to the request sent after it); both are counted; a good
        request is still relayed afterwards.
        """
        transport = client.transport
        request = {"transport": transport, "kind": "request"}
        response = {"transport": transport, "kind": "response"}
        with self.counting(("sipxmpp_sip_malformed_total", request),
                           ("sipxmpp_sip_malformed_total", response)) as deltas:
            via = client.via()
            client.send(sipRequest("OPTIONS", f"sip:{DOMAIN}", via, "bad-cseq-1",
                                   cseq="one OPTIONS"))
            answer = client.expect("400 to bad-cseq-1", lambda d: b"bad-cseq-1" in d)
            self.assertTrue(answer.startswith(b"SIP/2.0 400 "), answer)
            self.assertIn(f"\r\nVia: {via}".encode(), answer)
            self.assertIn(b"\r\nCall-ID: bad-cseq-1\r\n", answer)
            self.assertIn(b"\r\nCSeq: one OPTIONS\r\n", answer)
            self.assertRegex(answer, rb"\r\nTo: <sip:example\.test>;tag=\w+\r\n")

            client.send(garbageResponse(client.via()))
            client.send(sipRequest("OPTIONS", f"sip:{DOMAIN}", client.via(), "bad-cseq-2",
                                   cseq="2 INVITE"))
            # Messages on one socket are handled in order, and error
            # answers are written at once: had the garbage been answered,
            # that answer would come first.
            first = client.receive()
            self.assertIsNotNone(first, "no answer to bad-cseq-2")
            assert first is not None
            self.assertTrue(first.startswith(b"SIP/2.0 400 ") and b"bad-cseq-2" in first, first)
            # The counters are updated before the answer is written.
        self.assertEqual(deltas[("sipxmpp_sip_malformed_total", repr(sorted(request.items())))],
                         2)
        self.assertEqual(deltas[("sipxmpp_sip_malformed_total", repr(sorted(response.items())))],
                         1)
        # And a log line for each, naming the peer and what was done.
        peer = f"Peer(transport='{transport}', host='{client.host}', port={client.port})"
        log = self.gateway.logText()
        self.assertIn(f"malformed SIP request from {peer}: bad CSeq (400); answered 400", log)
        self.assertIn(f"malformed SIP response from {peer}: bad CSeq (drop); dropped", log)
        self.assertAlive(client)

    def checkUnframeable(self, connect: Callable[[], StreamClient]) -> None:
        """
        A request with a negative Content-Length on a new connection: 400
        with its Call-ID, then the gateway closes the connection; the next
        connection is served.
        """
        with connect() as client:
            assert isinstance(client, StreamClient)
            client.send(sipRequest("OPTIONS", f"sip:{DOMAIN}", client.via(), "neg-length",
                                   contentLength="-1") + b"more bytes that never frame")
            answer = client.expect("400 to neg-length", lambda d: b"neg-length" in d)
            self.assertTrue(answer.startswith(b"SIP/2.0 400 "), answer)
            self.assertTrue(client.waitClosed(), "the gateway kept the broken stream open")
        with connect() as client:
            self.assertAlive(client)


# --- UDP upstream: UDP, TCP and TLS phones -----------------------------------


class UDPUpstreamTests(GatewayTestCase):
    """
    Kamailio over UDP behind a gateway listening on UDP, TCP and TLS.
    """

    gateways = SharedGateway(tls=True)

    def tls(self) -> StreamClient:
        return StreamClient((LOOPBACK, self.gateway.tlsPort), self.gateway.tlsContext(),
                            TLS_NAME)

    def tcp(self) -> StreamClient:
        return StreamClient((LOOPBACK, self.gateway.sipPort))

    def test_udpRegisterAndCall(self) -> None:
        """
        sipp over UDP: REGISTER through the gateway, then a call to that
        user. The callee's responses carry every Via in one comma-joined
        line (sipp's C{[last_Via:]}): the gateway takes its own value out of
        that line on the way back, twice, and the caller gets its own Via.
        """
        port = freeSIPPort()
        self.assertSipp(self.sipp.register(self.gateway.address, "udpcallee", localPort=port),
                        "REGISTER over UDP")
        uas = self.sipp.answer("udpcallee", localPort=port, traceMessages=True)
        call = self.sipp.call(self.gateway.address, "udpcallee", caller="udpcaller",
                              traceMessages=True)
        self.assertSipp(call, "call over UDP")
        answered = uas.wait()
        self.assertSipp(answered, "UAS")
        # The callee sent one Via line with four values (gateway, Kamailio,
        # gateway, caller) in its 180 and 200.
        sentByCallee = [m for m in traced(answered.messages, "sent") if m.startswith("SIP/2.0 1")
                        or m.startswith("SIP/2.0 2")]
        self.assertTrue(sentByCallee, answered.messages[-2000:])
        for message in sentByCallee:
            vias = re.findall(r"^Via: (.*)$", message, re.M)
            self.assertEqual(len(vias), 1, message)
            self.assertEqual(vias[0].count("SIP/2.0/UDP"), 4, message)
        # The caller's responses carry its own Via only.
        toCaller = [m for m in traced(call.messages, "received") if m.startswith("SIP/2.0 ")]
        self.assertTrue(toCaller, call.messages[-2000:])
        for message in toCaller:
            vias = re.findall(r"^(?:Via|v):\s*(.*)$", message, re.M)
            self.assertEqual(len(vias), 1, message)
            self.assertEqual(vias[0].count("SIP/2.0/"), 1, message)
            self.assertIn(";branch=z9hG4bK-", vias[0])

    def test_tcpRegisterAndCall(self) -> None:
        """
        sipp over TCP (C{-t t1}) on both ends: the callee registers from
        its port and is then called on a connection the gateway opens to
        that flow; the caller's connection carries the whole dialog.
        """
        runner = SippRunner(self.mktemp(), transport="t1")
        self.addCleanup(runner.stopAll)
        port = freeSIPPort()
        self.assertSipp(runner.register(self.gateway.address, "tcpcallee", localPort=port),
                        "REGISTER over TCP")
        uas = runner.answer("tcpcallee", localPort=port)
        with self.counting(("sipxmpp_sip_messages_received_total", {"transport": "TCP"})) as d:
            self.assertSipp(runner.call(self.gateway.address, "tcpcallee", caller="tcpcaller"),
                            "call over TCP")
            self.assertSipp(uas.wait(), "UAS over TCP")
        # INVITE, ACK, BYE from the caller; 180, 200, 200 from the callee.
        self.assertGreaterEqual(
            d[("sipxmpp_sip_messages_received_total", repr([("transport", "TCP")]))], 6)

    def test_tlsRegisterAndCall(self) -> None:
        """
        A phone over TLS (Python's ssl, verifying the gateway's certificate
        against the test CA and its name) registers, then calls a UDP sipp
        callee: INVITE, 200, ACK and BYE follow the Record-Route set the
        gateway built for the TLS and UDP sides.
        """
        port = freeSIPPort()
        self.assertSipp(self.sipp.register(self.gateway.address, "tlscallee", localPort=port),
                        "REGISTER of the UDP callee")
        uas = self.sipp.answer("tlscallee", localPort=port)
        with self.tls() as phone:
            assert isinstance(phone.sock, ssl.SSLSocket)
            certificate = phone.sock.getpeercert()
            assert certificate is not None
            self.assertEqual(certificate["subjectAltName"], (("DNS", TLS_NAME),))
            callID = f"tls-reg-{newTag()}"
            contact = f"<sip:tlsphone@{LOOPBACK}:{phone.port};transport=tls>"
            phone.send(sipRequest("REGISTER", f"sip:{DOMAIN}", phone.via(), callID,
                                  fromUser="tlsphone", toURI=f"sip:tlsphone@{DOMAIN}",
                                  extra=(f"Contact: {contact}", "Expires: 300")))
            registered = phone.expectResponse(callID)
            self.assertEqual(registered.code, 200, registered.toBytes())
            self.assertIn("expires=", registered.getHeader("Contact") or "")

            callID = f"tls-call-{newTag()}"
            fromTag = f"f{callID[:8]}"
            phone.send(sipRequest(
                "INVITE", f"sip:tlscallee@{DOMAIN}", phone.via(), callID,
                fromUser="tlsphone", extra=(f"Contact: <sip:tlsphone@{LOOPBACK}:{phone.port};"
                                            "transport=tls>", "Content-Type: application/sdp"),
                body=SDP))
            ok = phone.expectResponse(callID, method="INVITE", timeout=10)
            self.assertEqual(ok.code, 200, ok.toBytes())
            routes = [r.text for r in reversed(ok.recordRoutes)]
            self.assertIn("transport=tls", routes[0])
            target = ok.contacts[0].uriText
            toHeader = ok.getHeader("To") or ""
            for method, number in (("ACK", 1), ("BYE", 2)):
                lines = [f"{method} {target} SIP/2.0", f"Via: {phone.via()}",
                         *(f"Route: {r}" for r in routes), "Max-Forwards: 70",
                         f"From: <sip:tlsphone@{DOMAIN}>;tag={fromTag}", f"To: {toHeader}",
                         f"Call-ID: {callID}", f"CSeq: {number} {method}", "Content-Length: 0"]
                phone.send("\r\n".join(lines).encode() + b"\r\n\r\n")
            bye = phone.expectResponse(callID, method="BYE")
            self.assertEqual(bye.code, 200, bye.toBytes())
        self.assertSipp(uas.wait(), "UDP callee of the TLS caller")

    def test_viaCommaJoinedByTheCaller(self) -> None:
        """
        sipp sends an OPTIONS whose one Via line holds two values; the
        gateway adds its own Via, and on the way back removes exactly that:
        the caller gets both of its values, in order, in one line, the top
        one with rport filled in (the scenario checks it).
        """
        result = self.sipp.run("transport_via_comma", self.gateway.address,
                               keys={"domain": DOMAIN}, calls=3, traceMessages=True)
        self.assertSipp(result, "comma-joined Via")
        self.assertEqual(result.successful, 3)

    def test_rportAndReceived(self) -> None:
        """
        RFC 3581 and RFC 3261 §18.2.1: a UDP request whose Via names
        another address and port (with a bare rport) is answered at the
        address and port it came from, and the Via it gets back records
        both: received= the source address, rport= the source port.
        """
        with UDPClient(self.gateway.udpTarget) as client:
            assert isinstance(client, UDPClient)
            callID = f"rport-{newTag()}"
            via = "SIP/2.0/UDP 127.0.0.99:9;branch=z9hG4bK" + newTag() + ";rport"
            client.send(sipRequest("OPTIONS", f"sip:{DOMAIN}", via, callID))
            reply = client.expectResponse(callID)
            self.assertEqual(reply.code, 200, reply.toBytes())
            self.assertEqual(len(reply.vias), 1, reply.toBytes())
            top = reply.topVia
            self.assertEqual(top.sentBy, "127.0.0.99:9")
            self.assertEqual(top.params.get("received"), LOOPBACK)
            self.assertEqual(top.params.get("rport"), str(client.port))

    def test_malformedOverUDP(self) -> None:
        with UDPClient(self.gateway.udpTarget) as client:
            self.checkMalformed(client)
            assert isinstance(client, UDPClient)
            # Every answer came from the gateway's own port.
            self.assertEqual(set(client.sources), {self.gateway.udpTarget})

    def test_malformedOverTCP(self) -> None:
        with self.tcp() as client:
            self.checkMalformed(client)
        self.checkUnframeable(self.tcp)

    def test_malformedOverTLS(self) -> None:
        with self.tls() as client:
            self.checkMalformed(client)
        self.checkUnframeable(self.tls)

    def test_brokenTLSStreamClosedWithoutThePeer(self) -> None:
        """
        Two TLS records in one TCP segment, each a request that breaks the
        framing: the first is answered 400 and counted once; the second,
        which TLS still hands over after the close began, is ignored.  The
        peer never answers close_notify, yet the gateway's TCP connection
        goes (aborted after the transports' close grace, 2 s).
        """
        client = RawTLSClient((LOOPBACK, self.gateway.tlsPort), self.gateway.tlsContext(),
                              TLS_NAME)
        self.addCleanup(client.close)
        via = f"SIP/2.0/TLS {client.host}:{client.port};branch=z9hG4bK{newTag()};rport"
        labels = {"transport": "TLS", "kind": "request"}
        with self.counting(("sipxmpp_sip_malformed_total", labels)) as deltas:
            client.sendRecords(
                sipRequest("OPTIONS", f"sip:{DOMAIN}", via, "tls-neg-1", contentLength="-1"),
                sipRequest("OPTIONS", f"sip:{DOMAIN}", via, "tls-neg-2", contentLength="-2"))
            plain, closed = client.readUntilTCPClosed(WAIT + 2.0)
        self.assertEqual(plain.count(b"SIP/2.0 400 "), 1, plain)
        self.assertIn(b"\r\nCall-ID: tls-neg-1\r\n", plain)
        self.assertEqual(deltas[("sipxmpp_sip_malformed_total", repr(sorted(labels.items())))], 1)
        self.assertTrue(closed, "the gateway left the TCP connection of a broken TLS stream "
                                "open while the peer ignored close_notify")

    def test_messagesBeforeABreakOverTCP(self) -> None:
        """
        One TCP write holding a request with a bad CSeq (framed, answered
        400) and then one with a negative Content-Length (breaks the
        stream): both are answered, in order, and the connection is closed
        without the peer having to send anything more.
        """
        with self.tcp() as client:
            assert isinstance(client, StreamClient)
            client.send(sipRequest("OPTIONS", f"sip:{DOMAIN}", client.via(), "framed-bad",
                                   cseq="x OPTIONS")
                        + sipRequest("OPTIONS", f"sip:{DOMAIN}", client.via(), "breaks",
                                     contentLength="-7"))
            first = client.expect("400 to framed-bad", lambda d: b"framed-bad" in d)
            self.assertTrue(first.startswith(b"SIP/2.0 400 "), first)
            second = client.expect("400 to breaks", lambda d: b"breaks" in d)
            self.assertTrue(second.startswith(b"SIP/2.0 400 "), second)
            self.assertTrue(client.waitClosed(), "the broken stream was left open")

    def test_keepAlivePongOverTCP(self) -> None:
        """
        A CRLFCRLF ping on a TCP connection gets its CRLF pong, and the
        connection goes on carrying SIP.
        """
        with self.tcp() as client:
            assert isinstance(client, StreamClient)
            client.send(b"\r\n\r\n")
            client.sock.settimeout(WAIT)
            self.assertEqual(client.sock.recv(2), b"\r\n")
            self.assertAlive(client)


# --- TCP to the upstream -----------------------------------------------------


class TCPUpstreamTests(GatewayTestCase):
    """
    The gateway reaches Kamailio over TCP: one connection, reused.
    """

    gateways = SharedGateway(upstreamTransport="tcp")

    def test_outboundConnectionReused(self) -> None:
        """
        Five REGISTERs from a UDP phone travel to Kamailio on one TCP
        connection the gateway opened: after the first and after all five,
        the gateway has exactly one established connection to Kamailio's
        port, from the same local port, and its gauge says one. (The
        upstream keepalive, an OPTIONS at start, may have opened it before
        the first REGISTER: then the REGISTERs use that one.)
        """
        port = freeSIPPort()
        before = establishedTo(self.gateway.pid or 0, self.registrar.port)
        self.assertLessEqual(len(before), 1, before)
        keys = {"domain": DOMAIN, "expires": 300, "contact_user": "tcpup"}
        self.assertSipp(self.sipp.run("register", self.gateway.address, service="tcpup",
                                      keys=keys, localPort=port), "first REGISTER")
        first = establishedTo(self.gateway.pid or 0, self.registrar.port)
        self.assertEqual(len(first), 1, first)
        if before:
            self.assertEqual(first, before)
        result = self.sipp.run("register", self.gateway.address, service="tcpup", keys=keys,
                               localPort=port, calls=4)
        self.assertSipp(result, "four more REGISTERs")
        self.assertEqual(result.successful, 4)
        self.assertEqual(establishedTo(self.gateway.pid or 0, self.registrar.port), first)
        self.assertEqual(metricValue(self.metrics(), "sipxmpp_sip_connections"), 1)
        self.assertGreaterEqual(metricValue(self.metrics(), "sipxmpp_sip_messages_received_total",
                                            transport="TCP"), 5)


# --- RFC 3261 §18.1.1: big requests over TCP ---------------------------------


class BigRequestTests(GatewayTestCase):
    """
    A UDP upstream that also listens on TCP gets big requests over TCP.
    """

    gateways = SharedGateway()

    def test_bigInviteGoesOverTCP(self) -> None:
        """
        A 1,700-byte INVITE from a UDP phone reaches Kamailio over TCP: the
        gateway opens one connection to Kamailio's port, the 404 comes back
        on it, and the phone gets it over UDP.
        """
        self.assertEqual(establishedTo(self.gateway.pid or 0, self.registrar.port), [])
        with self.counting(("sipxmpp_sip_messages_received_total", {"transport": "TCP"}),
                           ("sipxmpp_sip_messages_received_total", {"transport": "UDP"})) as d:
            result = self.sipp.run("transport_big_invite", self.gateway.address,
                                   service="nobody-big", keys={"domain": DOMAIN},
                                   traceMessages=True)
            self.assertSipp(result, "big INVITE")
        sent = re.search(r"UDP message sent \((\d+) bytes\):\s+INVITE", result.messages)
        assert sent is not None, result.messages[:2000]
        self.assertGreater(int(sent.group(1)), 1300)
        self.assertEqual(len(establishedTo(self.gateway.pid or 0, self.registrar.port)), 1)
        # The 404 (and Kamailio's 100) came over TCP; INVITE and ACK over UDP.
        self.assertGreaterEqual(
            d[("sipxmpp_sip_messages_received_total", repr([("transport", "TCP")]))], 1)
        self.assertGreaterEqual(
            d[("sipxmpp_sip_messages_received_total", repr([("transport", "UDP")]))], 2)


# --- IPv6 --------------------------------------------------------------------


class IPv6Tests(GatewayTestCase):
    """
    Listeners on ::1 beside the IPv4 ones that reach Kamailio.
    """

    gateways = SharedGateway(ipv6=True)

    def setUp(self) -> None:
        if not hasIPv6Loopback():
            self.skipTest("this machine has no IPv6 loopback (::1 cannot be bound)")
        super().setUp()

    def v6target(self) -> tuple[str, int]:
        return ("::1", self.gateway.ipv6Port)

    def test_udpPhoneOnIPv6(self) -> None:
        """
        A phone on [::1] over UDP registers through the gateway, is called
        by an IPv4 sipp through Kamailio, and answers 486; the gateway
        relays both ways between the address families.
        """
        with UDPClient(self.v6target(), host="::1") as phone:
            callID = f"v6-reg-{newTag()}"
            phone.send(sipRequest("REGISTER", f"sip:{DOMAIN}", phone.via(), callID,
                                  fromUser="v6phone", toURI=f"sip:v6phone@{DOMAIN}",
                                  extra=(f"Contact: <sip:v6phone@[::1]:{phone.port}>",
                                         "Expires: 300")))
            registered = phone.expectResponse(callID)
            self.assertEqual(registered.code, 200, registered.toBytes())
            self.assertEqual(phone.sources[-1][0], "::1")
            caller = self.sipp.start("uac_busy", self.gateway.address, service="v6phone",
                                     keys={"domain": DOMAIN, "caller": "v4caller"},
                                     waitBound=False)
            invite = phone.expect("the INVITE for v6phone",
                                  lambda d: d.startswith(b"INVITE sip:v6phone@"), timeout=10)
            request = parseMessage(invite)
            assert isinstance(request, SIPRequest)
            phone.sendTo(responseTo(request, 486, "Busy Here", "v6tag"), phone.sources[-1])
            phone.expect("the ACK of the 486", lambda d: d.startswith(b"ACK "))
            self.assertSipp(caller.wait(), "IPv4 caller of the IPv6 phone")

    def test_malformedOverTCPv6(self) -> None:
        with StreamClient(self.v6target()) as client:
            self.checkMalformed(client)
        self.checkUnframeable(lambda: StreamClient(self.v6target()))


class HelperTests(SynchronousTestCase):
    """
    The helpers above read what they claim.
    """

    def test_metricValue(self) -> None:
        text = '# TYPE x counter\nx{a="1",b="2"} 3\nx{a="1"} 4\ny 5\n'
        self.assertEqual(metricValue(text, "x", a="1", b="2"), 3)
        self.assertEqual(metricValue(text, "x", a="1"), 4)
        self.assertEqual(metricValue(text, "y"), 5)
        self.assertEqual(metricValue(text, "x", a="2"), 0)

    def test_traced(self) -> None:
        trace = ("----------------------------------------------- 2026-01-01 00:00:00.0\n"
                 "UDP message sent (20 bytes):\n\nSIP/2.0 180 Ringing\nVia: a\n\n"
                 "----------------------------------------------- 2026-01-01 00:00:00.1\n"
                 "TCP message received [20] bytes :\n\nBYE sip:x SIP/2.0\nVia: b\n\n")
        self.assertEqual(traced(trace, "sent"), ["SIP/2.0 180 Ringing\nVia: a"])
        self.assertEqual(traced(trace, "received"), ["BYE sip:x SIP/2.0\nVia: b"])
