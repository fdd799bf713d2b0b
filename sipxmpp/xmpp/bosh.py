"""
BOSH (XEP-0124, XEP-0206): an XMPP session carried in HTTP requests.

L{BOSHEndpoint} is an L{IStreamClientEndpoint}: the session's
L{xmlstream.XmlStream} gets a transport (L{BOSHTransport}) whose writes go
out as children of C{<body/>} POSTs and whose input is the children of the
server's responses, preceded by a synthetic stream header, so that SASL,
bind, presence and ad-hoc commands run exactly as over TCP. The session's
reconnection (L{ClientService}) is the BOSH reconnection: an HTTP failure or
C{type='terminate'} loses the connection.

L{BOSHClient} is the sans-IO core: request ids, what goes in each body, how
many requests are in flight, polling, and the order in which responses are
read. The shell (L{BOSHTransport}) only moves bytes over Twisted's HTTP
client, whose certificate check uses the session's trust root against the
URL's host name (RFC 2818), like any HTTPS client.
"""

from __future__ import annotations

import ipaddress
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import defer
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    ISSLTransport,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    URI,
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
    readBody,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgentEndpointFactory, IBodyProducer
from twisted.words.protocols.jabber.xmlstream import NS_STREAMS
from twisted.words.xish import domish
from zope.interface import implementer

__all__ = [
    "BOSHClient",
    "BOSHEndpoint",
    "BOSHError",
    "BOSHRequest",
    "BOSHTransport",
    "OutboundStream",
    "Terminated",
    "checkBOSHURL",
    "isBOSHURL",
]

NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"
NS_CLIENT = "jabber:client"
BOSH_VERSION = "1.6"
# Request ids are random and below 2**53 less room for a long session
# (XEP-0124 §14.1), so that servers that keep them as doubles are exact.
_RID_LIMIT = 2**52
# Beyond the server's wait, how long a request may go unanswered before the
# link is taken for dead.
_REQUEST_SLACK = 20.0


def isBOSHURL(server: str) -> bool:
    """
    Whether C{server} (C{[xmpp] bosh_url}, or an account's server) is a
    BOSH URL rather than C{HOST:PORT}.
    """
    return server.startswith(("https://", "http://"))


def checkBOSHURL(url: str) -> str:
    """
    Return C{url} if it is fit for a BOSH service: C{https://HOST[:PORT]/PATH},
    or C{http://} to a loopback host only (a connection manager on this
    machine): credentials never cross a network in clear text.

    @raise ValueError: saying what is expected.
    """
    expected = "expected a BOSH URL like https://xmpp.example.com:5281/http-bind"
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError(expected) from None
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query \
            or parts.fragment or parts.username or parts.password or port == 0:  # fmt: skip
        raise ValueError(expected)
    if parts.scheme == "http" and not _isLoopback(parts.hostname):
        raise ValueError(f"{expected}: http:// only to a loopback host, never in clear "
                         "text across a network")  # fmt: skip
    return url.strip()


def _isLoopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BOSHError(Exception):
    """
    The server ended the BOSH session or answered something that is not
    BOSH.
    """


@dataclass(frozen=True)
class BOSHRequest:
    """
    One request to POST.

    @ivar rid: its request id.
    @ivar body: the whole C{<body/>} document.
    """

    rid: int
    body: bytes


@dataclass(frozen=True)
class Terminated:
    """
    The session is over.

    @ivar condition: the server's C{condition} attribute, L{None} for a
        clean end (our terminate answered, or the server's without one).
    """

    condition: str | None


def _parseDocument(data: bytes) -> tuple[domish.Element, list[domish.Element]]:
    # The root and its children: domish hands a root's children to
    # ElementEvent, not to the root.
    stream = domish.elementStream()
    roots: list[domish.Element] = []
    children: list[domish.Element] = []
    ended: list[bool] = []
    stream.DocumentStartEvent = roots.append
    stream.ElementEvent = children.append
    stream.DocumentEndEvent = lambda: ended.append(True)
    try:
        stream.parse(data)
    except domish.ParserError as e:
        raise BOSHError(f"unparsable response: {e}") from None
    if not roots or not ended:
        raise BOSHError("incomplete response")
    return roots[0], children


def _attr(value: str) -> str:
    escaped: str = domish.escapeToXml(value, isattrib=1)
    return escaped


