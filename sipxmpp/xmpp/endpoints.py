"""
Where a user's XMPP session connects: a configured server, C{HOST:PORT}
(STARTTLS) or C{tls:HOST:PORT} (Direct TLS, XEP-0368), or the DNS SRV
targets of the user's domain: C{_xmpp-client._tcp} (RFC 6120 §3.2) and
C{_xmpps-client._tcp} (XEP-0368) merged by priority and weight.

A Direct TLS connection is TLS from its first byte with the session's own
TLS options: the certificate verified for the JID's domain (also the SNI),
ALPN C{xmpp-client}; the stream then needs no STARTTLS
(L{sipxmpp.xmpp.session.XMPPSession} sees an L{ISSLTransport}).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, cast

from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.names import dns
from twisted.names.error import DNSNameError, DomainError
from twisted.words.xish.xmlstream import STREAM_END_EVENT, STREAM_START_EVENT
from zope.interface import implementer

from sipxmpp.xmpp.bosh import BOSHEndpoint, checkBOSHURL, isBOSHURL

__all__ = [
    "DIRECT_TLS_PREFIX",
    "SERVER_FORMS",
    "SRV",
    "SRVEndpoint",
    "Target",
    "XMPP_CLIENT_PORT",
    "canonicalServer",
    "makeEndpoint",
    "mergeSRV",
    "parseServer",
]

XMPP_CLIENT_PORT = 5222
#: Before C{HOST:PORT}: connect with Direct TLS instead of STARTTLS.
DIRECT_TLS_PREFIX = "tls:"
#: A per-account server: DNS SRV of the JID's domain, whatever C{[xmpp] server} says.
SRV = "srv"
SERVER_FORMS = "HOST:PORT (STARTTLS) or tls:HOST:PORT (Direct TLS, XEP-0368)"

_SERVER = re.compile(r"(?:(tls):)?(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]/@]+):(\d{1,5})",
                     re.ASCII | re.IGNORECASE)  # fmt: skip


class _Resolver(Protocol):
    def lookupService(self, name: str) -> Deferred[Any]: ...


class Target(NamedTuple):
    """
    One place to connect to.

    @ivar directTLS: TLS from the first byte (XEP-0368), else STARTTLS.
    """

    host: str
    port: int
    directTLS: bool = False

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{DIRECT_TLS_PREFIX if self.directTLS else ''}{host}:{self.port}"


def parseServer(server: str) -> Target:
    """
    Parse C{HOST:PORT} or C{tls:HOST:PORT} (IPv6 hosts in brackets).

    @raise ValueError: naming the forms expected.
    """
    m = _SERVER.fullmatch(server.strip())
    if m is None or not 0 < int(m.group(3)) < 65536:
        raise ValueError(f"expected {SERVER_FORMS}, like 127.0.0.1:5222 or "
                         "tls:xmpp.example.com:5223")
    return Target(m.group(2).strip("[]"), int(m.group(3)), m.group(1) is not None)


def canonicalServer(server: str) -> str:
    """
    Return a per-account server in one spelling: L{SRV}, C{HOST:PORT},
    C{tls:HOST:PORT} or a BOSH URL (L{checkBOSHURL}).

    @raise ValueError: for anything else.
    """
    if server.strip().lower() == SRV:
        return SRV
    if isBOSHURL(server.strip()):
        return checkBOSHURL(server)
    try:
        return str(parseServer(server))
    except ValueError:
        raise ValueError(f"expected {SERVER_FORMS}, a BOSH URL like "
                         f"https://HOST:PORT/http-bind, or {SRV} for DNS SRV of the JID's "
                         f"domain; not {server!r}") from None  # fmt: skip


def mergeSRV(domain: str, startTLS: Sequence[Any] | None,
             directTLS: Sequence[Any] | None) -> list[Target]:  # fmt: skip
    """
    Order the answers of C{_xmpp-client._tcp.DOMAIN} (C{startTLS}) and
    C{_xmpps-client._tcp.DOMAIN} (C{directTLS}), L{dns.Record_SRV}s or
    L{None} where the name does not exist: lowest priority first; on equal
    priority Direct TLS first (it saves round trips and cannot be
    stripped), then heavier weight first (a fair weighted shuffle buys
    nothing for one connection per user).

    Without any record: C{DOMAIN:5222} with STARTTLS (RFC 6120 3.2.2),
    unless one service says it is "decidedly not available" (a lone
    record whose target is "."), which forbids that fallback (XEP-0368 5).
    """
    targets: list[tuple[tuple[int, int, int], Target]] = []
    declined = False
    for records, direct in ((startTLS, False), (directTLS, True)):
        if not records:
            continue
        if len(records) == 1 and str(records[0].target) in ("", "."):
            declined = True
            continue
        for r in records:
            targets.append(((r.priority, 0 if direct else 1, -r.weight),
                            Target(str(r.target), r.port, direct)))  # fmt: skip
    if targets:
        targets.sort(key=lambda t: t[0])
        return [t for _, t in targets]
    return [] if declined else [Target(domain, XMPP_CLIENT_PORT)]


def _endpoint(reactor: Any, target: Target,
              tlsOptions: IOpenSSLClientConnectionCreator | None) -> IStreamClientEndpoint:  # fmt: skip
    endpoint: IStreamClientEndpoint
    # An address needs no resolution: HostnameEndpoint would still hand it
    # to getaddrinfo in a thread and build its state machine, a good part
    # of a login's CPU (bench/sessions.py --inprocess).
    if isIPAddress(target.host):
        endpoint = TCP4ClientEndpoint(reactor, target.host, target.port)
    elif isIPv6Address(target.host):
        endpoint = TCP6ClientEndpoint(reactor, target.host, target.port)
    else:
        endpoint = HostnameEndpoint(reactor, target.host, target.port)
    if not target.directTLS:
        return endpoint
    if tlsOptions is None:
        # Never Direct TLS without verifying the certificate.
        raise ValueError(f"{target}: Direct TLS needs the session's TLS options")
    tls: IStreamClientEndpoint = wrapClientTLS(tlsOptions, endpoint)
    return tls


@implementer(IStreamClientEndpoint)
class SRVEndpoint:
    """
    Connects to the targets of DNS SRV C{_xmpp-client._tcp.DOMAIN} and,
    given TLS options, C{_xmpps-client._tcp.DOMAIN}, in L{mergeSRV}'s
    order, each tried until one connects; after a connection that ended
    before the server opened its stream, the next attempt starts at the
    target after that one.
    """

    def __init__(self, reactor: Any, domain: str, resolver: _Resolver | None = None,
                 tlsOptions: IOpenSSLClientConnectionCreator | None = None) -> None:  # fmt: skip
        self._reactor = reactor
        self._domain = domain
        self._tlsOptions = tlsOptions
        # Where the next attempt starts in the targets' order (see _watch).
        self._start = 0
        if resolver is None:
            from twisted.names import client as dnsclient

            resolver = cast(_Resolver, dnsclient.Resolver(resolv="/etc/resolv.conf", reactor=reactor))
        self._resolver = resolver

    async def _lookup(self, service: str) -> list[Any] | None:
        try:
            answers, _, _ = await self._resolver.lookupService(f"_{service}._tcp.{self._domain}")
        except DNSNameError:
            return None
        except DomainError as e:
            if type(e) is not DomainError:
                raise  # a server failure (DNSServerError, ...), not "no record"
            return None
        return [a.payload for a in answers if a.type == dns.SRV]

    async def _targets(self) -> list[Target]:
        services = ["xmpp-client"] + (["xmpps-client"] if self._tlsOptions is not None else [])
        lookups = [Deferred.fromCoroutine(self._lookup(s)) for s in services]
        answers: list[list[Any] | None] = []
        failure: BaseException | None = None
        for lookup in lookups:
            try:
                answers.append(await lookup)
            except Exception as e:
                # A lookup that timed out says nothing: use the other's
                # records, but no fallback guessed from half the answers.
                failure = failure or e
                answers.append([])
        answers += [None] * (2 - len(answers))
        if failure is not None and not any(answers):
            raise failure
        return mergeSRV(self._domain, answers[0], answers[1])

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        async def attempt() -> IProtocol:
            targets = await self._targets()
            if not targets:
                raise ConnectionRefusedError(
                    f"DNS SRV says {self._domain} offers no XMPP client service"
                )
            start = self._start % len(targets)
            lastError: BaseException | None = None
            for index in [*range(start, len(targets)), *range(start)]:
                try:
                    protocol = await _endpoint(self._reactor, targets[index],
                                               self._tlsOptions).connect(protocolFactory)
                except Exception as e:
                    lastError = e
                    continue
                self._watch(protocol, index)
                return protocol
            assert lastError is not None
            raise lastError

        return Deferred.fromCoroutine(attempt())

    def _watch(self, protocol: IProtocol, index: int) -> None:
        # A target that takes the connection but never opens a stream (a
        # failed Direct TLS handshake, something else on that port) would
        # take every attempt: the next one starts after it. A stream
        # opened puts the order back to the records' own.
        observe = getattr(protocol, "addOnetimeObserver", None)
        if observe is None:
            return
        opened: list[bool] = []

        def started(_: object) -> None:
            opened.append(True)
            self._start = 0

        def ended(_: object) -> None:
            if not opened:
                self._start = index + 1

        observe(STREAM_START_EVENT, started)
        observe(STREAM_END_EVENT, ended)


def makeEndpoint(reactor: Any, server: str, domain: str, resolver: _Resolver | None = None,
                 tlsOptions: IOpenSSLClientConnectionCreator | None = None,
                 trustRoot: IOpenSSLTrustRoot | None = None) -> IStreamClientEndpoint:  # fmt: skip
    """
    Return where to connect for users of C{domain}: C{server} (C{HOST:PORT},
    C{tls:HOST:PORT} or a BOSH URL, from the configuration or the account), or if
    empty or L{SRV} the DNS SRV targets of the domain.

    @param tlsOptions: the session's TLS options (verifying the domain's
        certificate), for Direct TLS; without them only STARTTLS is used.
    @param trustRoot: the session's trust root, for a BOSH URL (XEP-0206):
        HTTPS verifies the URL's host name against it.
    @raise ValueError: if C{server} is malformed, or Direct TLS without
        C{tlsOptions}, or BOSH without C{trustRoot}.
    """
    if isBOSHURL(server):
        if trustRoot is None:
            raise ValueError(f"{server}: BOSH needs the session's trust root")
        return BOSHEndpoint(reactor, checkBOSHURL(server), domain, trustRoot)
    if not server or server.strip().lower() == SRV:
        return SRVEndpoint(reactor, domain, resolver, tlsOptions)
    return _endpoint(reactor, parseServer(server), tlsOptions)
