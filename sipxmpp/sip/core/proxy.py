"""
The edge proxy core (RFC 3261 §16): policy, routing and forwarding.

Sans-IO: the transports call L{Proxy.messageReceived} with a parsed message
and the L{Peer} it came from; the proxy sends bytes through the C{send}
callable it was given and runs its timers on an injected clock.

Policy, which makes it an edge proxy and not an open relay:

  - a request from a phone (a source inside C{trusted_networks}) goes to the
    configured upstream, and nowhere else, without any P-Asserted-Identity
    (RFC 3325 §5); it is of the user its From names or, for an anonymous
    From, of the user registered from where it comes
    (L{PhoneRoutes.callerAoR});
  - a request from the upstream goes to the phone whose registered (or
    dialog) contact its Request-URI names, at the address that phone sends
    from; any other target is refused with 403;
  - anything from any other source is refused with 403;
  - a request addressed to the gateway itself is not forwarded but answered
    by an L{ILocalHandler} (L{sipxmpp.sip.core.local}): a PUBLISH from an
    allowed publisher (C{[ingest] publishers}), or any PUBLISH when there is
    no upstream, by the event state compositor
    (L{sipxmpp.sip.core.publications}), which feeds the telephony state; an
    OPTIONS to the gateway's own address with 200.

It keeps itself in the path: REGISTER gets a Path (RFC 3327) — or, for
registrars without Path support, its Contact is rewritten to point here —
and dialog-forming requests get a Record-Route (two, RFC 5658, when the two
sides use different transports). Every forwarded request and response is
reported to the L{IProxyObserver}s, which derive telephony state from them.
"""

from __future__ import annotations

import functools
import ipaddress
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import Interface, implementer

from sipxmpp.sip.core.local import ILocalHandler
from sipxmpp.sip.core.metrics import IMetrics
from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.core.phoneroutes import (
    PhoneRoutes,
    Registered,
    ipAddress,
    localURI,
    shortHash,
)
from sipxmpp.sip.core.registrations import Binding
from sipxmpp.sip.core.transaction import (
    T1,
    ClientTransaction,
    IClientTransactionUser,
    NullUser,
    Send,
    ServerTransaction,
    State,
    hopByHopRequest,
)
from sipxmpp.sip.wire.errors import SIPParseError
from sipxmpp.sip.wire.message import SIPRequest, SIPResponse
from sipxmpp.sip.wire.parser import parseMessage
from sipxmpp.sip.wire.responses import makeResponse
from sipxmpp.sip.wire.uri import SIPURI, URI

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Requests that create a dialog, and so get a Record-Route.
DIALOG_FORMING = frozenset(("INVITE", "SUBSCRIBE", "REFER"))
# RFC 3261 §18.1.1: a request larger than this goes over TCP, not UDP.
UDP_MTU_LIMIT = 1300


@dataclass(frozen=True, slots=True)
class Leg:
    """
    Which side a request came from, and which user of ours it concerns.

    @ivar fromPhone: the request came from a phone (else from the upstream).
    @ivar aor: the normalised AoR of the phone's user on this leg: the From
        of a phone's request (for an anonymous From, the AoR registered from
        where it comes), the registered AoR of the contact a request from
        the upstream goes to.
    """

    fromPhone: bool
    aor: str | None


@functools.lru_cache(maxsize=4096)
def _leg(fromPhone: bool, aor: str | None) -> Leg:
    # Shared: every transaction of a user keeps one for up to 64*T1.
    return Leg(fromPhone, aor)


class IProxyObserver(Interface):
    """
    Sees what the proxy forwards. Must return quickly and never raise.
    """

    def requestForwarded(request: SIPRequest, leg: Leg) -> None:
        """
        C{request} (as received, before our changes) was forwarded.
        """

    def responseForwarded(request: SIPRequest, response: SIPResponse, leg: Leg) -> None:
        """
        C{response} to C{request} is being passed back to the request's
        sender; timeouts appear as 408 responses made by the proxy.
        """