def _streamHeader(domain: str, streamID: str) -> bytes:
    # What a TCP server would open its stream with; XmlStream waits for the
    # features that follow (version 1.0).
    root = domish.Element((NS_STREAMS, "stream"), NS_CLIENT)
    root["from"] = domain
    root["id"] = streamID
    root["version"] = "1.0"
    header: str = root.toXml(prefixes={NS_STREAMS: "stream"}, closeElement=0)
    return header.encode("utf-8")


class _Marker:
    pass


# In the inbound queue: the restart's response was read.
_RESTARTED = _Marker()


class BOSHClient:
    """
    The BOSH session's state, without I/O.

    Feed it what the XML stream says (L{open}, L{send}, L{restart},
    L{terminate}); L{pull} says which requests to POST now (and
    L{wakeAt} when to ask again), L{receive} takes a response, and
    L{nextInbound} gives what the XML stream is to read.

    At most the server's C{requests} are in flight, and one is always
    pending so the server can push inbound stanzas. An empty request in a
    polling session (C{hold} 0 or C{requests} 1) waits until C{polling}
    seconds after the previous one. Responses are read in request id order
    whatever order they arrive in.

    @ivar sid: the session id, once the server created the session.
    @ivar wait: the longest the server holds a request (seconds).
    @ivar hold: how many requests the server holds.
    @ivar requests: how many requests may be in flight.
    @ivar polling: the shortest interval between empty polling requests.
    @ivar inactivity: the longest the server tolerates no pending request.
    """

    def __init__(self, rid: int | None = None, wait: int = 60, hold: int = 1,
                 lang: str = "en") -> None:  # fmt: skip
        self.rid = rid if rid is not None else random.randrange(1, _RID_LIMIT)
        self.sid: str | None = None
        self.wait = wait
        self.hold = hold
        self.requests = hold + 1
        self.polling = 0.0
        self.inactivity = 0.0
        self.lang = lang
        self.domain = ""
        self.closed = False
        self._created = False
        self._creating = False
        self._restartPending = False
        self._restartRid: int | None = None
        self._creationRid: int | None = None
        self._terminatePending = False
        self._terminateRid: int | None = None
        self._payload: list[bytes] = []
        self._inFlight: set[int] = set()
        self._answers: dict[int, bytes] = {}
        self._nextToRead = self.rid
        self._lastEmptyAt: float | None = None
        self._inbound: deque[bytes | Terminated | _Marker] = deque()
        self._headerOwed = False
        self._streamID = ""

    # -- what the XML stream says -------------------------------------------

    def open(self, domain: str) -> None:
        """
        Ask for a session with C{domain}.
        """
        if self._created or self._creating:
            raise BOSHError("the BOSH session is already open")
        self.domain = domain
        self._creating = True

    def send(self, element: bytes) -> None:
        """
        Queue one top-level element (a stanza, a SASL or bind element).
        """
        self._payload.append(element)

    def restart(self) -> None:
        """
        The XML stream was restarted (after SASL): XEP-0206 §5.
        """
        self._restartPending = True
        self._headerOwed = True

    def terminate(self) -> None:
        """
        End the session after what is queued.
        """
        self._terminatePending = True

    # -- requests -------------------------------------------------------------

    @property
    def inFlight(self) -> int:
        return len(self._inFlight)

    def _nextRid(self) -> int:
        rid = self.rid
        self.rid += 1
        self._inFlight.add(rid)
        return rid

    def _body(self, payload: list[bytes] | None = None, **attrs: str) -> BOSHRequest:
        rid = self._nextRid()
        body = domish.Element((NS_HTTPBIND, "body"))
        body["rid"] = str(rid)
        if self.sid is not None:
            body["sid"] = self.sid
        for name, value in attrs.items():
            body[name] = value
        head: str = body.toXml(closeElement=0)
        return BOSHRequest(rid, head.encode("utf-8") + b"".join(payload or []) + b"</body>")

    def _xboshBody(self, attrs: str) -> BOSHRequest:
        # xmpp:* and xml:lang attributes: written out, as domish would
        # invent prefixes for them.
        rid = self._nextRid()
        head = (
            f"<body xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}' rid='{rid}' "
            f"to='{_attr(self.domain)}' xml:lang='{_attr(self.lang)}' {attrs}/>"
        )
        return BOSHRequest(rid, head.encode("utf-8"))

    def _restartBody(self) -> BOSHRequest:
        return self._xboshBody(f"sid='{_attr(self.sid or '')}' xmpp:restart='true'")

    def _creationBody(self) -> BOSHRequest:
        return self._xboshBody(
            f"ver='{BOSH_VERSION}' wait='{self.wait}' hold='{self.hold}' "
            "content='text/xml; charset=utf-8' xmpp:version='1.0'"
        )

    def _pollingSession(self) -> bool:
        return self.hold == 0 or self.requests <= 1

    def pull(self, now: float) -> list[BOSHRequest]:
        """
        The requests to POST now, in order.
        """
        if self.closed:
            return []
        if not self._created:
            if self._creating and self._creationRid is None:
                request = self._creationBody()
                self._creationRid = request.rid
                return [request]
            return []
        out: list[BOSHRequest] = []
        while len(self._inFlight) < self.requests and self._terminateRid is None:
            if self._restartPending:
                # Alone in its body: the server answers it with the new
                # stream's features.
                if self._payload:
                    out.append(self._body(self._payload))
                    self._payload = []
                    continue
                self._restartPending = False
                request = self._restartBody()
                self._restartRid = request.rid
                out.append(request)
            elif self._terminatePending:
                request = self._body(self._payload, type="terminate")
                self._payload = []
                self._terminateRid = request.rid
                out.append(request)
            elif self._payload:
                out.append(self._body(self._payload))
                self._payload = []
            elif not self._inFlight and self.wakeAt(now) is None:
                # Nothing to say: a request for the server to answer with
                # inbound stanzas when it has some.
                self._lastEmptyAt = now
                out.append(self._body())
            else:
                break
        return out

    def wakeAt(self, now: float) -> float | None:
        """
        When an empty request held back by C{polling} may go (L{None}:
        nothing is held back).
        """
        if self._inFlight or not self._created or self.closed:
            return None
        if self._pollingSession() and self._lastEmptyAt is not None:
            at = self._lastEmptyAt + self.polling
            if at > now:
                return at
        return None

    # -- responses ------------------------------------------------------------

    def receive(self, rid: int, data: bytes) -> None:
        """
        Take the response to request C{rid}; what the XML stream is to
        read comes from L{nextInbound}.

        @raise BOSHError: the response is not BOSH or lacks a session id.
        """
        if rid not in self._inFlight or self.closed:
            return
        self._inFlight.discard(rid)
        if rid == self._terminateRid:
            # Our own end: what earlier requests still bring is moot.
            self.closed = True
            self._inbound.append(Terminated(None))
            return
        self._answers[rid] = data
        while self._nextToRead in self._answers and not self.closed:
            current = self._nextToRead
            self._nextToRead += 1
            self._read(current, self._answers.pop(current))

    def nextInbound(self) -> bytes | Terminated | None:
        """
        What the XML stream reads next: bytes, or L{Terminated} last, or
        L{None} for nothing yet. Take one at a time: reading one may restart
        the stream, and what follows belongs to the new one.
        """
        if not self._inbound:
            return None
        item = self._inbound[0]
        if self._headerOwed and (isinstance(item, bytes) or item is _RESTARTED):
            # The new stream's features may come in any response after the
            # restart (Prosody answers on the request it was holding).
            self._headerOwed = False
            return _streamHeader(self.domain, self._streamID)
        self._inbound.popleft()
        if item is _RESTARTED:
            return self.nextInbound()
        assert not isinstance(item, _Marker)
        return item

    def _read(self, rid: int, data: bytes) -> None:
        root, children = _parseDocument(data)
        if root.uri != NS_HTTPBIND or root.name != "body":
            raise BOSHError(f"not a BOSH body: {root.name}")
        if rid == self._creationRid:
            self._created_(root)
            self._inbound.append(_streamHeader(self.domain, self._streamID))
        self._inbound.extend(child.toXml().encode("utf-8") for child in children)
        if rid == self._restartRid:
            self._inbound.append(_RESTARTED)
        kind = root.getAttribute("type")
        if kind in ("terminate", "error"):
            self.closed = True
            self._inbound.append(Terminated(root.getAttribute("condition")))

    def _created_(self, root: domish.Element) -> None:
        sid = root.getAttribute("sid")
        if not sid:
            raise BOSHError("the session creation response has no sid")
        self.sid = str(sid)
        self._streamID = str(root.getAttribute("authid") or sid)
        self._created = True

        def number(name: str, default: float) -> float:
            try:
                return float(root.getAttribute(name) or default)
            except ValueError:
                return default

        self.wait = int(number("wait", self.wait))
        self.hold = int(number("hold", self.hold))
        self.requests = max(1, int(number("requests", self.hold + 1)))
        self.polling = number("polling", 0.0)
        self.inactivity = number("inactivity", 0.0)
        self.domain = str(root.getAttribute("from") or self.domain)

    def failed(self, rid: int) -> None:
        """
        Request C{rid} got no answer: the session is lost.
        """
        self.closed = True


