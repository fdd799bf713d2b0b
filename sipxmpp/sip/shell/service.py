"""
The SIP half of the gateway, composed: transports, proxy core, observer.

L{buildSIP} is called by the composition root (L{sipxmpp.tap}) with
validated settings; it resolves the configured upstream and the server of
C{[ingest] subscribe} (the only names the gateway ever resolves) and wires
the pieces together. In SUBSCRIBE mode the proxy gets a
L{DialogSubscriptions} as the handler of its NOTIFYs (L{subscriptionsOf}
finds it), which L{SubscriptionsService} starts and stops.

Back-publishing (C{[backpublish]}, issue 18) needs the users' XMPP
presence, an L{IPresenceSource} the caller gives: in C{serve} mode the
proxy gets a L{PresenceAgent} as the handler of SUBSCRIBE C{Event:
presence}, in C{publish} mode a L{PresencePublisher} PUBLISHes at
C{presence_server}; L{backpublishingOf} finds either, wrapped in the
L{BackpublishService} that starts and stops it. Without a source (or, for
C{serve}, without an C{authorise}), a mode other than C{off} is refused
at start (L{BackpublishError}): never a silent no-op.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any
from weakref import WeakKeyDictionary

from twisted.application import service

from sipxmpp.sip.core.local import OptionsResponder
from sipxmpp.sip.core.metrics import IMetrics
from sipxmpp.sip.core.observer import TelephonyEvents, TelephonyObserver
from sipxmpp.sip.core.peer import DEFAULT_PORTS, Peer
from sipxmpp.sip.core.presence import IPresenceSource
from sipxmpp.sip.core.presenceagent import Authorise, PresenceAgent
from sipxmpp.sip.core.presencepublisher import PresencePublisher
from sipxmpp.sip.core.proxy import Network, Proxy, ProxySettings
from sipxmpp.sip.core.publications import EventStateCompositor
from sipxmpp.sip.core.subscriptions import DialogSubscriptions
from sipxmpp.sip.core.timers import TimerQueue
from sipxmpp.sip.shell.endpoints import ListenSpec
from sipxmpp.sip.shell.transport import SIPTransports
from sipxmpp.sip.wire.parser import Limits
from sipxmpp.sip.wire.uri import SIPURI, URI, parseURI
from sipxmpp.telephony.state import TelephonyStateMachine


@dataclass(frozen=True)
class SIPSettings:
    """
    C{[sip]}: where the edge proxy listens and where it forwards (built by
    L{sipxmpp.config} from the configuration file).
    """

    listen: tuple[ListenSpec, ...]
    upstream: str
    domain: str
    trustedNetworks: tuple[Network, ...]
    address: str
    registerMode: str
    dialogWatchdog: float
    streamIdleTimeout: float
    maxConnections: int
    udpReceiveBuffer: int
    overloadLag: float
    overloadBacklog: float
    maxMessageSize: int
    maxHeaders: int
    maxHeaderLength: int
    maxBodySize: int
    workers: int = 1
    workerPorts: int = 0

    def workerPort(self, index: int) -> int:
        """
        The port of worker C{index} (UDP and TCP): in the Via, Record-Route
        and Path it adds, so that what belongs to its transactions and
        flows comes back to it.
        """
        return firstWorkerPort(self.listen, self.workerPorts) + index

    @property
    def advertisedAddress(self) -> str:
        """
        The IP address written into Via, Record-Route and Path: C{address},
        or the interface of the first listen endpoint that has one.
        """
        return self.address or next(s.interface for s in self.listen if s.interface)


@dataclass(frozen=True)
class IngestSettings:
    """
    C{[ingest]}: telephony state published to the gateway by a SIP core
    (RFC 3903 PUBLISH of dialog-info or PIDF).

    @ivar publishers: the networks allowed to PUBLISH; empty refuses all.
    @ivar minExpires: shorter publications are answered 423.
    @ivar maxExpires: longer ones are granted this long (also the lifetime
        of a PUBLISH without Expires).
    @ivar subscribe: the SIP URI of a server to SUBSCRIBE at for the
        dialog state of every provisioned user; empty: off.
    @ivar subscribeExpires: the Expires those SUBSCRIBEs ask for.
    """

    publishers: tuple[Network, ...]
    minExpires: int
    maxExpires: int
    subscribe: str = ""
    subscribeExpires: int = 3600


@dataclass(frozen=True)
class BackpublishSettings:
    """
    C{[backpublish]}: the users' XMPP presence back to SIP (issue 18).

    @ivar mode: C{"off"}; C{"serve"}: the gateway answers SUBSCRIBE
        C{Event: presence} for provisioned users (a presence agent);
        C{"publish"}: it PUBLISHes their presence at C{presenceServer}.
    @ivar presenceServer: the SIP URI of the presence server (publish).
    @ivar allowedWatchers: serve: watcher AoRs (normal form) or domains
        shown every user's presence (unless the user opted out), beside
        those the user's roster authorises.
    @ivar minExpires: serve: shorter SUBSCRIBEs are answered 423.
    @ivar maxExpires: serve: longer SUBSCRIBEs are lowered to this (and
        it is the lifetime of one without Expires); publish: the Expires
        each PUBLISH asks for.
    """

    mode: str = "off"
    presenceServer: str = ""
    minExpires: int = 60
    maxExpires: int = 3600
    allowedWatchers: tuple[str, ...] = ()


def firstWorkerPort(listen: Iterable[ListenSpec], workerPorts: int) -> int:
    """
    C{[sip] worker_ports}, or when 0 the port after the highest listen port.
    """
    return workerPorts or max(spec.port for spec in listen) + 1


class UpstreamError(Exception):
    """
    The configured upstream cannot be used; the message says why.
    """


class BackpublishError(UpstreamError):
    """
    C{[backpublish]} cannot be served as configured; the message (one
    line, naming the key) says why.
    """


def upstreamPeer(uriText: str) -> Peer:
    """
    The transport address of C{[sip] upstream}, resolving a host name once.

    @raise UpstreamError: if the name does not resolve.
    """
    uri = parseURI(uriText)
    assert isinstance(uri, SIPURI)  # validated by sipxmpp.config
    transport = str(uri.params.get("transport") or "udp").upper()
    host = uri.host.strip("[]")
    port = uri.port or DEFAULT_PORTS[transport]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as e:
            raise UpstreamError(f"cannot resolve upstream host {host!r}: {e}") from None
        host = str(infos[0][4][0])
    return Peer(transport, host, port)


def buildSIP(
    settings: SIPSettings,
    reactor: Any,
    metrics: IMetrics,
    machine: TelephonyStateMachine | TelephonyEvents,
    aorOf: Callable[[URI], str | None],
    ingest: IngestSettings | None = None,
    isProvisioned: Callable[[str], bool] | None = None,
    backpublish: BackpublishSettings | None = None,
    presence: IPresenceSource | None = None,
    authorise: Authorise | None = None,
    worker: int | None = None,
) -> tuple[SIPTransports, Proxy]:
    """
    Build the SIP service and the proxy core, and connect the proxy's
    observations to the telephony state machine; given C{isProvisioned},
    PUBLISH from C{ingest}'s publishers feeds that machine too, and so do
    the NOTIFYs of C{ingest}'s subscriptions (C{[ingest] subscribe}; the
    AoRs to subscribe for are told to L{subscriptionsOf} the proxy).

    @param isProvisioned: whether an AoR may be published for; called on
        the SIP path, so it must answer from memory.
    @param backpublish: C{[backpublish]}; a mode other than C{off} needs
        C{presence} (and for C{serve}, C{authorise} and C{isProvisioned}).
    @param presence: the users' XMPP presence, for back-publishing.
    @param authorise: C{authorise(watcherAoR, userAoR)} for C{serve}.
    @param worker: in SIP worker process C{worker} (C{[sip] workers}): the
        listen endpoints are shared with the other workers, and the
        worker's own port (L{SIPSettings.workerPort}) is in its Via,
        Path and the Record-Route entry facing the upstream; C{machine}
        then carries the events to the main process.
    @raise BackpublishError: for a back-publishing mode that cannot run.
    """
    address = settings.advertisedAddress
    local: dict[str, Peer] = {}
    for spec in settings.listen:
        local.setdefault(spec.transport, Peer(spec.transport, address, spec.port))
    public: dict[str, Peer] | None = None
    aliases: tuple[Peer, ...] = ()
    ownSpecs: tuple[ListenSpec, ...] = ()
    if worker is not None:
        public = local
        local = {t: p._replace(port=settings.workerPort(worker)) for t, p in public.items()}
        aliases = tuple(p._replace(port=settings.workerPort(i))
                        for i in range(settings.workers) for p in public.values())
        ownSpecs = tuple(_ownSpec(spec, settings.workerPort(worker)) for spec in
                         {spec.transport: spec for spec in reversed(settings.listen)}.values())
    upstream = upstreamPeer(settings.upstream) if settings.upstream else None
    if upstream is not None and upstream.transport not in local:
        raise UpstreamError(
            f"the upstream uses {upstream.transport} but [sip] listen has no "
            f"{upstream.transport.lower()}: endpoint to send it from"
        )
    subscribeAt: Peer | None = None
    if ingest is not None and ingest.subscribe:
        try:
            subscribeAt = upstreamPeer(ingest.subscribe)
        except UpstreamError as e:
            raise UpstreamError(f"[ingest] subscribe: {e}") from None
        if subscribeAt.transport not in local:
            raise UpstreamError(
                f"[ingest] subscribe: the server uses {subscribeAt.transport} but [sip] "
                f"listen has no {subscribeAt.transport.lower()}: endpoint to send it from"
            )
    publishAt = _backpublishTarget(backpublish, presence, authorise, isProvisioned, local)
    limits = Limits(
        maxMessageSize=settings.maxMessageSize,
        maxHeaderCount=settings.maxHeaders,
        maxHeaderLineLength=settings.maxHeaderLength,
        maxBodySize=settings.maxBodySize,
    )
    transports = SIPTransports(
        reactor, settings.listen, metrics, limits,
        idleTimeout=settings.streamIdleTimeout, maxConnections=settings.maxConnections,
        udpReceiveBuffer=settings.udpReceiveBuffer, ownSpecs=ownSpecs,
    )
    proxy = Proxy(
        # Under load the proxy has tens of thousands of transaction timers
        # pending and cancels nearly all: far cheaper on a TimerQueue than
        # as the reactor's DelayedCalls.
        TimerQueue(reactor),
        ProxySettings(local, upstream, settings.trustedNetworks, settings.registerMode,
                      public, aliases),
        transports.send,
        aorOf,
        metrics,
    )
    transports.handler = proxy.messageReceived
    transports.onDeliveryFailed = proxy.deliveryFailed
    proxy.addObserver(TelephonyObserver(machine, aorOf))
    if ingest is not None and isProvisioned is not None:
        assert isinstance(machine, TelephonyStateMachine)  # no workers (sipxmpp.config)
        proxy.addLocalHandler(EventStateCompositor(
            reactor, machine, aorOf, isProvisioned, ingest.publishers,
            minExpires=ingest.minExpires, maxExpires=ingest.maxExpires,
            defaultExpires=ingest.maxExpires, metrics=metrics,
        ))
    if ingest is not None and subscribeAt is not None:
        assert isinstance(machine, TelephonyStateMachine)  # no workers (sipxmpp.config)
        ours = local[subscribeAt.transport]
        transport = "" if ours.transport == "UDP" else f";transport={ours.transport.lower()}"
        proxy.addLocalHandler(DialogSubscriptions(
            reactor, machine, proxy.sendRequest, subscribeAt, ingest.subscribe,
            contact=f"sip:sipxmpp@{ours.hostPort}{transport}",
            fromURI=f"sip:sipxmpp@{settings.domain}",
            expires=ingest.subscribeExpires, metrics=metrics,
        ))
    if backpublish is not None and presence is not None and backpublish.mode != "off":
        _addBackpublishing(proxy, reactor, metrics, settings, backpublish, presence, authorise,
                           isProvisioned, publishAt, local, aorOf)  # fmt: skip
    # Keepalive probes (Kamailio dispatcher) ask the gateway itself.
    proxy.addLocalHandler(OptionsResponder([*local.values(), *(public or {}).values()],
                                           proxy.localMethods()))
    metrics.gauge("sipxmpp_sip_transactions", lambda: proxy.activeTransactions,
                  "SIP transactions in progress.")
    metrics.gauge("sipxmpp_sip_bindings", lambda: len(proxy.registrations),
                  "Contacts registered through the gateway.")
    transports.setName("sip")
    return transports, proxy


def _ownSpec(spec: ListenSpec, port: int) -> ListenSpec:
    """
    C{spec} on a worker's own C{port}.
    """
    description = f"{spec.description.split(':', 1)[0]}:port={port}" + "".join(
        f":{k}={v}" for k, v in spec.options) + (
        f":interface={spec.interface.replace(':', chr(92) + ':')}" if spec.interface else "")
    return replace(spec, port=port, description=description)


def _backpublishTarget(
    backpublish: BackpublishSettings | None,
    presence: IPresenceSource | None,
    authorise: Authorise | None,
    isProvisioned: Callable[[str], bool] | None,
    local: dict[str, Peer],
) -> Peer | None:
    """
    Check that C{backpublish} can run with what it was given; the resolved
    presence server in C{publish} mode.
    """
    if backpublish is None or backpublish.mode == "off":
        return None
    mode = backpublish.mode
    if presence is None or (mode == "serve" and (authorise is None or isProvisioned is None)):
        # The composition root always gives both: reaching this is a bug
        # in the caller, never a silent no-op.
        raise BackpublishError(
            f"[backpublish] mode = {mode}: needs the users' XMPP presence"
            + (" and their watchers' authorisation" if mode == "serve" else "")
        )
    if mode != "publish":
        return None
    try:
        server = upstreamPeer(backpublish.presenceServer)
    except UpstreamError as e:
        raise BackpublishError(f"[backpublish] presence_server: {e}") from None
    if server.transport not in local:
        raise BackpublishError(
            f"[backpublish] presence_server: the server uses {server.transport} but [sip] "
            f"listen has no {server.transport.lower()}: endpoint to send it from"
        )
    return server


def _addBackpublishing(
    proxy: Proxy,
    reactor: Any,
    metrics: IMetrics,
    settings: SIPSettings,
    backpublish: BackpublishSettings,
    presence: IPresenceSource,
    authorise: Authorise | None,
    isProvisioned: Callable[[str], bool] | None,
    publishAt: Peer | None,
    local: dict[str, Peer],
    aorOf: Callable[[URI], str | None],
) -> None:
    if backpublish.mode == "publish":
        assert publishAt is not None
        _backpublishing[proxy] = BackpublishService(PresencePublisher(
            reactor, presence, proxy.sendRequest, publishAt,
            expires=backpublish.maxExpires, metrics=metrics,
        ))  # fmt: skip
        return
    assert authorise is not None and isProvisioned is not None
    ours = local.get("UDP") or next(iter(local.values()))
    transport = "" if ours.transport == "UDP" else f";transport={ours.transport.lower()}"
    upstream = proxy.settings.upstream
    watchers = settings.trustedNetworks + (
        (ipaddress.ip_network(upstream.host),) if upstream is not None else ()
    )
    agent = PresenceAgent(
        reactor, presence, proxy.sendRequest, aorOf, isProvisioned, authorise,
        contact=f"sip:sipxmpp@{ours.hostPort}{transport}", watchers=watchers,
        minExpires=backpublish.minExpires, maxExpires=backpublish.maxExpires,
        defaultExpires=backpublish.maxExpires, metrics=metrics,
    )  # fmt: skip
    proxy.addLocalHandler(agent)
    _backpublishing[proxy] = BackpublishService(agent)


class BackpublishService(service.Service):
    """
    Starts back-publishing once SIP listens and ends it before SIP stops
    (final NOTIFYs, or PUBLISH removals): a child after C{sip}. Tell it
    the provisioned AoRs with L{aorsChanged}.

    @ivar backpublisher: the L{PresenceAgent} (serve) or the
        L{PresencePublisher} (publish).
    """

    def __init__(self, backpublisher: PresenceAgent | PresencePublisher) -> None:
        self.backpublisher = backpublisher

    def aorsChanged(self, added: Iterable[str], removed: Iterable[str]) -> None:
        """
        The provisioned AoRs changed (L{ProvisionedAoRs.addListener}).
        """
        self.backpublisher.aorsChanged(added, removed)

    def startService(self) -> None:
        super().startService()
        if isinstance(self.backpublisher, PresencePublisher):
            self.backpublisher.start()

    def stopService(self) -> None:
        super().stopService()
        self.backpublisher.stop()


_backpublishing: WeakKeyDictionary[Proxy, BackpublishService] = WeakKeyDictionary()


def backpublishingOf(proxy: Proxy) -> BackpublishService | None:
    """
    The back-publishing L{buildSIP} gave C{proxy}, if any.
    """
    return _backpublishing.get(proxy)


def compositorOf(proxy: Proxy) -> EventStateCompositor | None:
    """
    The PUBLISH compositor L{buildSIP} gave C{proxy}, if any.
    """
    for handler in proxy.localHandlers("PUBLISH"):
        if isinstance(handler, EventStateCompositor):
            return handler
    return None


def subscriptionsOf(proxy: Proxy) -> DialogSubscriptions | None:
    """
    The dialog subscriptions L{buildSIP} gave C{proxy}, if any.
    """
    for handler in proxy.localHandlers("NOTIFY"):
        if isinstance(handler, DialogSubscriptions):
            return handler
    return None


class SubscriptionsService(service.Service):
    """
    Starts the dialog subscriptions once SIP listens, and unsubscribes
    them (Expires 0) before it stops: a child after C{sip}.
    """

    def __init__(self, subscriptions: DialogSubscriptions) -> None:
        self.subscriptions = subscriptions

    def startService(self) -> None:
        super().startService()
        self.subscriptions.start()

    def stopService(self) -> None:
        super().stopService()
        self.subscriptions.stop()