@dataclass(frozen=True)
class ProxySettings:
    """
    What the proxy needs to know about itself and its neighbours.

    @ivar local: our address per transport (C{"UDP"}, C{"TCP"}, C{"TLS"}),
        as written into Via, Record-Route and Path.
    @ivar upstream: the registrar / SIP core (an IP address), or L{None}
        when the gateway forwards nothing (it only takes PUBLISH).
    @ivar trustedNetworks: where phones may send from.
    @ivar registerMode: C{"path"} or C{"contact"} (rewrite Contact).
    @ivar public: in a worker process (C{[sip] workers}), the address per
        transport the phones send to, shared by all workers: the
        Record-Route entry facing a phone names it, while C{local} is the
        worker's own, in Via, Path and the entry facing the upstream.
    @ivar aliases: further addresses that are ours (the other workers'):
        Route entries naming them are popped, their Vias count for loops.
    """

    local: dict[str, Peer]
    upstream: Peer | None
    trustedNetworks: tuple[Network, ...]
    registerMode: str = "path"
    public: dict[str, Peer] | None = None
    aliases: tuple[Peer, ...] = ()


class RoutingError(Exception):
    """
    The request cannot be forwarded; answer it with C{code}.
    """

    def __init__(self, code: int, reason: str,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason
        self.headers = headers


@implementer(IClientTransactionUser)
@dataclass(eq=False, slots=True)
class _Forward:
    """
    One request in flight: its server and client transactions, whose user
    it is.
    """

    proxy: Proxy
    received: SIPRequest
    leg: Leg
    source: Peer
    serverKey: tuple[str, str, str]
    server: ServerTransaction = field(init=False)
    client: ClientTransaction | None = None
    clientKey: tuple[str, str] | None = None
    cancelPending: bool = False
    giveUp: IDelayedCall | None = None
    registered: Registered | None = None

    def transactionTerminated(self, transaction: object) -> None:
        if transaction is self.server:
            self.proxy._servers.pop(self.serverKey, None)
        else:
            self.proxy._clients.pop(self.clientKey, None)  # type: ignore[arg-type]

    def transactionResponse(self, transaction: object, response: SIPResponse) -> None:
        self.proxy._clientResponse(self, response)

    def transactionTimedOut(self, transaction: object, code: int) -> None:
        self.proxy._clientTimedOut(self, code)

    def transactionTimerC(self, transaction: object) -> None:
        self.proxy._timerC(self)


@implementer(IClientTransactionUser)
@dataclass(eq=False, slots=True)
class _OwnRequest:
    """
    The user of a request the gateway sends on its own behalf: forgets the
    transaction when it ends and tells the sender everything else.
    """

    clients: dict[tuple[str, str], ClientTransaction]
    key: tuple[str, str]
    user: IClientTransactionUser

    def transactionTerminated(self, transaction: object) -> None:
        self.clients.pop(self.key, None)
        self.user.transactionTerminated(transaction)

    def transactionResponse(self, transaction: object, response: SIPResponse) -> None:
        self.user.transactionResponse(transaction, response)

    def transactionTimedOut(self, transaction: object, code: int) -> None:
        self.user.transactionTimedOut(transaction, code)

    def transactionTimerC(self, transaction: object) -> None:
        self.user.transactionTimerC(transaction)


@dataclass(eq=False, slots=True)
class _CancelUser(NullUser):
    """
    The user of a CANCEL we send: forgets it when it ends, and reports a
    481 or a timeout (the answer to a CANCEL changes nothing else, §9.1).
    """

    proxy: Proxy
    key: tuple[str, str]
    peer: Peer

    def transactionTerminated(self, transaction: object) -> None:
        self.proxy._clients.pop(self.key, None)

    def transactionResponse(self, transaction: object, response: SIPResponse) -> None:
        if response.code == 481:
            self.proxy._answered481("CANCEL", self.peer)

    def transactionTimedOut(self, transaction: object, code: int) -> None:
        self.proxy._timedOut("CANCEL", self.peer, code)


class LogLimiter:
    """
    Rate-limits log lines: at most one per key every C{interval} seconds of
    C{clock}, telling how many were held back since the last.
    """

    MAX_KEYS = 4096

    def __init__(self, clock: IReactorTime, interval: float = 60.0) -> None:
        self._clock = clock
        self.interval = interval
        self._keys: dict[object, list[float]] = {}  # key -> [next line at, held back]

    def allow(self, key: object) -> int | None:
        """
        C{None} if a line for C{key} is to be held back; else how many were
        held back since the last line.
        """
        now = self._clock.seconds()
        entry = self._keys.get(key)
        if entry is not None and now < entry[0]:
            entry[1] += 1
            return None
        if entry is None and len(self._keys) >= self.MAX_KEYS:
            for old in [k for k, e in self._keys.items() if e[0] <= now]:
                del self._keys[old]
        self._keys[key] = [now + self.interval, 0]
        return int(entry[1]) if entry is not None else 0


class _Overloaded(RoutingError):
    """
    A new call while the gateway is overloaded (RFC 3261 §21.5.4): the
    caller may try again, here or elsewhere, in a few seconds.
    """

    def __init__(self) -> None:
        super().__init__(503, "Service Unavailable", (("Retry-After", "5"),))


def _privacyId(request: SIPRequest) -> bool:
    """
    Does C{request} ask for its asserted identity to be withheld (RFC 3325
    §7, C{Privacy: id})?
    """
    try:
        values = request.getHeaderValues("Privacy")
    except SIPParseError:
        return True  # unreadable: err on the side of privacy
    return any(token.strip().lower() == "id"
               for value in values for token in value.split(";"))


@functools.lru_cache(maxsize=4096)
def isInNetworks(host: str, networks: tuple[Network, ...]) -> bool:
    """
    Is address C{host} inside one of C{networks}? Memoised like
    L{ipAddress}: every message asks it of its source.
    """
    address = ipAddress(host)
    return any(address in network for network in networks)


@functools.lru_cache(maxsize=4096)
def _hostPort(host: str, port: int | None, secure: bool) -> tuple[str, int] | None:
    """
    A URI's address in one spelling (C{::1} for C{[0:0::1]}) and its port,
    the default one when none is written; L{None} for a host name. Memoised
    like L{isInNetworks}: every Route entry of every request is asked.
    """
    try:
        address = ipAddress(host.strip("[]"))
    except ValueError:
        return None
    return str(address), port or (5061 if secure else 5060)


class Proxy:
    """
    The transaction-stateful edge proxy.

    @param clock: runs the transaction timers.
    @param settings: addresses and policy.
    @param send: transmits bytes to a peer (the transports).
    @param aorOf: normalises a From/To URI into an AoR, or returns C{None}.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        settings: ProxySettings,
        send: Send,
        aorOf: Callable[[URI], str | None],
        metrics: IMetrics,
    ) -> None:
        self._clock = clock
        self.settings = settings
        self._send = send
        self._aorOf = aorOf
        self.metrics = metrics
        #: Holds back repeated lines about one peer (481s, timeouts).
        self.logLimiter = LogLimiter(clock)
        self.routes = PhoneRoutes(clock, settings.local, settings.registerMode)
        self.registrations = self.routes.registrations
        # Method -> the handlers of requests addressed to us (PUBLISH from
        # the core, OPTIONS probes): one dict lookup per request.
        self._local: dict[str, list[ILocalHandler]] = {}
        self.dialogTargets = self.routes.dialogTargets
        self._observers: list[IProxyObserver] = []
        self._servers: dict[tuple[str, str, str], _Forward] = {}
        self._clients: dict[tuple[str, str], ClientTransaction] = {}
        ours = [*settings.local.values(), *(settings.public or {}).values(), *settings.aliases]
        self._ourSentBy = {peer.hostPort.lower() for peer in ours}
        self._ourHosts = {(str(ipaddress.ip_address(peer.host)), peer.port) for peer in ours}
        # Memoised per proxy, by host alone: isInNetworks' own memo hashes
        # the networks (in Python) on every call.
        self._isTrustedHost = functools.lru_cache(maxsize=4096)(
            functools.partial(isInNetworks, networks=settings.trustedNetworks))
        #: Tells whether new calls are to be refused (the composition root
        #: connects it to a L{sipxmpp.sip.shell.overload.OverloadMonitor}).
        self.isOverloaded: Callable[[], bool] = lambda: False

    def addObserver(self, observer: IProxyObserver) -> None:
        """
        Report forwarded requests and responses to C{observer}.
        """
        self._observers.append(observer)

    def addLocalHandler(self, handler: ILocalHandler) -> None:
        """
        Let C{handler} answer the requests addressed to the gateway that it
        accepts, instead of forwarding them (first added, first asked).
        """
        for method in handler.methods:
            self._local.setdefault(method, []).append(handler)

    def localMethods(self) -> frozenset[str]:
        """
        The methods some local handler takes.
        """
        return frozenset(self._local)

    def localHandlers(self, method: str) -> list[ILocalHandler]:
        """
        The handlers asked about requests of C{method}.
        """
        return list(self._local.get(method, ()))

    def sendRequest(self, data: bytes, target: Peer,
                    user: IClientTransactionUser) -> ClientTransaction:  # fmt: skip
        """
        Send a request of the gateway's own (a SUBSCRIBE of its own) to
        C{target} in a client transaction: C{data} is the whole request but
        its Via, which is ours with a fresh branch; C{user} is told of its
        responses (our Via still on top), its timeout and its end.

        @raise SIPParseError: if C{data} is not a request.
        """
        branch = f"z9hG4bK-own-{secrets.token_hex(8)}"
        line, rest = data.split(b"\r\n", 1)
        via = self._via(target, branch).encode("ascii")
        request = parseMessage(line + b"\r\nVia: " + via + b"\r\n" + rest)
        if not isinstance(request, SIPRequest):
            raise SIPParseError("not a request")
        key = (branch, request.method)
        client = ClientTransaction(self._clock, request, target, self._send,
                                   _OwnRequest(self._clients, key, user))  # fmt: skip
        self._clients[key] = client
        client.start()
        return client

    @property
    def activeTransactions(self) -> int:
        """
        Server plus client transactions alive.
        """
        return len(self._servers) + len(self._clients)

    # --- entry points ---

    def messageReceived(self, message: SIPRequest | SIPResponse, source: Peer) -> None:
        """
        Handle one parsed message from C{source}.
        """
        try:
            if isinstance(message, SIPRequest):
                self._requestReceived(message, source)
            else:
                self._responseReceived(message, source)
        except SIPParseError as error:
            # A header parsed lazily turned out malformed.
            self.metrics.increment("sipxmpp_sip_malformed_total", kind="header")
            self.log.info("malformed message from {source}: {error}", source=source, error=error)
            if isinstance(message, SIPRequest) and message.method != "ACK" and error.code:
                self._statelessReply(message, source, error.code, error.reason)

    def deliveryFailed(self, peer: Peer) -> None:
        """
        The transport could not reach C{peer}: fail what waits on it.
        """
        for client in list(self._clients.values()):
            if client.peer == peer:
                client.transportFailed()

    # --- requests ---

    def _requestReceived(self, request: SIPRequest, source: Peer) -> None:
        via = request.topVia
        if not via.hasRFC3261Branch:
            raise SIPParseError("Via has no RFC 3261 branch (RFC 2543 peers are not supported)")
        self._markReceived(request, source)
        handlers = self._local.get(request.method)
        if handlers is not None:
            forwarding = self.settings.upstream is not None
            for handler in handlers:
                if handler.accepts(request, source, forwarding):
                    self._answerLocally(handler, request, source)
                    return
        fromUpstream = self._isUpstream(source)
        if not fromUpstream and not self._isTrusted(source):
            self.metrics.increment("sipxmpp_sip_refused_total", reason="untrusted-source")
            self.log.warn(
                "refused {method} from untrusted {source}", method=request.method, source=source
            )
            if request.method != "ACK":
                self._statelessReply(request, source, 403, "Forbidden")
            return
        method = request.method
        key = self._serverKey(request)
        if method == "ACK":
            forward = self._servers.get(key)
            # RFC 6026 §7.1: after a 2xx (Accepted) an ACK is the 2xx's,
            # end to end, even from a UA that kept the INVITE's branch.
            if forward is not None and forward.server.state is not State.ACCEPTED:
                forward.server.ackReceived()
                return
            self._forwardACK(request, source, fromUpstream)
            return
        if method == "CANCEL":
            self._cancelReceived(request, source)
            return
        existing = self._servers.get(key)
        if existing is not None:
            existing.server.requestRetransmitted()
            return
        leg = _leg(not fromUpstream, None)
        forward = _Forward(self, request, leg, source, key)
        forward.server = ServerTransaction(self._clock, request, source, self._send, forward)
        self._servers[key] = forward
        try:
            self._forwardRequest(forward)
        except RoutingError as error:
            if isinstance(error, _Overloaded):
                # Counted, not logged one by one: the monitor logs the episode.
                self.metrics.increment("sipxmpp_sip_refused_total", reason="overload")
            else:
                self.metrics.increment("sipxmpp_sip_refused_total", reason=str(error.code))
                self.log.info(
                    "refused {method} {uri} from {source}: {code} {reason}",
                    method=method, uri=request.uriText, source=source,
                    code=error.code, reason=error.reason,
                )
            self._respond(forward, makeResponse(request, error.code, error.reason,
                                                headers=error.headers))

    def _answerLocally(self, handler: ILocalHandler, request: SIPRequest, source: Peer) -> None:
        # Through a server transaction of its own: a retransmission gets the
        # same answer again instead of being handled twice (a second
        # publication: each success changes the entity-tag).
        key = self._serverKey(request)
        existing = self._servers.get(key)
        if existing is not None:
            existing.server.requestRetransmitted()
            return
        forward = _Forward(self, request, _leg(False, None), source, key)
        forward.server = ServerTransaction(self._clock, request, source, self._send, forward)
        self._servers[key] = forward
        forward.server.respond(handler.answer(request, source))

    def _forwardRequest(self, forward: _Forward) -> None:
        received = forward.received
        if received.method == "INVITE" and received.toTag is None and self.isOverloaded():
            raise _Overloaded()
        loop = self._loopHash(received)
        self._checkRequest(received, loop)
        outgoing = received.copy()  # after the checks: it has the URI they parsed
        target, leg = self._route(outgoing, forward.leg.fromPhone, forward.source)
        forward.leg = leg
        if received.method == "REGISTER" and leg.fromPhone:
            assert self.settings.upstream is not None  # a phone's request goes there
            forward.registered = self.routes.prepareRegister(outgoing, forward.source,
                                                             self.settings.upstream)
        if received.method in DIALOG_FORMING and received.toTag is None:
            self._recordRoute(outgoing, forward.source, target)
            if leg.fromPhone:
                self.routes.learnDialogTargets(outgoing, forward.source, leg.aor)
        target, branch = self._prepareOutgoing(outgoing, received, target, loop)
        # Our branch as made, not our new top Via parsed back.
        key = forward.clientKey = (branch, received.cseq.method)
        client = ClientTransaction(self._clock, outgoing, target, self._send, forward, timerC=True)
        forward.client = client
        self._clients[key] = client
        self._notify("requestForwarded", received, leg)
        self.metrics.increment("sipxmpp_sip_requests_forwarded_total", method=received.method)
        client.start()

    def _checkRequest(self, request: SIPRequest, loop: str) -> None:
        maxForwards = request.maxForwards
        if maxForwards is not None and maxForwards <= 0:
            raise RoutingError(483, "Too Many Hops")
        if request.hasHeader("proxy-require") and request.proxyRequire:
            raise RoutingError(420, "Bad Extension")
        request.uri  # noqa: B018 -- parse it now: a malformed one is answered 400
        # A loop needs a Via of ours whose branch carries this loop hash; a
        # case-blind byte search rules that out before any Via is parsed.
        marker = f"branch=z9hG4bK{loop}-".lower().encode("ascii")
        if marker not in b"\n".join(request.rawValues("via")).lower():  # no LF in marker
            return
        for via in request.vias:
            if (via.sentBy.lower() in self._ourSentBy and via.branch is not None
                    and via.branch.startswith(f"z9hG4bK{loop}-")):
                raise RoutingError(482, "Loop Detected")

    def _route(self, outgoing: SIPRequest, fromPhone: bool, source: Peer) -> tuple[Peer, Leg]:
        """
        Pop our own Route entries and choose the next hop by policy.
        """
        self._popOwnRoutes(outgoing)
        if fromPhone:
            if self.settings.upstream is None:
                raise RoutingError(403, "Forbidden (no upstream: this gateway forwards nothing)")
            # RFC 3325 §5: an identity asserted by a phone is not the trust
            # domain's; the upstream must not take it for one of ours.
            outgoing.removeHeader("P-Asserted-Identity")
            return self.settings.upstream, _leg(
                True, self.routes.callerAoR(outgoing, source, self._aorOf))
        if outgoing.hasHeader("privacy") and _privacyId(outgoing):
            # RFC 3325 §5: the phone is outside the trust domain.
            outgoing.removeHeader("P-Asserted-Identity")
        if outgoing.topRoute is not None:
            raise RoutingError(403, "Forbidden (will not route beyond a phone)")
        binding = self._bindingFor(outgoing.uri)
        if binding is None:
            raise RoutingError(403, "Forbidden (not a contact registered here)")
        if binding.contact != outgoing.uriText and self._isOurs(outgoing.uri):
            # Contact mode: a contact we rewrote goes back to the phone's
            # own. A phone's own URI (a GRUU) is never replaced.
            outgoing.setURI(binding.contact)
        aor = binding.aor or self._aorOf(outgoing.toAddr.uri)
        return binding.flow, _leg(False, aor)

    def _bindingFor(self, uri: URI) -> Binding | None:
        return self.routes.bindingFor(uri)

    def _popOwnRoutes(self, request: SIPRequest) -> None:
        route = request.topRoute
        while route is not None and self._isOurs(route.uri):
            request.popRoute()
            route = request.topRoute

    def _isOurs(self, uri: URI) -> bool:
        if not isinstance(uri, SIPURI):
            return False
        return _hostPort(uri.host, uri.port, uri.secure) in self._ourHosts

    def _prepareOutgoing(self, outgoing: SIPRequest, received: SIPRequest, target: Peer,
                         loop: str) -> tuple[Peer, str]:
        """
        Max-Forwards, our Via, and the transport (TCP when too big for UDP):
        the target and the branch of our Via.
        """
        if received.maxForwards is None:
            outgoing.setMaxForwards(70)
        else:
            outgoing.decrementMaxForwards()
        # §18.1.1: too big for UDP goes over TCP -- towards the upstream
        # only: a phone registered over UDP rarely accepts TCP, and on its
        # LAN a fragmented datagram still arrives.
        if (target == self.settings.upstream and target.transport == "UDP"
                and "TCP" in self.settings.local
                and outgoing.size() + 120 > UDP_MTU_LIMIT):
            target = target._replace(transport="TCP")
        branch = self._branch(received, loop)
        outgoing.prependVia(self._via(target, branch))
        return target, branch

    def _via(self, target: Peer, branch: str) -> str:
        local = self.settings.local[target.transport]
        rport = ";rport" if target.transport == "UDP" else ""
        return f"SIP/2.0/{target.transport} {local.hostPort};branch={branch}{rport}"

    def _branch(self, received: SIPRequest, loop: str) -> str:
        via = received.topVia
        kind = "INVITE" if received.method in ("ACK", "CANCEL") else received.method
        return f"z9hG4bK{loop}-{shortHash(via.branch, via.sentBy, kind)}"

    def _loopHash(self, request: SIPRequest) -> str:
        # §16.6 step 8: what a looped request repeats but a spiral changes.
        # The Route set is included because in-dialog requests between two
        # of our users pass us twice with the same Request-URI; only the
        # Route set (ours and the registrar's, then ours) tells them apart.
        return shortHash(request.uriText, request.callID, request.fromTag, request.toTag,
                     request.cseq.number, request.getHeaders("Route"))[:10]

    def _localURI(self, transport: str, towards: Peer | None = None) -> str:
        public = self.settings.public
        if public is not None and towards is not None and not self._isUpstream(towards):
            return localURI(public[transport], transport)
        return localURI(self.settings.local[transport], transport)

    def _recordRoute(self, outgoing: SIPRequest, source: Peer, target: Peer) -> None:
        # RFC 5658: the entry nearer the callee faces the next hop; when the
        # sides differ in transport the caller's side gets its own entry. A
        # worker's two sides differ in port (public towards the phone, its
        # own towards the upstream), so each gets its entry too.
        facingSource = self._localURI(source.transport, source)
        facingTarget = self._localURI(target.transport, target)
        if facingSource != facingTarget:
            outgoing.addRecordRoute(f"<{facingSource}>")
        outgoing.addRecordRoute(f"<{facingTarget}>")

    # --- ACK and CANCEL ---

    def _forwardACK(self, request: SIPRequest, source: Peer, fromUpstream: bool) -> None:
        """
        An ACK for a 2xx is end-to-end: forward it statelessly by policy.
        """
        loop = self._loopHash(request)
        try:
            self._checkRequest(request, loop)
            outgoing = request.copy()  # as in _forwardRequest
            target, leg = self._route(outgoing, not fromUpstream, source)
        except RoutingError as error:
            self.metrics.increment("sipxmpp_sip_refused_total", reason=str(error.code))
            self.log.info("dropped ACK from {source}: {reason}", source=source,
                          reason=error.reason)
            return
        target, _ = self._prepareOutgoing(outgoing, request, target, loop)
        self._notify("requestForwarded", request, leg)
        self._send(outgoing.toBytes(), target)

    def _cancelReceived(self, cancel: SIPRequest, source: Peer) -> None:
        # The CANCEL has a server transaction of its own (§9.2): its
        # retransmissions get the same 200 again and start nothing.
        key = self._serverKey(cancel)
        existing = self._servers.get(key)
        if existing is not None:
            existing.server.requestRetransmitted()
            return
        forward = self._servers.get(self._serverKey(cancel, "INVITE"))
        if forward is None:
            self._statelessReply(cancel, source, 481, "Call/Transaction Does Not Exist")
            return
        answered = _Forward(self, cancel, forward.leg, source, key)
        answered.server = ServerTransaction(self._clock, cancel, source, self._send, answered)
        self._servers[key] = answered
        answered.server.respond(makeResponse(cancel, 200, "OK"))
        client = forward.client
        if client is None or client.state not in (State.CALLING, State.PROCEEDING):
            return
        if client.provisionalSeen:
            self._sendCancel(forward)
        else:
            # §9.1: no CANCEL before a provisional response.
            forward.cancelPending = True

    def _sendCancel(self, forward: _Forward) -> None:
        client = forward.client
        assert client is not None and client.request is not None
        invite = client.request
        cancel = hopByHopRequest(invite, "CANCEL")
        key = (invite.topVia.branch or "", "CANCEL")
        if key in self._clients:
            return  # already cancelling (Timer C, then the phone's CANCEL)
        tx = ClientTransaction(self._clock, cancel, client.peer, self._send,
                               _CancelUser(self, key, client.peer))
        self._clients[key] = tx
        tx.start()
        # §16.8 / §9.1: if no final response comes within 64*T1, give up.
        forward.giveUp = self._clock.callLater(64 * T1, self._giveUp, forward)

    def _giveUp(self, forward: _Forward) -> None:
        forward.giveUp = None
        client = forward.client
        if client is not None and client.state in (State.CALLING, State.PROCEEDING):
            self._clientTimedOut(forward, 408)
            # Or a branch that rang and never answered, not even the CANCEL,
            # stays in _clients for good (§9.1 says destroy it now).
            client.abandon()

    # --- responses ---

    def _responseReceived(self, response: SIPResponse, source: Peer) -> None:
        via = response.topVia
        if via.sentBy.lower() not in self._ourSentBy:
            self.metrics.increment("sipxmpp_sip_responses_dropped_total", reason="not-ours")
            self.log.info("dropped {response!r} from {source}: top Via is not ours",
                          response=response, source=source)
            return
        client = self._clients.get((via.branch or "", response.cseq.method))
        if client is None:
            self.metrics.increment("sipxmpp_sip_responses_dropped_total", reason="no-transaction")
            self.log.debug("dropped {response!r}: no transaction", response=response)
            return
        client.responseReceived(response)

    def _clientResponse(self, forward: _Forward, response: SIPResponse) -> None:
        code = response.code
        if forward.cancelPending and code < 200:
            forward.cancelPending = False
            self._sendCancel(forward)
        if code >= 200 and forward.giveUp is not None:
            forward.giveUp.cancel()
            forward.giveUp = None
        if code == 100:
            return  # §16.7 step 3: 100 Trying is hop by hop
        if code == 481 and forward.client is not None:
            self._answered481(forward.received.method, forward.client.peer)
        response.popVia()
        if 200 <= code < 300:
            received = forward.received
            if received.method == "REGISTER" and forward.leg.fromPhone:
                if forward.leg.aor is not None:
                    self._replaced(forward.leg.aor, self.routes.registered(
                        forward.leg.aor, forward.source, forward.registered or [], response))
            elif received.method in DIALOG_FORMING and not forward.leg.fromPhone:
                # The phone answered a call: its Contact is a dialog target.
                assert forward.client is not None
                self.routes.learnDialogTargets(response, forward.client.peer, forward.leg.aor)
        self._respond(forward, response)

    def _clientTimedOut(self, forward: _Forward, code: int) -> None:
        reason = "Request Timeout" if code == 408 else "Service Unavailable"
        self._timedOut(forward.received.method,
                       forward.client.peer if forward.client else None, code)
        if forward.received.method == "INVITE" and forward.server.state is State.ACCEPTED:
            return
        self._respond(forward, makeResponse(forward.received, code, reason))

    def _timerC(self, forward: _Forward) -> None:
        client = forward.client
        if client is None or client.state not in (State.CALLING, State.PROCEEDING):
            return
        if client.provisionalSeen:
            self._sendCancel(forward)
        else:
            self._clientTimedOut(forward, 408)

    def _respond(self, forward: _Forward, response: SIPResponse) -> None:
        self._notify("responseForwarded", forward.received, response, forward.leg)
        forward.server.respond(response)
        if response.code >= 200:
            # Kept for up to 64*T1 from now, and rarely read again.
            forward.received.compact()

    # --- reports: counted, and logged at most once a minute per peer ---

    def _timedOut(self, method: str, peer: Peer | None, code: int) -> None:
        self.metrics.increment("sipxmpp_sip_transaction_timeouts_total", code=str(code))
        held = self.logLimiter.allow(("timeout", peer))
        if held is not None:
            self.log.info("no answer from {peer} to {method}; answering {code}"
                          " ({held} more since the last line)",
                          peer=peer, method=method, code=code, held=held)

    def _answered481(self, method: str, peer: Peer) -> None:
        self.metrics.increment("sipxmpp_sip_answered_481_total", method=method)
        held = self.logLimiter.allow(("481", peer))
        if held is not None:
            self.log.info("{peer} answered 481 (no such dialog or transaction) to {method}"
                          " ({held} more since the last line)",
                          peer=peer, method=method, held=held)

    def _replaced(self, aor: str, stale: list[Binding]) -> None:
        for binding in stale:
            self.metrics.increment("sipxmpp_sip_bindings_replaced_total")
            held = self.logLimiter.allow(("replaced", aor))
            if held is not None:
                self.log.info("binding {contact} of {aor} from {flow} replaced: the registrar"
                              " no longer lists it ({held} more since the last line)",
                              contact=binding.contact, aor=aor, flow=binding.flow, held=held)

    # --- helpers ---

    def _statelessReply(self, request: SIPRequest, source: Peer, code: int, reason: str) -> None:
        try:
            data = makeResponse(request, code, reason).toBytes()
        except (SIPParseError, ValueError, KeyError):
            return
        self._send(data, source)

    def _serverKey(self, request: SIPRequest, method: str | None = None) -> tuple[str, str, str]:
        via = request.topVia
        if method is None:
            method = "INVITE" if request.method == "ACK" else request.method
        return (via.branch or "", via.sentBy.lower(), method)

    def _markReceived(self, request: SIPRequest, source: Peer) -> None:
        # §18.2.1 and RFC 3581: record where the request really came from.
        via = request.topVia
        received = None if via.host.strip("[]") == source.host else source.host
        rport = source.port if via.hasRport else None
        if received is not None or rport is not None:
            request.setTopViaReceived(received, rport)

    def _isUpstream(self, source: Peer) -> bool:
        # The upstream's address and port. A stream connection the upstream
        # opened itself comes from an ephemeral port: it is recognised by
        # address alone when that address is not also a phones' network (on
        # one host, configure the registrar to reuse its listening port,
        # e.g. Kamailio's tcp_reuse_port).
        upstream = self.settings.upstream
        if upstream is None:
            return False
        if source.host != upstream.host and ipAddress(source.host) != ipAddress(upstream.host):
            return False
        return source.port == upstream.port or (source.reliable and not self._isTrusted(source))

    def _isTrusted(self, source: Peer) -> bool:
        return self._isTrustedHost(source.host)

    def _notify(self, name: str, *args: object) -> None:
        for observer in self._observers:
            try:
                getattr(observer, name)(*args)
            except Exception:
                self.log.failure("proxy observer {observer} failed", observer=observer)