class OutboundStream:
    """
    Splits what an L{xmlstream.XmlStream} writes into the BOSH session's
    inputs: a stream header opens the session or restarts the stream, each
    top-level element is queued, the footer terminates.

    The XML stream writes one header, element or footer per call; the
    parse only gives each element its namespace (C{jabber:client} is
    implied by the header, and must be explicit inside a C{<body/>}).
    """

    def __init__(self, client: BOSHClient) -> None:
        self._client = client
        self._stream: Any = None
        self._headers = 0

    def write(self, data: bytes) -> None:
        if data.lstrip().startswith((b"<stream:stream", b"<?xml")):
            self._headers += 1
            if self._headers > 1:
                self._client.restart()
            self._stream = domish.elementStream()
            self._stream.DocumentStartEvent = lambda root: None
            self._stream.ElementEvent = self._element
            self._stream.DocumentEndEvent = self._client.terminate
        if self._stream is None:
            raise BOSHError("stream data before the stream header")
        try:
            self._stream.parse(data)
        except domish.ParserError as e:
            raise BOSHError(f"unparsable outbound data: {e}") from None

    def _element(self, element: domish.Element) -> None:
        self._client.send(element.toXml().encode("utf-8"))


@implementer(IBodyProducer)
class _Bytes:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data) if data else UNKNOWN_LENGTH

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._data)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _HTTPStatus(BOSHError):
    pass


