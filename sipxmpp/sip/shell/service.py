"""
The SIP half of the gateway, composed: transports, proxy core, observer.

L{buildSIP} is called by the composition root (L{sipxmpp.tap}) with
validated settings; it resolves the configured upstream and the server of
C{[ingest] subscribe} (the only names the gateway ever resolves) and wires
the pieces together. In SUBSCRIBE mode the proxy gets a
L{DialogSubscriptions} as the handler of its NOTIFYs (L{subscriptionsOf}
finds it), which L{SubscriptionsService} starts and stops.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.application import service

from sipxmpp.sip.core.local import OptionsResponder
from sipxmpp.sip.core.metrics import IMetrics
from sipxmpp.sip.core.observer import TelephonyObserver
from sipxmpp.sip.core.peer import DEFAULT_PORTS, Peer
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


class UpstreamError(Exception):
    """
    The configured upstream cannot be used; the message says why.
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
    machine: TelephonyStateMachine,
    aorOf: Callable[[URI], str | None],
    ingest: IngestSettings | None = None,
    isProvisioned: Callable[[str], bool] | None = None,
) -> tuple[SIPTransports, Proxy]:
    """
    Build the SIP service and the proxy core, and connect the proxy's
    observations to the telephony state machine; given C{isProvisioned},
    PUBLISH from C{ingest}'s publishers feeds that machine too, and so do
    the NOTIFYs of C{ingest}'s subscriptions (C{[ingest] subscribe}; the
    AoRs to subscribe for are told to L{subscriptionsOf} the proxy).

    @param isProvisioned: whether an AoR may be published for; called on
        the SIP path, so it must answer from memory.
    """
    address = settings.advertisedAddress
    local: dict[str, Peer] = {}
    for spec in settings.listen:
        local.setdefault(spec.transport, Peer(spec.transport, address, spec.port))
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
    limits = Limits(
        maxMessageSize=settings.maxMessageSize,
        maxHeaderCount=settings.maxHeaders,
        maxHeaderLineLength=settings.maxHeaderLength,
        maxBodySize=settings.maxBodySize,
    )
    transports = SIPTransports(
        reactor, settings.listen, metrics, limits,
        idleTimeout=settings.streamIdleTimeout, maxConnections=settings.maxConnections,
        udpReceiveBuffer=settings.udpReceiveBuffer,
    )
    proxy = Proxy(
        # Under load the proxy has tens of thousands of transaction timers
        # pending and cancels nearly all: far cheaper on a TimerQueue than
        # as the reactor's DelayedCalls.
        TimerQueue(reactor),
        ProxySettings(local, upstream, settings.trustedNetworks, settings.registerMode),
        transports.send,
        aorOf,
        metrics,
    )
    transports.handler = proxy.messageReceived
    transports.onDeliveryFailed = proxy.deliveryFailed
    proxy.addObserver(TelephonyObserver(machine, aorOf))
    if ingest is not None and isProvisioned is not None:
        proxy.addLocalHandler(EventStateCompositor(
            reactor, machine, aorOf, isProvisioned, ingest.publishers,
            minExpires=ingest.minExpires, maxExpires=ingest.maxExpires,
            defaultExpires=ingest.maxExpires, metrics=metrics,
        ))
    if ingest is not None and subscribeAt is not None:
        ours = local[subscribeAt.transport]
        transport = "" if ours.transport == "UDP" else f";transport={ours.transport.lower()}"
        proxy.addLocalHandler(DialogSubscriptions(
            reactor, machine, proxy.sendRequest, subscribeAt, ingest.subscribe,
            contact=f"sip:sipxmpp@{ours.hostPort}{transport}",
            fromURI=f"sip:sipxmpp@{settings.domain}",
            expires=ingest.subscribeExpires, metrics=metrics,
        ))
    # Keepalive probes (Kamailio dispatcher) ask the gateway itself.
    proxy.addLocalHandler(OptionsResponder(local.values(), proxy.localMethods()))
    metrics.gauge("sipxmpp_sip_transactions", lambda: proxy.activeTransactions,
                  "SIP transactions in progress.")
    metrics.gauge("sipxmpp_sip_bindings", lambda: len(proxy.registrations),
                  "Contacts registered through the gateway.")
    transports.setName("sip")
    return transports, proxy


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
