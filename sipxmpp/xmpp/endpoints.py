"""
Where a user's XMPP session connects: a configured C{HOST:PORT}, or the
DNS SRV targets of the user's domain (RFC 6120 §3.2).
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.names import dns
from twisted.names.error import DNSNameError, DomainError
from zope.interface import implementer

__all__ = ["SRVEndpoint", "XMPP_CLIENT_PORT", "makeEndpoint", "parseServer"]

XMPP_CLIENT_PORT = 5222


class _Resolver(Protocol):
    def lookupService(self, name: str) -> Deferred[Any]: ...



def parseServer(server: str) -> tuple[str, int]:
    """
    Split C{HOST:PORT} (IPv6 hosts in brackets).
    """
    host, _, port = server.rpartition(":")
    return host.strip("[]"), int(port)


@implementer(IStreamClientEndpoint)
class SRVEndpoint:
    """
    Connects to the targets of DNS SRV C{_xmpp-client._tcp.DOMAIN} in
    priority order (RFC 6120 3.2.1), falling back to C{DOMAIN:5222} when
    there is no SRV record.
    """

    def __init__(self, reactor: Any, domain: str, resolver: _Resolver | None = None) -> None:
        self._reactor = reactor
        self._domain = domain
        if resolver is None:
            from twisted.names import client as dnsclient

            resolver = cast(_Resolver, dnsclient.Resolver(resolv="/etc/resolv.conf", reactor=reactor))
        self._resolver = resolver

    async def _targets(self) -> list[tuple[str, int]]:
        try:
            answers, _, _ = await self._resolver.lookupService(
                f"_xmpp-client._tcp.{self._domain}"
            )
        except (DNSNameError, DomainError):
            return [(self._domain, XMPP_CLIENT_PORT)]
        records = [a.payload for a in answers if a.type == dns.SRV]
        if len(records) == 1 and str(records[0].target) in ("", "."):
            return []  # "the service is decidedly not available"
        # Lowest priority first; among equals, heavier weight first (a fair
        # weighted shuffle buys nothing for one connection per user).
        records.sort(key=lambda r: (r.priority, -r.weight))
        targets = [(str(r.target), r.port) for r in records]
        return targets or [(self._domain, XMPP_CLIENT_PORT)]

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        async def attempt() -> IProtocol:
            targets = await self._targets()
            if not targets:
                raise ConnectionRefusedError(
                    f"DNS SRV says {self._domain} offers no XMPP client service"
                )
            lastError: BaseException | None = None
            for host, port in targets:
                endpoint = HostnameEndpoint(self._reactor, host, port)
                try:
                    return await endpoint.connect(protocolFactory)
                except Exception as e:
                    lastError = e
            assert lastError is not None
            raise lastError

        return Deferred.fromCoroutine(attempt())


def makeEndpoint(reactor: Any, server: str, domain: str,
                 resolver: _Resolver | None = None) -> IStreamClientEndpoint:  # fmt: skip
    """
    Return where to connect for users of C{domain}: C{server} (C{HOST:PORT},
    from the configuration), or if empty the DNS SRV targets of the domain.
    """
    if server:
        host, port = parseServer(server)
        return HostnameEndpoint(reactor, host, port)
    return SRVEndpoint(reactor, domain, resolver)