@implementer(ITransport)
class BOSHTransport:
    """
    The XML stream's transport: see the module docstring.
    """

    log = Logger()
    disconnecting = False

    def __init__(self, reactor: Any, url: str, client: BOSHClient, agent: Any,
                 connections: _Connections | None = None) -> None:  # fmt: skip
        self._reactor = reactor
        self._url = url.encode("ascii")
        self._client = client
        self._outbound = OutboundStream(client)
        self._agent = agent
        self._connections = connections
        self.protocol: IProtocol | None = None
        self._requests: dict[int, Deferred[bytes]] = {}
        self._wake: IDelayedCall | None = None
        self._lost = False
        parts = urlsplit(url)
        # The URL's host (maybe a name): the HTTP connections are the pool's.
        self._address = IPv4Address("TCP", parts.hostname or "",
                                    parts.port or (443 if parts.scheme == "https" else 80))  # fmt: skip

    # -- ITransport -----------------------------------------------------------

    def attach(self, protocol: IProtocol) -> None:
        """
        Connect C{protocol}: the session is asked for at once, and what goes
        wrong from then on (a refused certificate too) is a lost connection,
        as over TCP.
        """
        self.protocol = protocol
        protocol.makeConnection(self)
        self._pump()

    def write(self, data: bytes) -> None:
        if self._lost or self.disconnecting:
            return
        try:
            self._outbound.write(data)
        except BOSHError as e:
            self._connectionLost(Failure(e))
            return
        self._pump()

    def writeSequence(self, data: Iterable[bytes]) -> None:
        for part in data:
            self.write(part)

    def loseConnection(self) -> None:
        if self._lost or self.disconnecting:
            return
        self.disconnecting = True
        if self._client.sid is None:
            self._connectionLost(Failure(ConnectionDone()))
            return
        self._client.terminate()
        self._pump()

    def abortConnection(self) -> None:
        self._connectionLost(Failure(ConnectionLost("BOSH session aborted")))

    def getPeer(self) -> IPv4Address:
        return self._address

    def getHost(self) -> IPv4Address:
        return self._address

    # ITCPTransport, which ISSLTransport extends: the HTTP connections
    # are the pool's, not ours to tune.
    def loseWriteConnection(self) -> None:
        self.loseConnection()

    def getTcpNoDelay(self) -> bool:
        return True

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass

    def getTcpKeepAlive(self) -> bool:
        return False

    def setTcpKeepAlive(self, enabled: bool) -> None:
        pass

    # -- HTTP -----------------------------------------------------------------

    def _pump(self) -> None:
        if self._lost:
            return
        if self._wake is not None and self._wake.active():
            self._wake.cancel()
        self._wake = None
        now = self._reactor.seconds()
        for request in self._client.pull(now):
            self._post(request)
        at = self._client.wakeAt(now)
        if at is not None:
            self._wake = self._reactor.callLater(at - now, self._pump)

    def _post(self, request: BOSHRequest, again: bool = True) -> None:
        headers = Headers({b"Content-Type": [b"text/xml; charset=utf-8"]})
        d = self._agent.request(b"POST", self._url, headers, _Bytes(request.body))

        def read(response: Any) -> Deferred[bytes]:
            if response.code != 200:
                # 400, 403, 404 end the session (XEP-0124 §19.2).
                response.deliverBody(Protocol())
                raise _HTTPStatus(f"HTTP {response.code} from the BOSH server")
            return readBody(response)

        d.addCallback(read)
        d.addTimeout(self._client.wait + _REQUEST_SLACK, self._reactor)
        self._requests[request.rid] = d
        d.addCallbacks(lambda data: self._answered(request.rid, data),
                       lambda reason: self._failed(request, reason, again))  # fmt: skip

    def _answered(self, rid: int, data: bytes) -> None:
        self._requests.pop(rid, None)
        if self._lost:
            return
        try:
            created = self._client.sid is None
            self._client.receive(rid, data)
            if created and self._client.sid is not None:
                client = self._client
                self.log.debug("BOSH session {sid} at {url}: wait {wait}, hold {hold}, "
                               "requests {requests}, polling {polling}, inactivity {inactivity}",
                               sid=client.sid, url=self._url.decode(), wait=client.wait,
                               hold=client.hold, requests=client.requests,
                               polling=client.polling, inactivity=client.inactivity)  # fmt: skip
            self._deliver()
        except BOSHError as e:
            self._connectionLost(Failure(e))
            return
        self._pump()

    def _deliver(self) -> None:
        while not self._lost:
            event = self._client.nextInbound()
            if event is None:
                return
            if isinstance(event, Terminated):
                if event.condition is None:
                    self._connectionLost(Failure(ConnectionDone()))
                else:
                    self._connectionLost(Failure(BOSHError(f"terminated: {event.condition}")))
                return
            if self.protocol is not None:
                self.protocol.dataReceived(event)

    def _failed(self, request: BOSHRequest, reason: Failure, again: bool) -> None:
        self._requests.pop(request.rid, None)
        if self._lost:
            return
        cause = _cause(reason)
        if again and self._client.sid is not None and not cause.check(SSL.Error, VerificationError) \
                and reason.check(ResponseNeverReceived, RequestTransmissionFailed):  # fmt: skip
            # The connection died under the request (a persistent one the
            # server closed meanwhile): the same rid once more, which the
            # server answers as if it were the first (XEP-0124 §14.3).
            self.log.debug("BOSH request {rid} resent: {why}", rid=request.rid,
                           why=cause.getErrorMessage())  # fmt: skip
            self._post(request, again=False)
            return
        self._client.failed(request.rid)
        reason = cause
        if reason.check(defer.TimeoutError, defer.CancelledError):
            reason = Failure(ConnectionLost(f"BOSH request unanswered after "
                                            f"{self._client.wait + _REQUEST_SLACK:.0f} s"))  # fmt: skip
        self._connectionLost(reason)

    def _connectionLost(self, reason: Failure) -> None:
        if self._lost:
            return
        self._lost = True
        self._client.closed = True
        if self._wake is not None and self._wake.active():
            self._wake.cancel()
        requests, self._requests = self._requests, {}
        for d in requests.values():
            d.cancel()
        # The stream ends once the session's HTTP connections are gone, as a
        # TCP stream's ends with its socket. Aborted, not closed: a TLS close
        # waits for the server's close_notify, which may never come.
        # (The sockets close a reactor turn after the abort, before this.)
        try:
            if self._connections is not None:
                self._connections.abortAll()
        finally:
            closed = deferLater(self._reactor, 0, lambda: None)
            closed.addCallback(lambda _: self.protocol.connectionLost(reason) if self.protocol else None)


