"""
Where a SIP message came from or goes to: transport, host and port.

The transports hand the proxy core the L{Peer} a message arrived from, and
the core hands them the L{Peer} to send to; neither side looks further.
"""

from __future__ import annotations

from typing import NamedTuple

RELIABLE_TRANSPORTS = frozenset(("TCP", "TLS"))
DEFAULT_PORTS = {"UDP": 5060, "TCP": 5060, "TLS": 5061}


class Peer(NamedTuple):
    """
    A transport address.

    @ivar transport: C{"UDP"}, C{"TCP"} or C{"TLS"}.
    @ivar host: an IP address literal (never a name to resolve), without
        brackets for IPv6.
    @ivar port: the port.
    """

    transport: str
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        """
        Is this a stream transport, which needs no retransmissions?
        """
        return self.transport in RELIABLE_TRANSPORTS

    @property
    def hostPort(self) -> str:
        """
        C{host:port} as written in a Via or URI (IPv6 in brackets).
        """
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"