def _cause(reason: Failure) -> Failure:
    # Agent wraps why a request failed; a refused certificate must reach
    # the session as itself (describeCertificateFailure).
    if not reason.check(ResponseNeverReceived, RequestTransmissionFailed, ResponseFailed):
        return reason
    causes = [r for r in getattr(reason.value, "reasons", []) if isinstance(r, Failure)]
    for cause in causes:
        if cause.check(SSL.Error, VerificationError):
            return cause
    return causes[0] if causes else reason


@implementer(ISSLTransport)
class SecureBOSHTransport(BOSHTransport):
    """
    A L{BOSHTransport} over HTTPS: the session needs no STARTTLS.
    """

    def getPeerCertificate(self) -> None:
        # Each request may use another connection: there is no one
        # certificate (and no channel binding) for the session.
        return None


@implementer(IAgentEndpointFactory)
class _Connections:
    """
    Agent's connections of one session (HTTPS verified by C{policy}), kept
    to be aborted when the session ends.
    """

    def __init__(self, reactor: Any, policy: BrowserLikePolicyForHTTPS) -> None:
        self._reactor = reactor
        self._policy = policy
        self._protocols: list[IProtocol] = []
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 2

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        endpoint: IStreamClientEndpoint = HostnameEndpoint(self._reactor, uri.host, uri.port)
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(self._policy.creatorForNetloc(uri.host, uri.port), endpoint)
        return _Tracked(endpoint, self._track)

    def _track(self, protocol: IProtocol) -> IProtocol:
        self._protocols = [p for p in self._protocols if _open(p)]
        self._protocols.append(protocol)
        return protocol

    def abortAll(self) -> None:
        protocols, self._protocols = self._protocols, []
        for protocol in protocols:
            if _open(protocol):
                protocol.transport.abortConnection()  # type: ignore[attr-defined]
        # Forget them, and their idle timeouts.
        self.pool.closeCachedConnections()


def _open(protocol: IProtocol) -> bool:
    # Whether the socket under the protocol (under TLS, if any) is still
    # connected: a Protocol's own "connected" is never reset.
    transport = getattr(protocol, "transport", None)
    socket = getattr(transport, "transport", transport)
    return bool(getattr(socket, "connected", False))


@implementer(IStreamClientEndpoint)
class _Tracked:
    def __init__(self, endpoint: IStreamClientEndpoint, track: Callable[[IProtocol], IProtocol]) -> None:
        self._endpoint = endpoint
        self._track = track

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        return self._endpoint.connect(protocolFactory).addCallback(self._track)


@implementer(IStreamClientEndpoint)
class BOSHEndpoint:
    """
    Connects an XMPP stream to C{domain} through the BOSH service at
    C{url}. Like a TCP connect it succeeds before the server is heard
    from: failures are lost connections, for the session to report.
    """

    def __init__(self, reactor: Any, url: str, domain: str, trustRoot: IOpenSSLTrustRoot | None = None,
                 wait: int = 60, newRid: Callable[[], int] | None = None) -> None:  # fmt: skip
        """
        @param trustRoot: who issues the server's certificate (the
            session's; the system's if L{None}).
        @param wait: the longest the server may hold a request.
        @param newRid: the first request id of each session (random).
        """
        self._reactor = reactor
        self._url = url
        self._domain = domain
        self._trustRoot = trustRoot
        self._wait = wait
        self._newRid = newRid

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        # One pool per session, so a request of one never waits behind
        # another's long poll.
        connections = _Connections(self._reactor, BrowserLikePolicyForHTTPS(self._trustRoot))
        agent = Agent.usingEndpointFactory(self._reactor, connections, pool=connections.pool)
        client = BOSHClient(rid=self._newRid() if self._newRid else None, wait=self._wait)
        secure = self._url.startswith("https://")
        transportClass = SecureBOSHTransport if secure else BOSHTransport
        transport = transportClass(self._reactor, self._url, client, agent, connections)
        protocol = protocolFactory.buildProtocol(transport.getPeer())
        if protocol is None:
            return defer.fail(ConnectionRefusedError("the factory built no protocol"))
        client.open(self._domain)
        transport.attach(protocol)
        return defer.succeed(protocol)
